"""Make an int8 model written by an older ser batch-invariant, without its checkpoint.

Older ``ser-export --quantize int8`` files use dynamic quantisation, whose scores depend on the
batch. Their int8 weights are still good: they are turned back into float MatMuls and quantised
again with per-row activations (or kept in float32, e.g. for CUDA), then gated like an export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from ser.corpus import Clip
from ser.errors import ModelError
from ser.export.invariance import InvarianceReport, require_invariance
from ser.export.neural import accept_reduced, check_invariance, parity_inputs
from ser.export.onnx_io import load_onnx, read_metadata, save_model
from ser.export.optimize import dequantize_dynamic_int8, quantize_int8

PRECISIONS = ("int8", "float32")


@dataclass(frozen=True)
class Requantized:
    """The written graph and the invariance gate it passed."""

    model: onnx.ModelProto
    invariance: InvarianceReport


def requantize(
    model_path: Path,
    out_path: Path,
    *,
    validation_clips: Sequence[Clip],
    precision: str = "int8",
    max_accuracy_drop: float = 0.01,
) -> Requantized:
    """Rewrite a dynamic-int8 model as ``precision`` and write it if both gates pass.

    The accuracy gate compares the new graph with the old file on ``validation_clips``.

    Raises:
        ModelError: when the file is not a ser waveform model with dynamic int8 MatMuls.
        QuantizationRefused: with both accuracies, when the new graph loses too much.
        InvarianceError: with the figures, when its scores still depend on the batch.
    """
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; expected {' or '.join(PRECISIONS)}")
    if not validation_clips:
        raise ModelError("requantize needs validation clips (--data) to judge accuracy")
    original = load_onnx(model_path)
    metadata = read_metadata(original)
    if metadata.frontend != "waveform" or not metadata.window_s:
        raise ModelError(f"{model_path}: not a ser waveform model (frontend {metadata.frontend})")
    if not any(node.op_type == "MatMulInteger" for node in original.graph.node):
        raise ModelError(f"{model_path}: has no dynamically quantised MatMul; nothing to redo")
    restored = dequantize_dynamic_int8(original)
    final = quantize_int8(restored) if precision == "int8" else restored
    window = round(metadata.window_s * metadata.sample_rate)
    final = accept_reduced(
        original, final, precision, validation_clips, window, metadata.labels,
        max_accuracy_drop, reference="dynamic_int8",
    )  # fmt: skip
    windows = parity_inputs(validation_clips, window)
    invariance = require_invariance(
        check_invariance(final.SerializeToString(), windows), str(out_path)
    )
    save_model(final, out_path)
    return Requantized(final, invariance)
