"""Scoring throughput: PyTorch eager as the reference study ran it against ONNX Runtime variants.

    python benchmarks/throughput.py [--clips 24] [--shipped models/whisper-pooled.onnx]

Two models, the same clips (RAVDESS actors 23-24, centred 4 s windows, batches of 8):

- the wav2vec2-base architecture (built from its config with random weights: no hub here) with a
  pooled head: exported here with ``ser-export``'s own code, in fp32, optimised and int8;
- the shipped neural model (a checkpoint folder given by ``--checkpoint``), likewise.

"PyTorch eager" calls the Hugging Face feature extractor and the model per batch, as the
reference study did (for Whisper that means its 30 s padding). Each variant prints audio
seconds per wall second and, for trained models, accuracy on the clips it scored.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).parent))
from ser.audio import SAMPLE_RATE, center_window, load_audio
from ser.corpus import read_ravdess, select
from ser.export.neural import build_classifier, export_neural
from ser.export.optimize import optimize_graph, quantize_int8
from ser.training.checkpoint import load_checkpoint, save_checkpoint
from ser.training.heads import build_head, valid_frames

from common import RAVDESS_16K, describe_machine

WINDOW = 4 * SAMPLE_RATE
BATCH = 8


@click.command()
@click.option("--clips", "count", default=24, show_default=True)
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), default=None,
              help="Neural checkpoint folder of the shipped model.")  # fmt: skip
@click.option("--data", type=click.Path(exists=True, path_type=Path),
              default=RAVDESS_16K)  # fmt: skip
def main(count: int, checkpoint: Path | None, data: Path) -> None:
    torch.set_num_threads(2)
    clips = select(read_ravdess(data), "test")
    step = max(1, len(clips) // count)
    clips = clips[::step][:count]
    labels = None
    windows = np.stack([center_window(load_audio(c.path), WINDOW) for c in clips])
    print(f"machine: {describe_machine()}; torch threads {torch.get_num_threads()}, "
          f"onnxruntime {ort.__version__}")  # fmt: skip
    print(f"clips: {len(clips)} from {data} (actors 23-24), 4 s windows, batch {BATCH}\n")
    print("| model | variant | audio s per wall s | vs eager | accuracy on these clips |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        models = [("wav2vec2-base (random weights)", _random_wav2vec2_checkpoint(folder))]
        if checkpoint is not None:
            models.append((f"shipped: {checkpoint.name}", checkpoint))
        for name, ckpt in models:
            config = load_checkpoint(ckpt).config
            labels = config["labels"] if "random" not in name else None
            targets = np.array([labels.index(c.label) for c in clips]) if labels else None
            _compare(name, ckpt, windows, targets, folder)


def _compare(name, checkpoint, windows, targets, folder) -> None:
    classifier = build_classifier(load_checkpoint(checkpoint))
    eager_rate, eager_pred = _time_eager(classifier, windows)
    _row(name, "PyTorch eager (HF feature extractor + model per batch)", eager_rate, 1.0,
         eager_pred, targets)  # fmt: skip
    export_neural(checkpoint, folder / "fp32.onnx")
    fp32 = onnx.load(folder / "fp32.onnx")
    variants = [
        ("ONNX Runtime fp32", lambda: fp32),
        ("ONNX Runtime optimised (ser-export --optimize)", lambda: optimize_graph(fp32)),
        ("onnxruntime.transformers fusions (optimum's ORTOptimizer)",
         lambda: _transformers_fusions(fp32, load_checkpoint(checkpoint).config)),
        ("ONNX Runtime int8 (ser-export --quantize int8)", lambda: quantize_int8(fp32)),
    ]  # fmt: skip
    for variant, build in variants:
        try:
            model = build()
        except Exception as error:  # report a variant that cannot be built, keep measuring
            print(f"| {name} | {variant} | failed: {' '.join(str(error).split())[:120]} | | |")
            continue
        rate, predicted = _time_onnx(model, windows)
        _row(name, variant, rate, rate / eager_rate, predicted, targets)


def _transformers_fusions(model, config):
    """The BERT-style attention/LayerNorm/GELU fusions that optimum's ORTOptimizer applies."""
    from onnxruntime.transformers.optimizer import optimize_model

    heads = {384: 6, 768: 12, 1024: 16}.get(config["hidden_size"], 0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.onnx"
        onnx.save(model, path)
        optimized = optimize_model(str(path), model_type="bert", num_heads=heads,
                                   hidden_size=config["hidden_size"], opt_level=1)  # fmt: skip
        return optimized.model


def _time_eager(classifier, windows):
    """The reference path: feature extractor on numpy per batch, then the HF model."""
    from transformers import AutoFeatureExtractor

    backbone, head = classifier.backbone, classifier.head
    extractor = AutoFeatureExtractor.from_pretrained(backbone.name_or_path)
    predictions = []
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(windows), BATCH):
            batch = list(windows[i : i + BATCH])
            if backbone.family == "whisper":
                feats = extractor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt")
                encoder = backbone.encoder
                out = encoder(feats["input_features"], output_hidden_states=True)
                frames = backbone.num_frames(WINDOW)
                states = torch.stack(out.hidden_states, dim=1)[:, :, :frames]
            else:
                feats = extractor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt")
                out = backbone.model(feats["input_values"], output_hidden_states=True)
                states = torch.stack(out.hidden_states, dim=1)
            audio = torch.from_numpy(windows[i : i + BATCH])
            valid = valid_frames(audio, backbone.samples_per_frame, states.shape[2])
            predictions.append(head(states, valid).argmax(1).numpy())
    wall = time.perf_counter() - started
    return len(windows) * WINDOW / SAMPLE_RATE / wall, np.concatenate(predictions)


def _time_onnx(model, windows):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(["probs"], {"audio": windows[:BATCH]})  # warm-up
    predictions = []
    started = time.perf_counter()
    for i in range(0, len(windows), BATCH):
        predictions.append(session.run(["probs"], {"audio": windows[i : i + BATCH]})[0].argmax(1))
    wall = time.perf_counter() - started
    return len(windows) * WINDOW / SAMPLE_RATE / wall, np.concatenate(predictions)


def _row(name, variant, rate, ratio, predicted, targets) -> None:
    accuracy = f"{(predicted == targets).mean():.3f}" if targets is not None else "n/a (random)"
    print(f"| {name} | {variant} | {rate:.2f} | {ratio:.2f}x | {accuracy} |", flush=True)


def _random_wav2vec2_checkpoint(folder: Path) -> Path:
    """wav2vec2-base's architecture (Wav2Vec2Config defaults) with random weights and head."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    backbone_dir, checkpoint = folder / "wav2vec2-base-random", folder / "w2v2-pooled"
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(backbone_dir)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(
        backbone_dir
    )
    config = {
        "model": "neural", "backbone": str(backbone_dir), "family": "waveform", "head": "pooled",
        "layers": "weighted", "num_layers": 13, "hidden_size": 768, "frames": 199,
        "window": WINDOW, "labels": ["neutral", "calm", "happy", "sad", "angry", "fearful",
        "disgust", "surprised"], "sample_rate": SAMPLE_RATE, "whisper_pad_30s": False,
        "manifest_hash": "none", "samples_per_frame": 320,
    }  # fmt: skip
    head = build_head("pooled", num_layers=13, frames=199, hidden=768, classes=8, layers="weighted")
    save_checkpoint(checkpoint, head, config)
    (checkpoint / "metrics.json").write_text(json.dumps({"validation": {
        "n": 0, "accuracy": 0.0, "uar": 0.0, "f1": {}}}))  # fmt: skip
    return checkpoint


if __name__ == "__main__":
    main()
