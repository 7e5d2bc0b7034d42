"""GPU support: device choice, error lines, autocast choice, CUDA model choice, node placement.

Everything above the ``GPU only`` line runs on a CPU-only machine (CUDA's absence or a failing
CUDA provider is simulated where needed). The tests below it need a real NVIDIA GPU and skip,
saying why, without one.
"""

import json
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from ser.batch.cli import main as batch_main
from ser.batch.session import (
    CUDA,
    DATA_BYTES,
    ScoringModel,
    execution_providers,
    read_placement,
    resolve_model,
)
from ser.corpus import load_corpus, select
from ser.errors import DeviceError, ModelError
from ser.models import shipped_model_path
from ser.training.cache import ArrayCache
from ser.training.cli import main as train_main
from ser.training.devices import (
    AUTOCAST_TOLERANCE,
    choose_precision,
    resolve_device,
    state_deviation,
)
from ser.training.encoding import EncodedClips, encode_clips
from ser.training.neural import NeuralConfig, train_neural
from ser.training.speaker_norm import centre_by_speaker

from synth import voiced

QUICK = NeuralConfig(window_s=1.0, views=2, epochs=2, augment=True, device="cpu")


def _no_torch_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- training: device and precision ----------------------------------------------------------


def test_cpu_and_auto_resolve_to_what_torch_sees():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_cuda_without_a_gpu_is_one_line_naming_what_to_install(monkeypatch):
    _no_torch_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError) as raised:
        resolve_device("cuda")
    message = str(raised.value)
    assert message.startswith("--device cuda:") and "\n" not in message
    assert "CUDA build of PyTorch" in message and "--device cpu" in message


def test_ser_train_cuda_without_a_gpu_fails_in_one_line(
    monkeypatch, synthetic_manifest, tiny_whisper, tmp_path
):
    _no_torch_cuda(monkeypatch)
    result = CliRunner().invoke(
        train_main,
        ["neural", "--data", str(synthetic_manifest), "--backbone", str(tiny_whisper),
         "--out", str(tmp_path / "m"), "--device", "cuda"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.startswith("Error: --device cuda:")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def _states(seed: int = 0) -> torch.Tensor:
    """Fake encoder states ``[4, 3, 10, 6]`` with channels of very different scales."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-2, 2, 6)
    return torch.randn(4, 3, 10, 6, generator=generator) * scales + 5 * scales


def test_state_deviation_is_in_units_of_each_channels_spread():
    reference = _states()
    spread = reference.std(dim=(0, 2), keepdim=True)
    noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1))
    assert state_deviation(reference, reference) == 0
    assert state_deviation(reference, reference + 0.01 * spread * noise) == pytest.approx(
        0.01, rel=0.2
    )
    overflowed = reference.clone()
    overflowed[0, 0, 0, 0] = float("inf")
    assert state_deviation(reference, overflowed) == float("inf")


def test_auto_precision_takes_the_closest_autocast_within_tolerance():
    reference = _states()
    spread = reference.std(dim=(0, 2), keepdim=True)
    noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(2))
    deviation = {"fp32": 0.0, "bf16": AUTOCAST_TOLERANCE / 2, "fp16": AUTOCAST_TOLERANCE / 10}
    calls = []

    def encode(precision: str) -> torch.Tensor:
        calls.append(precision)
        return reference + deviation[precision] * spread * noise

    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    choice = choose_precision("auto", cuda, encode)
    assert choice.precision == "fp16" and set(calls) == {"fp32", "bf16", "fp16"}
    assert choice.describe()["autocast_deviation"]["fp16"] == pytest.approx(
        AUTOCAST_TOLERANCE / 10, rel=0.2
    )

    deviation.update(bf16=3 * AUTOCAST_TOLERANCE, fp16=float("nan"))
    assert choose_precision("auto", cuda, encode).precision == "fp32"
    explicit = choose_precision("bf16", cuda, encode)
    assert explicit.precision == "bf16" and explicit.deviations["bf16"] > AUTOCAST_TOLERANCE


def test_auto_precision_on_the_cpu_is_float32_without_a_probe():
    def encode(precision: str) -> torch.Tensor:
        raise AssertionError("no probe on the CPU")

    assert choose_precision("auto", torch.device("cpu"), encode).precision == "fp32"
    with pytest.raises(DeviceError, match="unknown precision"):
        choose_precision("fp8", torch.device("cpu"), encode)


def test_decode_workers_do_not_change_the_states_and_autocast_is_cached_apart(
    synthetic_manifest, tiny_whisper, tmp_path
):
    from ser.training.augment import Augmentation
    from ser.training.backbones import load_backbone

    clips = select(load_corpus(synthetic_manifest), "train")[:12]
    backbone = load_backbone(str(tiny_whisper))
    labels = sorted({clip.label for clip in clips})
    common = dict(labels=labels, backbone=backbone, window=16_000, views=3, train=True,
                  augmentation=Augmentation(noise_p=0.5, stretch_p=0.5))  # fmt: skip
    cache = ArrayCache(tmp_path / "a", "states")
    serial = encode_clips(clips, cache=cache, workers=1, **common)
    threaded = encode_clips(clips, cache=ArrayCache(tmp_path / "b", "states"), workers=4, **common)
    assert torch.equal(serial.states, threaded.states)
    assert torch.equal(serial.valid, threaded.valid)

    bf16 = encode_clips(clips, cache=cache, precision="bf16", **common)  # CPU autocast
    assert cache.misses == 2 * len(clips)  # float32 entries are not reused for bf16
    assert 0 < state_deviation(serial.states, bf16.states) < 0.5
    encode_clips(clips, cache=cache, **common)
    assert cache.hits == len(clips)  # float32 keys are what they always were


def test_a_cpu_run_records_device_and_precision(synthetic_manifest, tiny_whisper, tmp_path):
    config = replace(QUICK, backbone=str(tiny_whisper), precision="auto")
    run = train_neural(load_corpus(synthetic_manifest), tmp_path / "m", tmp_path / "c", config)
    timing = run.metrics["timing"]
    assert (timing["device"], timing["precision"], timing["decode_workers"]) == ("cpu", "fp32", 1)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (saved["device"], saved["precision"]) == ("cpu", "fp32")


# --- scoring: providers, model choice, placement ----------------------------------------------


def _cuda_provider_problem() -> str | None:
    """Why ONNX Runtime cannot run on CUDA here (None when it can)."""
    if CUDA not in ort.get_available_providers():
        return "onnxruntime has no CUDA execution provider (install onnxruntime-gpu)"
    try:
        ScoringModel("forest", device="cuda")
    except DeviceError as error:
        if "could not start" in str(error):
            return f"the CUDA execution provider does not start here ({error})"
    return None


def _only_cpu_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])


def test_cuda_without_the_gpu_build_names_what_to_install(monkeypatch, tmp_path):
    _only_cpu_provider(monkeypatch)
    with pytest.raises(DeviceError) as raised:
        execution_providers("cuda")
    assert "onnxruntime-gpu[cuda,cudnn]" in str(raised.value)
    assert "pip uninstall -y onnxruntime" in str(raised.value)
    sf.write(tmp_path / "a.wav", voiced(150, 1.0), 16_000)
    result = CliRunner().invoke(batch_main, ["score", str(tmp_path), "-o", "-", "--device", "cuda"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "onnxruntime-gpu" in result.output
    assert execution_providers("auto") == ["CPUExecutionProvider"]


@pytest.mark.skipif(
    _cuda_provider_problem() is None, reason="CUDA starts here; the failure is simulated elsewhere"
)
def test_a_cuda_provider_that_does_not_start_is_an_error_and_auto_falls_back(monkeypatch, capsys):
    """What onnxruntime-gpu does on a machine without a usable GPU: it lists CUDA, then
    quietly builds a CPU-only session."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, "CPUExecutionProvider"])
    with pytest.raises(DeviceError, match="could not start the CUDA provider"):
        ScoringModel("forest", device="cuda")
    model = ScoringModel("forest", device="auto")
    assert model.provider == "CPUExecutionProvider" and model.placement is None
    assert "--device auto: scoring on the CPU" in capsys.readouterr().err


@pytest.mark.skipif(
    _cuda_provider_problem() is None,
    reason="CUDA starts here, so nodes really run there (see the GPU-only tests below)",
)
@pytest.mark.parametrize("int8", [False, True])
def test_nodes_that_would_run_on_the_cpu_refuse_cuda(monkeypatch, tmp_path, int8):
    """A model's placement as if CUDA had started: its nodes all run on the CPU here, which is
    what the profile says and what the check must refuse, naming the cure that fits: a float
    graph for an int8 one (read from its metadata), the CPU for any other."""
    import onnx

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, "CPUExecutionProvider"])
    monkeypatch.setattr(
        ort.InferenceSession, "get_providers", lambda self: [CUDA, "CPUExecutionProvider"]
    )
    model = onnx.load(str(shipped_model_path("whisper-pooled")))
    if int8:  # the metadata an int8 export writes (the graph itself is left float here)
        note = {"kind": "int8 MatMul weights, activations quantised per row"}
        kept = [prop for prop in model.metadata_props if prop.key != "quantization"]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key="quantization", value=json.dumps(note))
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(DeviceError) as raised:
        ScoringModel(str(tmp_path / "m.onnx"), device="cuda")
    message = str(raised.value)
    assert "would run on the CPU" in message and "MatMul" in message
    if int8:
        assert "quantised to int8" in message and "without --quantize" in message
    else:  # the shipped float32 graph is not int8, whatever its history
        assert "int8" not in message and "no CUDA kernels" in message


def test_read_placement_counts_providers_and_flags_data_on_the_cpu(tmp_path):
    def node(op: str, provider: str, output: int, weights: int = 0) -> dict:
        args = {"op_name": op, "provider": provider, "output_size": str(output),
                "parameter_size": str(weights)}  # fmt: skip
        return {"cat": "Node", "name": f"{op}_kernel_time", "args": args}

    events = [
        node("Shape", "CPUExecutionProvider", 16),
        node("Gather", "CPUExecutionProvider", 8),
        node("MatMul", CUDA, 300_000, 600_000),
        node("Conv", CUDA, 500_000, 90_000),
        node("MatMulInteger", "CPUExecutionProvider", DATA_BYTES),
        node("Gemm", "CPUExecutionProvider", 32, 40_000),
        {"cat": "Session", "name": "model_run", "args": {}},
        {"cat": "Node", "name": "MatMul_fence_before", "args": {"op_name": "MatMul"}},
    ]  # fmt: skip
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(events))
    placement = read_placement(profile)
    assert placement.describe() == {
        "CPUExecutionProvider": {"Gather": 1, "Gemm": 1, "MatMulInteger": 1, "Shape": 1},
        CUDA: {"Conv": 1, "MatMul": 1},
    }
    assert dict(placement.data_on_cpu) == {"MatMulInteger": 1, "Gemm": 1}


def test_cuda_picks_a_shipped_models_cuda_variant_when_installed(monkeypatch):
    import ser.models

    assert resolve_model("whisper-pooled") == shipped_model_path("whisper-pooled")
    assert resolve_model("forest", cuda=True) == shipped_model_path("forest")
    monkeypatch.setitem(ser.models.CUDA_VARIANTS, "whisper-pooled", "forest.onnx")
    assert resolve_model("whisper-pooled", cuda=True) == shipped_model_path("forest")
    monkeypatch.setitem(ser.models.CUDA_VARIANTS, "whisper-pooled", "not-installed.onnx")
    assert resolve_model("whisper-pooled", cuda=True) == shipped_model_path("whisper-pooled")
    with pytest.raises(ModelError, match="not a shipped model"):
        resolve_model("no-such-model", cuda=True)


# --- GPU only ---------------------------------------------------------------------------------


needs_torch_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="PyTorch sees no CUDA GPU on this machine"
)
needs_ort_cuda = pytest.mark.skipif(
    _cuda_provider_problem() is not None, reason=str(_cuda_provider_problem())
)


@pytest.fixture(scope="module")
def exported(synthetic_manifest, tiny_whisper, tmp_path_factory):
    """A tiny Whisper checkpoint exported as float32 and float16 graphs."""
    from ser.export.neural import export_neural

    clips = load_corpus(synthetic_manifest)
    folder = tmp_path_factory.mktemp("gpu-checkpoint")
    config = replace(QUICK, backbone=str(tiny_whisper), augment=False, views=1)
    train_neural(clips, folder, tmp_path_factory.mktemp("gpu-cache"), config)
    paths = {name: folder / f"{name}.onnx" for name in ("fp32", "fp16")}
    export_neural(folder, paths["fp32"])
    export_neural(folder, paths["fp16"], fp16=True, validation_clips=select(clips, "validation"))
    return paths


@needs_torch_cuda
def test_speaker_centring_runs_where_the_states_are_and_matches_the_cpu():
    """Training on CUDA keeps the encoded states there; speaker means once summed on the CPU."""
    rng = np.random.default_rng(0)
    states = torch.from_numpy(rng.standard_normal((4, 2, 3, 5, 2)).astype(np.float32))
    valid = torch.from_numpy(rng.random((4, 2, 5)) > 0.3)
    speakers = ("a", "b", "a", "b")
    labels = torch.zeros(4, dtype=torch.long)
    on_cpu = centre_by_speaker(EncodedClips(states.clone(), valid, labels, speakers), speakers)
    cuda = EncodedClips(states.cuda(), valid.cuda(), labels.cuda(), speakers)
    on_cuda = centre_by_speaker(cuda, speakers)
    assert on_cuda.states.device.type == "cuda"
    assert torch.allclose(on_cuda.states.cpu(), on_cpu.states, atol=1e-6)


@needs_torch_cuda
def test_training_on_cuda_chooses_a_precision_and_learns(
    synthetic_manifest, tiny_whisper, tmp_path
):
    config = replace(
        QUICK, backbone=str(tiny_whisper), device="cuda", epochs=12, batch_size=16,
        learning_rate=3e-3,
    )  # fmt: skip
    run = train_neural(load_corpus(synthetic_manifest), tmp_path / "m", tmp_path / "c", config)
    timing = run.metrics["timing"]
    assert timing["device"].startswith("cuda (")
    assert set(timing["autocast_deviation"]) == {"bf16", "fp16"}
    chosen = timing["precision"]
    assert chosen == "fp32" or timing["autocast_deviation"][chosen] <= AUTOCAST_TOLERANCE
    assert run.metrics["test"]["accuracy"] > 0.25  # chance is 0.125


@needs_ort_cuda
@pytest.mark.parametrize("name", ["fp32", "fp16"])
def test_float_graphs_run_every_data_node_on_cuda_and_agree_with_the_cpu(exported, name):
    model = ScoringModel(str(exported[name]), device="cuda")
    assert model.provider == CUDA
    placement = model.placement
    assert not placement.data_on_cpu, placement.describe()
    on_cuda = placement.ops[CUDA]
    assert on_cuda["MatMul"] > 0 and on_cuda["Conv"] > 0  # the encoder's heavy nodes
    rows = np.stack([voiced(f0, 1.0, seed=n) for n, f0 in enumerate((120, 180, 240, 300))])
    cpu = ScoringModel(str(exported["fp32"]), device="cpu").predict(rows)
    assert np.abs(model.predict(rows) - cpu).max() < (1e-4 if name == "fp32" else 2e-2)


@needs_ort_cuda
def test_the_shipped_float32_graph_runs_every_data_node_on_cuda():
    model = ScoringModel(str(shipped_model_path("whisper-pooled")), device="cuda")
    assert model.provider == CUDA and not model.placement.data_on_cpu
