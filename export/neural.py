"""A neural checkpoint to one ONNX graph: frontend, frozen encoder, layer mix and head.

Input ``audio`` is float32 ``[batch, samples]`` at 16 kHz; outputs are ``logits`` and ``probs``.
The logits are divided by the temperature fitted on validation (1 for checkpoints without one),
so ``probs`` are the calibrated probabilities and no runner needs to know about calibration.
The batch axis is always dynamic; the time axis too for the ``pooled`` head (the ``reference``
head's frame count is part of its weights, so its graph takes exactly one window).
"""

from __future__ import annotations

import io
import json
import platform
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from torch import nn

from ser.audio import center_window, load_audio
from ser.corpus import Clip, label_indices
from ser.errors import ModelError, SerError
from ser.export.invariance import (
    InvarianceReport,
    batch_invariance,
    require_invariance,
    session_runner,
)
from ser.export.onnx_io import (
    GRAPH_HASH,
    attach_metadata,
    graph_sha256,
    read_metadata,
    save_model,
)
from ser.export.optimize import (
    accuracy_lost,
    convert_fp16,
    onnx_accuracy,
    optimize_graph,
    quantize_int8,
)
from ser.export.parity import ParityReport, compare_probabilities, require_parity
from ser.metadata import ModelMetadata
from ser.training.backbones import SpeechEncoder, backbone_from_config
from ser.training.checkpoint import NeuralCheckpoint, load_checkpoint
from ser.training.heads import valid_frames

NEURAL_TOLERANCE = 1e-4
OPSET = 17
INPUT_NAME, LOGITS_NAME, PROBS_NAME = "audio", "logits", "probs"


class WaveformClassifier(nn.Module):
    """Encoder, head and temperature as one module: ``audio [batch, samples] -> logits, probs``."""

    def __init__(self, backbone: SpeechEncoder, head: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.backbone(audio)
        valid = valid_frames(audio, self.backbone.samples_per_frame, states.shape[2])
        logits = self.head(states, valid) / self.temperature
        return logits, torch.softmax(logits, dim=-1)


@dataclass(frozen=True)
class NeuralExport:
    """An exported graph before it is written, and the check that it passed."""

    model: onnx.ModelProto
    metadata: ModelMetadata
    parity: ParityReport
    invariance: InvarianceReport


def build_classifier(checkpoint: NeuralCheckpoint) -> WaveformClassifier:
    config = checkpoint.config
    backbone = backbone_from_config(config)
    temperature = config.get("temperature", 1.0)
    return WaveformClassifier(backbone, checkpoint.head, temperature).eval()


class QuantizationRefused(SerError):
    """int8 or fp16 costs more validation accuracy than allowed."""


def export_neural(
    checkpoint_dir: Path,
    out_path: Path,
    *,
    parity_clips: Sequence[Clip] = (),
    optimize: bool = False,
    quantize: bool = False,
    fp16: bool = False,
    validation_clips: Sequence[Clip] = (),
    max_accuracy_drop: float = 0.01,
) -> NeuralExport:
    """Trace the classifier to ONNX, check it against PyTorch, and write ``out_path``.

    ``quantize`` makes the matrix multiplications of the float graph int8, accepted only if
    accuracy on ``validation_clips`` drops by at most ``max_accuracy_drop``; ``optimize`` then
    applies ONNX Runtime's graph optimisations (a float graph is checked for parity again).

    Raises:
        ModelError: for a folder that is not a neural checkpoint or a backbone that cannot load.
        ParityError: with the figures, when ONNX Runtime disagrees with PyTorch.
        QuantizationRefused: with both accuracies, when int8 loses too much.
        InvarianceError: with the figures, when a window's scores depend on its batch.
    """
    checkpoint = load_checkpoint(checkpoint_dir)
    if quantize and fp16:
        raise ModelError("choose one of --quantize int8 and --fp16")
    if (quantize or fp16) and not validation_clips:
        raise ModelError("--quantize and --fp16 need validation clips (--data) to judge accuracy")
    classifier = build_classifier(checkpoint)
    window = checkpoint.config["window"]
    model = trace_to_onnx(classifier, window, dynamic_length=checkpoint.config["head"] == "pooled")
    metadata = neural_metadata(checkpoint, model)
    attach_metadata(model, metadata)
    inputs = parity_inputs(parity_clips, window)
    report = require_parity(
        check_parity(classifier, model.SerializeToString(), inputs), str(out_path)
    )
    reduced = "int8" if quantize else "fp16" if fp16 else None
    final = quantize_int8(model) if quantize else convert_fp16(model) if fp16 else model
    if optimize:
        final = optimize_graph(final)
    if reduced:
        labels = checkpoint.config["labels"]
        final = accept_reduced(
            model, final, reduced, validation_clips, window, labels, max_accuracy_drop
        )
    graph = final.SerializeToString()
    if optimize and not reduced:
        report = require_parity(check_parity(classifier, graph, inputs), f"{out_path} (optimised)")
    invariance = require_invariance(check_invariance(graph, inputs), str(out_path))
    save_model(final, out_path)
    return NeuralExport(final, metadata, report, invariance)


def accept_reduced(
    model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    kind: str,
    clips: Sequence[Clip],
    window: int,
    labels: Sequence[str],
    max_drop: float,
    reference: str = "float32",
) -> onnx.ModelProto:
    """``quantized`` with its accuracy in the metadata, if it is close enough to ``model``'s.

    ``reference`` names what ``model`` is (float32 for an export; the old file's precision when
    re-quantising).

    Raises:
        QuantizationRefused: with both accuracies, when it loses more than ``max_drop``.
    """
    windows = parity_inputs(clips, window)
    targets = label_indices(clips, labels)
    before, after = (
        onnx_accuracy(model, windows, targets),
        onnx_accuracy(quantized, windows, targets),
    )
    if accuracy_lost(before, after, max_drop):
        raise QuantizationRefused(
            f"{kind} refused: validation accuracy {after:.4f} against {before:.4f} in {reference} "
            f"({len(clips)} clips; at most {max_drop:.2f} drop allowed)"
        )
    metadata = read_metadata(quantized)
    described = {
        "int8": "int8 MatMul weights, activations quantised per row",
        "fp16": "float16, for CUDA",
        "float32": "float32",
    }
    note = {
        "kind": described[kind],
        f"validation_accuracy_{reference}": before,
        f"validation_accuracy_{kind}": after,
    }
    attach_metadata(quantized, replace(metadata, extra={**metadata.extra, "quantization": note}))
    return quantized


def check_exported(
    model_path: Path, checkpoint_dir: Path, *, parity_clips: Sequence[Clip] = ()
) -> tuple[ParityReport, InvarianceReport]:
    """Re-run the parity and batch-invariance gates on an already written model.

    Raises:
        ParityError: with the figures, when the file disagrees with its checkpoint.
        InvarianceError: with the figures, when a window's scores depend on its batch.
    """
    checkpoint = load_checkpoint(checkpoint_dir)
    classifier = build_classifier(checkpoint)
    try:
        model_bytes = Path(model_path).read_bytes()
    except OSError as error:
        raise ModelError(f"{model_path}: cannot read ({error.strerror})") from None
    inputs = parity_inputs(parity_clips, checkpoint.config["window"])
    parity = require_parity(check_parity(classifier, model_bytes, inputs), str(model_path))
    return parity, require_invariance(check_invariance(model_bytes, inputs), str(model_path))


def check_invariance(model_bytes: bytes, inputs: np.ndarray) -> InvarianceReport:
    """The batch-invariance gate on ``inputs`` (filled up to the largest batch size)."""
    return batch_invariance(session_runner(model_bytes, INPUT_NAME, PROBS_NAME), inputs)


def trace_to_onnx(classifier: nn.Module, window: int, *, dynamic_length: bool) -> onnx.ModelProto:
    """The TorchScript exporter, with a dynamic batch axis (and time axis if ``dynamic_length``)."""
    example = torch.from_numpy(np.random.default_rng(0).standard_normal((2, window)) * 0.1).float()
    axes = {0: "batch", 1: "samples"} if dynamic_length else {0: "batch"}
    return module_to_onnx(
        classifier, (example,), [INPUT_NAME], [LOGITS_NAME, PROBS_NAME],
        {INPUT_NAME: axes, LOGITS_NAME: {0: "batch"}, PROBS_NAME: {0: "batch"}},
    )  # fmt: skip


def module_to_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> onnx.ModelProto:
    """``module`` through the TorchScript exporter at ser's opset, checked by ONNX."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, example, buffer, dynamo=False, opset_version=OPSET, input_names=input_names,
            output_names=output_names, dynamic_axes=dynamic_axes,
        )  # fmt: skip
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    return model


def neural_metadata(checkpoint: NeuralCheckpoint, model: onnx.ModelProto) -> ModelMetadata:
    config = checkpoint.config
    metrics = _read_metrics(checkpoint.folder)
    window_s = config["window"] / config["sample_rate"]
    return ModelMetadata(
        frontend="waveform",
        labels=tuple(config["labels"]),
        sample_rate=config["sample_rate"],
        input_name=INPUT_NAME,
        probs_name=PROBS_NAME,
        window_s=window_s,
        hop_s=window_s,
        dynamic_length=config["head"] == "pooled",
        extra={
            "model": "neural",
            "backbone": config["backbone"],
            "family": config["family"],
            "head": config["head"],
            "ensemble": config.get("ensemble", 1),
            "layers": config["layers"],
            "test_metrics": metrics,
            "manifest_hash": config["manifest_hash"],
            **_training_record(config, metrics),
            GRAPH_HASH: graph_sha256(model),  # refreshed by save_model if the graph changes
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
            },
        },
    )


def parity_inputs(clips: Sequence[Clip], window: int, count: int = 16) -> np.ndarray:
    """``[n, window]`` windows: real clips when given (at least ``count``), else generated audio."""
    if clips:
        return np.stack([center_window(load_audio(clip.path), window) for clip in clips])
    rng = np.random.default_rng(1234)
    t = np.arange(window) / 16_000
    rows = []
    for n in range(count):
        f0, level = rng.uniform(90, 320), rng.uniform(0.02, 0.5)
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        signal = level * tone * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t) ** 2)
        signal += 0.005 * rng.standard_normal(window)
        if n % 4 == 3:  # some short clips, centred in zero padding as in evaluation
            signal = center_window(signal[: window // 2], window)
        rows.append(signal)
    return np.stack(rows).astype(np.float32)


def check_parity(
    classifier: nn.Module, model_bytes: bytes, inputs: np.ndarray, batch_size: int = 8
) -> ParityReport:
    """PyTorch against ONNX Runtime (CPU) on the same windows."""
    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises untyped errors for files that are not ONNX
        raise ModelError(
            f"not a loadable ONNX model ({' '.join(str(error).split())[:200]})"
        ) from None
    torch_probs, onnx_probs = [], []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        with torch.inference_mode():
            torch_probs.append(classifier(torch.from_numpy(batch))[1].numpy())
        onnx_probs.append(session.run([PROBS_NAME], {INPUT_NAME: batch})[0])
    return compare_probabilities(
        np.concatenate(torch_probs), np.concatenate(onnx_probs), NEURAL_TOLERANCE
    )


def _training_record(config: dict, metrics: dict) -> dict:
    """Corpora, loss, sampling, normalisation, the log-mel range, pooling and calibration, for
    checkpoints that have them."""
    keys = ("corpora", "loss", "sampling", "recording_norm", "whisper_dynamic_range_db", "pool")
    record = {key: config[key] for key in keys if key in config}
    if "temperature" in config:
        record["calibration"] = {
            "temperature": config["temperature"],
            "fitted_on": "validation",
            **metrics.get("ece", {}),
        }
    return record


def _read_metrics(folder: Path) -> dict:
    """The test figures (validation if there is no test split), per corpus too, and the ECE."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no metrics.json; was training interrupted?")
    metrics = json.loads(path.read_text())
    split = "test" if "test" in metrics else "validation"
    summary = {"split": split, **{k: metrics[split][k] for k in ("n", "accuracy", "uar", "f1")}}
    corpora = metrics.get("corpora", {})
    if len(corpora) > 1:
        summary["corpora"] = {
            name: {k: scores[split][k] for k in ("n", "accuracy", "uar")}
            for name, scores in corpora.items()
            if split in scores
        }
    calibration = metrics.get("calibration", {}).get(split)
    if calibration is not None:
        summary["ece"] = {
            f"{split}_ece_before": calibration["all"]["before"]["ece"],
            f"{split}_ece_after": calibration["all"]["after"]["ece"],
        }
    return summary
