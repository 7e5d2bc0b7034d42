"""ser on a GPU: train from cold, export, and score on CUDA against the CPU, in one run.

    python benchmarks/gpu.py --data RAVDESS_16K --backbone WHISPER_TINY --work DIR --results J

Made for a lent GPU machine with minutes to spare, so every stage is timed, its figures are
written to the JSON file ``J`` as they come, and a stage that fails is recorded and skipped:

1. environment: the card, driver, torch, ONNX Runtime and its providers;
2. training from cold on CUDA (``ser-train neural --device cuda``, empty cache): wall time
   from process start, test accuracy, the precision ``auto`` chose and its measured deviation;
3. autocast: the validation and test windows encoded in float32 on the CPU (the reference)
   and in float32, bf16 and fp16 on the GPU: state deviation, and the trained head's
   probabilities on each (max |dp|, label agreement, accuracy);
4. export of the trained checkpoint to float32, fp16 (``--fp16``) and int8 (``ser-export``;
   an export that its accuracy gate refuses is recorded);
5. scoring: node placement of each graph on CUDA, parity CUDA against CPU on every clip,
   model-alone throughput by batch size, I/O binding against plain runs;
6. end to end: ``ser-batch score --device cuda`` on every clip (a subprocess without torch,
   as users run it) with the CUDA model (fp16 if its gate passed, else float32) against the
   model alone, with the start-up on its own;
7. ``pytest tests/test_gpu.py`` (the tests that skip without CUDA).

``--device cpu`` rehearses all of it on the CPU (with a small corpus), so that no GPU minute
is lost to a typo. The short table printed last is what the README's GPU section quotes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import describe_machine

RESULTS: dict = {"errors": {}, "stage_s": {}, "skipped": []}
PATHS = {"work": Path("."), "results": Path("gpu.json")}
STARTED = time.perf_counter()
BUDGET = {"s": 3600.0}
COPIES = 4
LAST_OUTPUT: dict[str, str] = {}


class Skipped(Exception):
    """Too little of the time budget is left for a stage."""


def remaining() -> float:
    return BUDGET["s"] - (time.perf_counter() - STARTED)


@contextlib.contextmanager
def stage(name: str, needs_s: float = 0) -> Iterator[None]:
    """Time a stage, record a failure instead of stopping, and save the results after it.

    A stage that needs more than the time left (``--budget-s``) is skipped and recorded.
    """
    started = time.perf_counter()
    print(f"\n== {name} ({started - STARTED:.0f} s in, {remaining():.0f} s left)", flush=True)
    try:
        if remaining() < needs_s:
            raise Skipped(f"{remaining():.0f} s left, needs {needs_s:.0f} s")
        yield
    except Skipped as skipped:
        RESULTS["skipped"].append(f"{name}: {skipped}")
    except Exception as error:  # a failed stage is recorded; the next ones still run
        RESULTS["errors"][name] = f"{type(error).__name__}: {error}"[:2000]
        traceback.print_exc()
    RESULTS["stage_s"][name] = round(time.perf_counter() - started, 1)
    save()


def save() -> None:
    PATHS["results"].write_text(json.dumps(RESULTS, indent=1, default=str))


def command(module: str, *args: object) -> list[str]:
    """A console script (``main`` of ``module``) run by this interpreter, as pip would."""
    code = f"import sys; from {module} import main; sys.exit(main())"
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []  # not the ./ser of a checkout
    return [sys.executable, *safe_path, "-c", code, *map(str, args)]


def finish(process: subprocess.Popen, started: float) -> tuple[float, str]:
    """Wait for ``process`` (killed when the budget runs out); wall seconds and its output."""
    try:
        stdout, stderr = process.communicate(timeout=max(remaining() - 5, 1))
    except subprocess.TimeoutExpired:
        process.kill()
        raise Skipped(f"{process.args[3:6]} killed: out of time") from None
    wall = time.perf_counter() - started
    LAST_OUTPUT["text"] = stdout + stderr
    output = stdout[-3000:] + stderr[-3000:]
    if process.returncode not in (0, 3):
        raise RuntimeError(f"{process.args[3:6]} exited {process.returncode}: {output[-1500:]}")
    return wall, output


def spawn(module: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        command(module, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def cli(module: str, *args: object) -> tuple[float, str]:
    """Run a console script in a fresh interpreter; wall seconds and its output."""
    started = time.perf_counter()
    return finish(spawn(module, *args), started)


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--backbone", type=click.Path(exists=True, path_type=Path), help="Needed unless --skip train."
)
@click.option("--work", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--results", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True)
@click.option("--ensemble", default=3, show_default=True)
@click.option("--epochs", default=20, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--tests", type=click.Path(path_type=Path), default=None, help="tests/ folder.")
@click.option("--budget-s", default=3600.0, show_default=True, help="Stop starting stages then.")
@click.option(
    "--skip",
    multiple=True,
    help="Stages to skip (train, autocast, export, scoring); "
    "their outputs already in --work are used.",
)
def main(
    data: Path,
    backbone: Path | None,
    out_dir: Path,
    results: Path,
    device: str,
    ensemble: int,
    epochs: int,
    repeats: int,
    tests: Path | None,
    budget_s: float,
    skip: tuple[str, ...],
) -> None:
    PATHS.update(work=out_dir, results=results)
    BUDGET["s"] = budget_s
    out_dir.mkdir(parents=True, exist_ok=True)
    with stage("environment"):
        RESULTS["environment"] = environment(device)
    run_dir = out_dir / "run"
    if "train" not in skip:
        if backbone is None:
            raise click.UsageError("--backbone is needed to train (or --skip train)")
        with stage("train"):
            RESULTS["train"] = train(
                data, backbone, run_dir, out_dir / "cache", device, ensemble, epochs
            )
    models = {p.stem.removeprefix("model-"): p for p in sorted(out_dir.glob("model-*.onnx"))}
    exports = {}
    if "export" not in skip and (run_dir / "metrics.json").is_file():
        exports = start_exports(data, run_dir, out_dir)  # on the CPU, beside the autocast check
    if "autocast" not in skip:
        with stage("autocast", needs_s=150):
            autocast(data, run_dir, device, RESULTS.setdefault("autocast", {}))
    if "export" not in skip:
        with stage("export", needs_s=100):
            RESULTS["export"] = finish_exports(exports, out_dir, models)
    if not models:  # no export here: measure what ships (float32 since 0.2.0)
        from ser.models import shipped_model_path

        models["fp32"] = shipped_model_path("whisper-pooled")
        RESULTS["note"] = "no export in this run: scoring measured with the shipped float32 model"
    corpus: dict = {}
    with stage("decode"):
        corpus.update(decode(data, next(iter(models.values()))))
        RESULTS["corpus"] = {"files": len(corpus["rows"]), "audio_s": corpus["audio_s"]}
    if "scoring" not in skip:
        with stage("scoring", needs_s=60):
            scoring(models, corpus, device, repeats, RESULTS.setdefault("scoring", {}))
    with stage("end_to_end", needs_s=40):
        end_to_end(
            data, models, corpus, device, repeats, out_dir, RESULTS.setdefault("end_to_end", {})
        )
    if tests is not None:
        with stage("pytest", needs_s=30):
            try:
                wall, output = cli("pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
                                   tests / "test_gpu.py")  # fmt: skip
            finally:
                (out_dir / "pytest.txt").write_text(LAST_OUTPUT.get("text", ""))
            RESULTS["pytest"] = {"wall_s": round(wall, 1), "tail": output[-600:]}
    summary()


def environment(device: str) -> dict:
    import onnxruntime as ort
    import torch

    info = {
        "machine": describe_machine(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_sees_gpu": torch.cuda.is_available(),
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "providers": ort.get_available_providers(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        smi = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"]
        info["nvidia_smi"] = subprocess.run(smi, capture_output=True, text=True).stdout.strip()
    print(json.dumps(info, indent=1), flush=True)
    return info


def train(data, backbone, run_dir, cache, device, ensemble, epochs) -> dict:
    """``ser-train neural`` from cold (empty cache), timed from process start."""
    wall, output = cli(
        "ser.training.cli",
        "neural",
        "--data",
        data,
        "--backbone",
        backbone,
        "--out",
        run_dir,
        "--cache-dir",
        cache,
        "--device",
        device,
        "--ensemble",
        ensemble,
        "--epochs",
        epochs,
    )
    print(output[-800:], flush=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    keep = ("accuracy", "uar", "n")
    return {
        "wall_s": round(wall, 1),
        "ensemble": ensemble,
        "epochs": epochs,
        "test": {k: metrics["test"][k] for k in keep} if "test" in metrics else None,
        "validation": {k: metrics["validation"][k] for k in keep},
        "timing": metrics["timing"],
        "members": metrics.get("members"),
        "best_epoch": metrics["best_epoch"],
    }


def autocast(data: Path, run_dir: Path, device: str, result: dict) -> None:
    """States and head outputs of the validation and test windows in each precision."""
    import torch

    from ser.audio import center_window, load_audio
    from ser.corpus import label_indices, read_ravdess, select
    from ser.training.backbones import backbone_from_config
    from ser.training.checkpoint import load_checkpoint
    from ser.training.devices import encoder_arithmetic, state_deviation, synchronize
    from ser.training.heads import valid_frames

    checkpoint = load_checkpoint(run_dir)
    config, head = checkpoint.config, checkpoint.head.eval()
    clips = select(read_ravdess(data), "validation") + select(read_ravdess(data), "test")
    targets = label_indices(clips, config["labels"])
    is_test = np.array([c.split == "test" for c in clips])
    audio = torch.from_numpy(
        np.stack([center_window(load_audio(c.path), config["window"]) for c in clips])
    )
    cpu_backbone = backbone_from_config(config)
    gpu = torch.device(device)
    gpu_backbone = backbone_from_config(config).to(gpu)
    valid = valid_frames(
        audio, cpu_backbone.samples_per_frame, cpu_backbone.num_frames(audio.shape[1])
    )

    def encode(backbone, where, precision: str) -> tuple[torch.Tensor, float]:
        parts = []
        with torch.inference_mode(), encoder_arithmetic(where, precision):
            backbone(audio[:64].to(where))  # warm-up (and cuDNN's choice of algorithms)
            synchronize(where)
            started = time.perf_counter()
            for start in range(0, len(audio), 64):
                parts.append(backbone(audio[start : start + 64].to(where)).float().cpu())
            synchronize(where)
        return torch.cat(parts), (time.perf_counter() - started) / len(audio)

    def probs(states: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(head(states.to(torch.float16).float(), valid), dim=-1).numpy()

    reference, cpu_s = encode(cpu_backbone, torch.device("cpu"), "fp32")
    reference_p = probs(reference)
    result.update(windows=len(clips), cpu_fp32_s_per_window=round(cpu_s, 6))
    for precision in ("fp32", "bf16", "fp16"):
        states, per_window = encode(gpu_backbone, gpu, precision)
        p = probs(states)
        result[f"{device}_{precision}"] = {
            "s_per_window": round(per_window, 6),
            "state_deviation": round(state_deviation(reference, states), 6),
            "max_abs_dp": float(np.abs(p - reference_p).max()),
            "label_agreement": float((p.argmax(1) == reference_p.argmax(1)).mean()),
            "test_accuracy": float((p.argmax(1) == targets)[is_test].mean()),
            "validation_accuracy": float((p.argmax(1) == targets)[~is_test].mean()),
        }
        del states
    result["cpu_fp32_reference_accuracy"] = {
        "test": float((reference_p.argmax(1) == targets)[is_test].mean()),
        "validation": float((reference_p.argmax(1) == targets)[~is_test].mean()),
    }
    print(json.dumps(result, indent=1), flush=True)


def start_exports(data: Path, run_dir: Path, out_dir: Path) -> dict:
    """``ser-export neural`` of the checkpoint to float32, fp16 and int8, the three at once."""
    variants = {"fp32": [], "fp16": ["--fp16"], "int8": ["--quantize", "int8"]}
    started = time.perf_counter()
    args = ("neural", "--checkpoint", run_dir, "--data", data)
    return {
        name: (
            spawn("ser.export.cli", *args, "-o", out_dir / f"model-{name}.onnx", *extra),
            started,
        )
        for name, extra in variants.items()
    }


def finish_exports(running: dict, out_dir: Path, models: dict[str, Path]) -> dict:
    """Wait for the exports; each one's wall time, size and the accuracy its gate measured."""
    import onnx

    if not running:
        raise RuntimeError("no checkpoint to export")
    result = {}
    for name, (process, started) in running.items():
        path = out_dir / f"model-{name}.onnx"
        try:
            wall, output = finish(process, started)
        except RuntimeError as error:  # e.g. the fp16 accuracy gate: record it, keep the rest
            result[name] = {"refused": str(error).splitlines()[-1][-300:]}
            print(name, result[name], flush=True)
            continue
        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        result[name] = {
            "wall_s": round(wall, 1),
            "mb": round(path.stat().st_size / 1e6, 1),
            "said": output.strip()[-300:],
            "quantization": json.loads(props["quantization"]) if "quantization" in props else None,
        }
        models[name] = path
        print(name, result[name], flush=True)
    return result


def decode(data: Path, model: Path) -> dict:
    """Every clip's model input (one centred window each, as ser-batch makes it), in parallel."""
    from ser.audio import load_audio
    from ser.batch.frontends import frontend_for
    from ser.batch.session import ScoringModel
    from ser.corpus import label_indices, read_ravdess

    clips = read_ravdess(data)
    metadata = ScoringModel(str(model)).metadata
    frontend = frontend_for(metadata)

    def one(clip) -> tuple[np.ndarray, float]:
        signal = load_audio(clip.path, metadata.sample_rate)
        return frontend.inputs(signal).rows, signal.size / metadata.sample_rate

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        decoded = list(pool.map(one, clips))
    rows = np.concatenate([r for r, _ in decoded])
    if len(rows) != len(clips):
        raise RuntimeError("expected one window per clip")
    return {
        "rows": rows,
        "audio_s": round(sum(d for _, d in decoded), 1),
        "targets": label_indices(clips, metadata.labels),
        "is_test": np.array([c.split == "test" for c in clips]),
    }


def cuda_model(models: dict[str, Path]) -> Path:
    """The graph for CUDA: fp16 where its accuracy gate let it through, else float32."""
    return models.get("fp16") or models.get("fp32") or models["int8"]


def _session(path: Path, provider: str, *, profile: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(PATHS["work"] / f"profile-{path.stem}")
    providers = list(dict.fromkeys([provider, "CPUExecutionProvider"]))
    return ort.InferenceSession(str(path), options, providers=providers)


def _predict(session, rows: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate(
        [
            session.run(["probs"], {"audio": rows[i : i + batch]})[0]
            for i in range(0, len(rows), batch)
        ]
    )


def _rate(run: Callable[[], object], audio_s: float, files: int, repeats: int) -> dict:
    run()  # warm-up: cuDNN picks its algorithms for each new shape here
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    wall = statistics.median(times)
    return {
        "audio_s_per_s": round(audio_s / wall, 1),
        "files_per_s": round(files / wall, 1),
        "wall_s": round(wall, 4),
    }


def _compare(a: np.ndarray, b: np.ndarray) -> dict:
    return {
        "max_abs_dp": float(np.abs(a - b).max()),
        "mean_abs_dp": float(np.abs(a - b).mean()),
        "label_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
        "finite": bool(np.isfinite(a).all() and np.isfinite(b).all()),
    }


def scoring(models: dict[str, Path], corpus: dict, device: str, repeats: int, result: dict) -> None:
    """Placement, parity CUDA vs CPU, model-alone throughput by batch size, I/O binding."""
    from ser.batch.session import ScoringModel, read_placement
    from ser.errors import DeviceError

    gpu = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    rows, audio_s, files = corpus["rows"], corpus["audio_s"], len(corpus["rows"])
    targets, is_test = corpus["targets"], corpus["is_test"]
    result.update(placement={}, scoring_model={}, accuracy={}, parity={}, model_alone={})
    probs: dict[str, np.ndarray] = {}
    for name, path in models.items():
        try:  # what ser-batch does with this graph on the device: load, probe, check placement
            model = ScoringModel(str(path), device=device)
            result["scoring_model"][name] = {"provider": model.provider, "ok": True}
        except DeviceError as error:
            result["scoring_model"][name] = {"ok": False, "error": str(error)}
        session = _session(path, gpu, profile=True)
        session.run(["probs"], {"audio": rows[:1]})
        placement = read_placement(Path(session.end_profiling()))
        result["placement"][name] = {
            "nodes": placement.describe(),
            "data_nodes_on_cpu": dict(placement.data_on_cpu),
        }
        probs[f"{name}@gpu"] = _predict(session, rows, 64)
        if name != "fp16":  # float16 on ONNX Runtime's CPU provider is not a way anyone scores
            probs[f"{name}@cpu"] = _predict(_session(path, "CPUExecutionProvider"), rows, 16)
        extremes = np.stack(
            [
                np.zeros(rows.shape[1]),
                np.clip(np.random.default_rng(0).standard_normal(rows.shape[1]), -1, 1),
            ]
        ).astype(np.float32)
        result.setdefault("silence_and_full_scale_finite", {})[name] = bool(
            np.isfinite(session.run(["probs"], {"audio": extremes})[0]).all()
        )
    for key, p in probs.items():
        result["accuracy"][key] = {
            "test": round(float((p.argmax(1) == targets)[is_test].mean()), 4),
            "all_clips": round(float((p.argmax(1) == targets).mean()), 4),
        }
    pairs = [
        ("fp32@gpu", "fp32@cpu"),
        ("fp16@gpu", "fp32@cpu"),
        ("fp16@gpu", "int8@cpu"),
        ("int8@gpu", "int8@cpu"),
        ("int8@cpu", "fp32@cpu"),
    ]
    for a, b in pairs:
        if a in probs and b in probs:
            result["parity"][f"{a} vs {b}"] = _compare(probs[a], probs[b])
    print(json.dumps({k: result[k] for k in ("accuracy", "parity")}, indent=1), flush=True)

    sizes = {"fp16": (16, 64, 128, 256), "fp32": (16, 64, 128, 256), "int8": (64,)}
    for name in ("fp16", "fp32", "int8"):
        if name not in models:
            continue
        session = _session(models[name], gpu)
        for batch in sizes[name] if device == "cuda" else (16, 64):
            rate = _rate(lambda s=session, b=batch: _predict(s, rows, b), audio_s, files, repeats)
            result["model_alone"][f"{name}@{gpu} batch {batch}"] = rate
            print(name, batch, rate, flush=True)
            save()
    cpu_name = "int8" if "int8" in models else "fp32"
    cpu_session = _session(models[cpu_name], "CPUExecutionProvider")
    result["model_alone"][f"{cpu_name}@CPUExecutionProvider batch 16"] = _rate(
        lambda: _predict(cpu_session, rows, 16), audio_s, files, 1
    )
    if device == "cuda" and ("fp16" in models or "fp32" in models):
        result["io_binding"] = io_binding(cuda_model(models), rows, audio_s, files, repeats)


def io_binding(path: Path, rows: np.ndarray, audio_s: float, files: int, repeats: int) -> dict:
    """Plain ``run`` against I/O binding (input bound from host memory; or already on the GPU)."""
    import onnxruntime as ort

    session = _session(path, "CUDAExecutionProvider")
    result = {}
    for batch in (64, 256):
        batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]

        def bound(on_gpu: list | None = None, batches=batches) -> None:
            binding = session.io_binding()
            for n, part in enumerate(batches):
                if on_gpu is None:
                    binding.bind_cpu_input("audio", part)
                else:
                    binding.bind_ortvalue_input("audio", on_gpu[n])
                binding.bind_output("probs", "cuda")
                session.run_with_iobinding(binding)
                binding.copy_outputs_to_cpu()

        uploaded = [ort.OrtValue.ortvalue_from_numpy(part, "cuda", 0) for part in batches]
        result[f"batch {batch}"] = {
            "plain_run": _rate(lambda b=batch: _predict(session, rows, b), audio_s, files, repeats),
            "io_binding": _rate(bound, audio_s, files, repeats),
            "input_already_on_gpu": _rate(lambda u=uploaded: bound(u), audio_s, files, repeats),
        }
        print(batch, result[f"batch {batch}"], flush=True)
    return result


def end_to_end(data, models, corpus, device, repeats, out_dir, result: dict) -> None:
    """``ser-batch score`` in a fresh interpreter (no torch), against the model alone.

    Start-up (imports, session, CUDA) is timed on one file and also given apart; the corpus is
    then scored as it is and, to weigh start-up less, as ``COPIES`` copies of itself (copies,
    not links: discovery scores a file once however many names it has).
    """
    from ser.batch.report import read_report
    from ser.corpus import read_ravdess

    one = read_ravdess(data)[0].path
    model = cuda_model(models)
    name = next(key for key, path in models.items() if path == model)
    wall, said = cli("ser.batch.cli", "score", one, "-o", out_dir / "one.csv",
                     "--device", device, "--model", model)  # fmt: skip
    start_up = result["start_up_one_file_s"] = round(wall, 2)
    copies = out_dir / f"x{COPIES}"
    if not copies.is_dir():
        for n in range(COPIES):
            shutil.copytree(data, copies / f"copy{n}")
    report = out_dir / "e2e.csv"
    runs = [("defaults", data, [], repeats)]
    runs += [(f"workers {w}", data, ["--workers", str(w)], 1) for w in (2, 8, 16)]
    runs += [("batch 64", data, ["--batch-size", "64"], 1)]
    runs += [(f"x{COPIES} defaults", copies, [], 1)]
    runs += [(f"x{COPIES} workers 2", copies, ["--workers", "2"], 1)]
    for label, where, extra, times in runs:
        audio_s = corpus["audio_s"] * (COPIES if where == copies else 1)
        walls = []
        for _ in range(times):
            wall, said = cli("ser.batch.cli", "score", where, "-o", report, "--device", device,
                             "--model", model, *extra)  # fmt: skip
            walls.append(wall)
        wall = statistics.median(walls)
        result[label] = {
            "wall_s": round(wall, 2),
            "audio_s": audio_s,
            "audio_s_per_s": round(audio_s / wall, 1),
            "audio_s_per_s_after_start_up": round(audio_s / max(wall - start_up, 1e-3), 1),
            "summary": said.strip().splitlines()[-1][-300:] if said.strip() else "",
        }
        print(label, result[label], flush=True)
        save()
    (out_dir / "e2e.csv").unlink()
    wall, said = cli("ser.batch.cli", "score", data, "-o", report, "--device", device,
                     "--model", model)  # fmt: skip
    provenance = json.loads((out_dir / "e2e.csv.provenance.json").read_text())
    result["provenance_options"] = provenance["options"]
    result["provenance_provider"] = provenance["execution_provider"]
    cpu_report = out_dir / "e2e-cpu.csv"
    cpu_name = "int8" if "int8" in models else "fp32"
    wall, said = cli("ser.batch.cli", "score", data, "-o", cpu_report, "--device", "cpu",
                     "--model", models[cpu_name])  # fmt: skip
    result[f"cpu {cpu_name} defaults (this machine's CPU)"] = {
        "wall_s": round(wall, 2),
        "audio_s_per_s": round(corpus["audio_s"] / wall, 1),
    }
    gpu_rows = {r["path"]: r for r in read_report(report, "csv")}
    cpu_rows = {r["path"]: r for r in read_report(cpu_report, "csv")}
    columns = [c for c in next(iter(gpu_rows.values())) if c.startswith("p_")]
    gpu_p = np.array([[float(gpu_rows[p][c]) for c in columns] for p in sorted(gpu_rows)])
    cpu_p = np.array([[float(cpu_rows[p][c]) for c in columns] for p in sorted(gpu_rows)])
    result[f"reports {name} cuda vs {cpu_name} cpu"] = _compare(gpu_p, cpu_p)
    for label, args in (
        ("shipped name", ["--model", "whisper-pooled", "--device", device]),
        ("shipped name, auto", ["--model", "whisper-pooled", "--device", "auto"]),
    ):
        command = [sys.executable, "-P", "-c", "from ser.batch.cli import main; main()",
                   "score", str(one), "-o", "-", *args]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        result[label] = {"exit": done.returncode, "stderr": done.stderr.strip()[-400:]}
    alone = RESULTS.get("scoring", {}).get("model_alone", {})
    batch = result["provenance_options"]["batch_size"]
    key = f"{name}@CUDAExecutionProvider batch {batch}"
    result["model_alone_same_batch_audio_s_per_s"] = alone.get(key, {}).get("audio_s_per_s")
    print(json.dumps(result, indent=1), flush=True)


def summary() -> None:
    """The short table the README quotes; the rest is in gpu.json."""
    env, train_r = RESULTS.get("environment", {}), RESULTS.get("train") or {}
    lines = [f"card: {env.get('gpu', 'none (rehearsal on CPU)')}; {env.get('machine', '')}"]
    if train_r:
        t = train_r["timing"]
        lines.append(
            f"train from cold: {train_r['wall_s']} s (encode {t['encode_s']} s, epoch "
            f"{t['head_epoch_s']} s, precision {t['precision']}, deviation "
            f"{t['autocast_deviation']}); test accuracy {train_r['test']['accuracy']:.3f}"
        )
    for key, value in (RESULTS.get("scoring") or {}).get("parity", {}).items():
        lines.append(
            f"parity {key}: max|dp| {value['max_abs_dp']:.2e}, agree {value['label_agreement']:.4f}"
        )
    for key, value in (RESULTS.get("scoring") or {}).get("accuracy", {}).items():
        lines.append(f"accuracy {key}: test {value['test']}")
    for key, value in (RESULTS.get("scoring") or {}).get("model_alone", {}).items():
        lines.append(f"model alone {key}: {value['audio_s_per_s']} audio s/s")
    e2e = RESULTS.get("end_to_end") or {}
    alone = e2e.get("model_alone_same_batch_audio_s_per_s")
    for key, value in e2e.items():
        if isinstance(value, dict) and "audio_s_per_s_after_start_up" in value:
            share = f"; {value['audio_s_per_s'] / alone:.0%} of the model alone" if alone else ""
            lines.append(
                f"end to end {key}: {value['audio_s_per_s']} audio s/s "
                f"({value['audio_s_per_s_after_start_up']} after start-up{share})"
            )
    lines.append(f"stage seconds: {RESULTS['stage_s']}; errors: {list(RESULTS['errors'])}")
    print("\n" + "\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
