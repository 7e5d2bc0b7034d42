"""RAVDESS alone against RAVDESS + nEMO: loss, sampling and normalisation, over seeds.

    python benchmarks/multi_corpus.py --ravdess ../shared/data/ravdess-speech-16k \\
        --nemo ../shared/data/nemo-16k/manifest.csv --out runs/multi-corpus.json [--device cuda]

Encodes both corpora once (the encoder-state cache; RAVDESS with ``--views``, nEMO with
``--nemo-views``), then trains heads from the cache only. Every configuration is one
``train_head`` call with ``ensemble`` = the number of seeds, exactly what ``ser-train neural
--ensemble N`` trains (seeds 0 to N-1 on the same cache); each member is scored alone and the
ensemble as a whole. Every head is scored on every corpus's validation and test split, also the
corpora it never trained on, and its temperature is fitted on the validation splits of the
corpora it trained on. Every configuration draws the same number of clips per epoch (by default
RAVDESS's own epoch, 1.5 x its largest class x 8), so all train for the same number of steps.
With ``--keep DIR`` each configuration's checkpoint stays (ready for ``ser-export neural``).
Results go to ``--out`` as JSON after each configuration (an interrupted run keeps what it
finished) and as a Markdown table at the end. Everything is chosen on validation; test figures
are reported, never used. With every class in every corpus (RAVDESS alone) the restricted loss
is plain cross-entropy, so that configuration is trained once and reported under both.

Groups (``--groups``): ``main`` = {RAVDESS, RAVDESS+nEMO} x {plain, restricted} loss;
``nemo`` = nEMO alone, both losses (the bar a multi-corpus model must beat on nEMO's test
speaker);
``sampling`` = the other two sampling modes on RAVDESS+nEMO; ``norm`` = per-recording
normalisation of the encoder states on RAVDESS+nEMO.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from ser.corpus import load_corpora
from ser.labels import LABELS
from ser.training.cache import default_cache_dir
from ser.training.calibration import fit_temperature, reliability
from ser.training.checkpoint import load_checkpoint
from ser.training.heads import HeadEnsemble
from ser.training.neural import EncodedCorpus, NeuralConfig, encode_corpus, train_head
from ser.training.sampling import epoch_draws

from common import NEMO, RAVDESS_16K, WHISPER_TINY, describe_machine

GROUPS = ("main", "nemo", "sampling", "norm")


@dataclass(frozen=True)
class Setting:
    """One configuration: which corpora train the head, and how."""

    group: str
    corpora: tuple[str, ...]
    loss: str = "plain"
    sampling: str = "class-corpus"
    recording_norm: str = "none"

    @property
    def name(self) -> str:
        return (
            f"{'+'.join(self.corpora)} loss={self.loss} sampling={self.sampling} "
            f"norm={self.recording_norm}"
        )


@click.command()
@click.option("--ravdess", type=click.Path(exists=True, path_type=Path), default=RAVDESS_16K)
@click.option("--nemo", type=click.Path(exists=True, path_type=Path), default=NEMO)
@click.option("--backbone", default=str(WHISPER_TINY), show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--seeds", default=3, show_default=True, help="Heads per configuration.")
@click.option("--first-seed", default=0, show_default=True)
@click.option("--epochs", default=20, show_default=True)
@click.option("--views", default=4, show_default=True, help="RAVDESS training views.")
@click.option("--nemo-views", default=2, show_default=True, help="nEMO training views.")
@click.option("--groups", default=",".join(GROUPS), show_default=True)
@click.option(
    "--samples-per-epoch",
    type=int,
    default=None,
    help="Clips drawn per epoch in every configuration [default: RAVDESS's own epoch].",
)
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
@click.option("--keep", type=click.Path(path_type=Path), default=None, help="Keep checkpoints.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results (JSON).")
@click.option(
    "--table-only",
    is_flag=True,
    help="Print the Markdown table of an existing --out JSON and stop (no training).",
)
def main(
    ravdess: Path, nemo: Path, backbone: str, device: str, seeds: int, first_seed: int,
    epochs: int, views: int,
    nemo_views: int, groups: str, samples_per_epoch: int | None, cache_dir: Path | None,
    keep: Path | None, out: Path, table_only: bool,
) -> None:  # fmt: skip
    if table_only:
        results = json.loads(out.read_text())
        print(_tables(results, [corpus["name"] for corpus in results["corpora"]]))
        return
    chosen = [group.strip() for group in groups.split(",") if group.strip()]
    unknown = sorted(set(chosen) - set(GROUPS))
    if unknown:
        raise click.BadParameter(f"unknown group {', '.join(unknown)}; expected {GROUPS}")
    base = NeuralConfig(backbone=backbone, views=(views, nemo_views), epochs=epochs, device=device)
    clips = load_corpora([ravdess, nemo])
    started = time.perf_counter()
    encoded = encode_corpus(clips, cache_dir or default_cache_dir(), base)
    names = [part.name for part in encoded.parts]
    r, n = names
    samples = samples_per_epoch or epoch_draws(encoded.parts[0].train.targets, len(LABELS))
    base = replace(base, samples_per_epoch=samples, ensemble=seeds, seed=first_seed)
    results = {
        "machine": describe_machine(),
        "device": str(encoded.device),
        "backbone": backbone,
        "corpora": [part.describe() for part in encoded.parts],
        "epochs": epochs,
        "samples_per_epoch": samples,
        "seeds": list(range(first_seed, first_seed + seeds)),
        "encode_s": round(time.perf_counter() - started, 1),
        "runs": [],
    }
    done: dict[Setting, dict] = {}
    for setting in _settings(chosen, r, n):
        same = _effective(setting, encoded)
        if same in done:
            results["runs"].append({**done[same], **asdict(setting), "name": setting.name,
                                    "same_as": same.name})  # fmt: skip
            out.write_text(json.dumps(results, indent=2))
            continue
        config = replace(
            base, loss=setting.loss, sampling=setting.sampling,
            recording_norm=setting.recording_norm,
        )  # fmt: skip
        began = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            folder = keep / _slug(setting, first_seed) if keep else Path(scratch)
            run = train_head(encoded.subset(setting.corpora), folder, config)
            head = load_checkpoint(folder).head
        wall = round(time.perf_counter() - began, 1)
        members = list(head.members) if isinstance(head, HeadEnsemble) else [head]
        rows = []
        for k, member in enumerate(members):
            row = _score(member, encoded, setting.corpora)
            best = run.metrics["members"][k]["best_epoch"] if seeds > 1 else None
            seed = first_seed + k
            rows.append({**row, "seed": seed, "best_epoch": best or run.metrics["best_epoch"]})
            print(f"{setting.name} seed={seed}: {_line(row, names)}", flush=True)
        ensemble = _score(head, encoded, setting.corpora) if seeds > 1 else None
        if ensemble:
            print(f"{setting.name} ensemble of {seeds}: {_line(ensemble, names)}", flush=True)
        record = {**asdict(setting), "name": setting.name, "seeds": rows, "ensemble": ensemble,
                  "wall_s": wall}  # fmt: skip
        done[same] = record
        results["runs"].append(record)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
    print(_tables(results, names))


def _effective(setting: Setting, encoded: EncodedCorpus) -> Setting:
    """The setting as trained: the loss is plain cross-entropy when every corpus has every class."""
    full = all(
        len(part.labels) == len(LABELS) for part in encoded.parts if part.name in setting.corpora
    )
    return replace(setting, group="", loss="restricted") if full else replace(setting, group="")


def _slug(setting: Setting, seed: int) -> str:
    corpora = "+".join(setting.corpora)
    return f"{corpora}_{setting.loss}_{setting.sampling}_{setting.recording_norm}_s{seed}"


def _settings(groups: list[str], r: str, n: str) -> list[Setting]:
    """In order of what a shared CPU should measure first, so an interrupted run says most."""
    settings = [
        Setting("main", (r, n), "restricted"),
        Setting("main", (r, n), "plain"),
        Setting("nemo", (n,), "restricted"),
        Setting("nemo", (n,), "plain"),
        Setting("main", (r,), "plain"),
        Setting("main", (r,), "restricted"),
        Setting("sampling", (r, n), sampling="class"),
        Setting("norm", (r, n), recording_norm="standardize"),
        Setting("sampling", (r, n), sampling="corpus-class"),
        Setting("norm", (r, n), recording_norm="mean"),
    ]
    return [setting for setting in settings if setting.group in groups]


def _score(head: torch.nn.Module, encoded: EncodedCorpus, trained_on: tuple[str, ...]) -> dict:
    """Per corpus and split: accuracy, UAR, ECE before and after the validation temperature."""
    head = head.eval()
    outputs = {}
    with torch.inference_mode():
        for part in encoded.parts:
            for split in ("validation", "test"):
                data = getattr(part, split)
                logits = torch.cat([
                    head(data.states[i : i + 64, 0].float(), data.valid[i : i + 64, 0])
                    for i in range(0, len(data), 64)
                ])  # fmt: skip
                outputs[part.name, split] = (logits.double(), data.targets)
    fit = [outputs[name, "validation"] for name in trained_on]
    temperature = fit_temperature(torch.cat([o[0] for o in fit]), torch.cat([o[1] for o in fit]))
    row: dict = {"temperature": round(temperature, 4), "scores": {}}
    selection = []
    for (name, split), (logits, targets) in outputs.items():
        predicted, truth = logits.argmax(1).numpy(), targets.numpy()
        uar = float(np.mean([(predicted[truth == c] == c).mean() for c in np.unique(truth)]))
        probs = torch.softmax(logits, 1).numpy()
        calibrated = torch.softmax(logits / temperature, 1).numpy()
        row["scores"][f"{name}/{split}"] = {
            "accuracy": round(float((predicted == truth).mean()), 4),
            "uar": round(uar, 4),
            "ece_before": reliability(probs, truth).ece,
            "ece_after": reliability(calibrated, truth).ece,
        }
        if split == "validation" and name in trained_on:
            selection.append(uar)
    row["validation_mean_corpus_uar"] = round(float(np.mean(selection)), 4)
    return row


def _line(row: dict, names: list[str]) -> str:
    parts = [f"val mean UAR {row['validation_mean_corpus_uar']:.3f}"]
    for name in names:
        score = row["scores"][f"{name}/test"]
        parts.append(f"{name} test acc {score['accuracy']:.3f} UAR {score['uar']:.3f}")
    return "; ".join(parts) + f"; T {row['temperature']:.2f}"


def _tables(results: dict, names: list[str]) -> str:
    """Markdown: mean ± sd over seeds, then the ensembles.

    Two validation columns: the mean UAR over the corpora the head trained on (what chose its
    epoch), and over every corpus (what compares a one-corpus head with a multi-corpus one).
    """
    header = ["corpora", "loss", "sampling", "norm", "seeds", "val UAR (trained corpora)",
              "val UAR (all corpora)"]  # fmt: skip
    for name in names:
        header += [f"{name} test acc", f"{name} test UAR", f"{name} test ECE before → after"]
    lines = [
        f"machine: {results['machine']} ({results['device']}); epochs {results['epochs']} x "
        f"{results['samples_per_epoch']} clips, seeds {results['seeds']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for kind in ("seeds", "ensemble"):
        for run in results["runs"]:
            rows = run["seeds"] if kind == "seeds" else [run["ensemble"]] * bool(run["ensemble"])
            if not rows:
                continue
            label = "+".join(run["corpora"]) + (" (ensemble)" if kind == "ensemble" else "")
            every = [
                statistics.mean(r["scores"][f"{name}/validation"]["uar"] for name in names)
                for r in rows
            ]
            seeds = ", ".join(str(r["seed"]) for r in run["seeds"])
            cells = [label, run["loss"], run["sampling"], run["recording_norm"], seeds,
                     _spread([r["validation_mean_corpus_uar"] for r in rows]),
                     _spread(every)]  # fmt: skip
            for name in names:
                scores = [r["scores"][f"{name}/test"] for r in rows]
                cells += [
                    _spread([s["accuracy"] for s in scores]),
                    _spread([s["uar"] for s in scores]),
                    f"{statistics.mean(s['ece_before'] for s in scores):.3f} → "
                    f"{statistics.mean(s['ece_after'] for s in scores):.3f}",
                ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


if __name__ == "__main__":
    main()
