"""Faster variants of an exported graph: ONNX Runtime graph optimisation and int8 quantisation.

Both work on the serialized model and return a new one; neither changes the ser metadata.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ser.export.invariance import session_runner
from ser.export.onnx_io import attach_metadata, read_metadata

WEIGHT_BLOCK = 128


def optimize_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's extended graph optimisations (constant folding, fusions), done offline.

    ``ORT_ENABLE_EXTENDED`` rather than ``ALL``: the latter adds layout changes for the machine
    it runs on, which must not be baked into a file that is shipped elsewhere.
    """
    metadata = read_metadata(model)
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(target)
    return attach_metadata(optimized, metadata)


def quantize_int8(model: onnx.ModelProto, *, block_size: int = WEIGHT_BLOCK) -> onnx.ModelProto:
    """int8 weights of the matrix multiplications, activations quantised per row (MatMulNBits).

    This is the int8 that ``ser-export --quantize int8`` makes. Each weight matrix is stored
    in 8 bits with a scale per block of 128 input channels (chosen on validation: see README);
    at run time ONNX Runtime quantises the activations block by block *within each row*
    (``accuracy_level`` 4, int8 dot products), so a window's result does not depend on its
    batch-mates (to float32 noise, which the export gate checks), unlike dynamic quantisation
    (:func:`quantize_dynamic_int8`), whose activation scale spans the whole batch. Matrix
    products of two activations (attention scores) and convolutions stay float32.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    metadata = read_metadata(model)
    quantizer = MatMulNBitsQuantizer(
        _copy(model), bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4
    )
    with _quiet_logging():
        quantizer.process()
    return attach_metadata(quantizer.model.model, metadata)


def quantize_dynamic_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Dynamic int8 quantisation of the matrix multiplications (int8 weights, runtime scales).

    Kept to measure against (``benchmarks/quantization.py``), never exported: its activation
    scale is computed over the whole batch tensor, so scores depend on the batch and the
    batch-invariance gate refuses it.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    return _quantize_through_files(
        model,
        lambda source, target: quantize_dynamic(
            source, target, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
            per_channel=True,
        ),
    )  # fmt: skip


def quantize_static_int8(model: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    """Static int8 (QDQ) of the matrix multiplications, activation scales fixed by calibration.

    Batch-invariant, since every scale is a constant of the graph; ``calibration`` is a set of
    training windows ``[n, samples]`` whose activation ranges fix those scales.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    metadata = read_metadata(model)
    name = metadata.input_name

    class Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration[i : i + 8] for i in range(0, len(calibration), 8))

        def get_next(self) -> dict[str, np.ndarray] | None:
            rows = next(self.rows, None)
            return None if rows is None else {name: rows.astype(np.float32)}

    return _quantize_through_files(
        model,
        lambda source, target: quantize_static(
            source, target, Windows(), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"], per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"ActivationSymmetric": True, "CalibPercentile": 99.99},
        ),
    )  # fmt: skip


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and arithmetic in float16 with float32 inputs and outputs, for CUDA.

    ONNX Runtime runs such a graph on the CPU too (slowly), which is how its accuracy is checked
    on a machine without a GPU.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    metadata = read_metadata(model)
    return attach_metadata(convert_float_to_float16(model, keep_io_types=True), metadata)


def onnx_accuracy(model: onnx.ModelProto, windows: np.ndarray, targets: np.ndarray) -> float:
    """Accuracy of ``model`` on centred windows ``[n, samples]`` (CPU, batches of 8)."""
    metadata = read_metadata(model)
    run = session_runner(model.SerializeToString(), metadata.input_name, metadata.probs_name)
    return float((run(windows, chunk=8).argmax(axis=1) == targets).mean())


def accuracy_lost(before: float, after: float, allowed: float) -> bool:
    """Whether ``after`` lost more than ``allowed`` against ``before`` (exactly ``allowed``
    lost is accepted, whatever float rounding does to the two accuracies)."""
    return before - after > allowed + 1e-9


def dequantize_dynamic_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Undo :func:`quantize_dynamic_int8`: float MatMuls again, weights kept on their int8 grid.

    Each ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale)`` chain becomes one
    ``MatMul`` with the weight ``(w_int8 - zero_point) * scale``; only the run-time activation
    quantisation, the batch-dependent part, is gone. This lets a model exported by an older ser
    be re-quantised batch-invariantly (``ser-export requantize``) without its checkpoint.
    """
    model = _copy(model)  # the caller's graph stays as it was
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced: dict[str, onnx.NodeProto] = {}  # MatMulInteger or its Cast/Mul -> new node or None
    new_weights = []
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        quantized_input, weight_name, _, weight_zero = node.input
        source = producer[quantized_input].input[0]  # DynamicQuantizeLinear's float input
        (cast,) = consumers[node.output[0]]
        (rescale,) = consumers[cast.output[0]]
        scales = producer[rescale.input[1]]  # Mul(activation scale, weight scale)
        weight_scale = weights[scales.input[1]]
        weight = (weights[weight_name].astype(np.float32) - weights[weight_zero]) * weight_scale
        name = f"{weight_name}_dequantized"
        new_weights.append(numpy_helper.from_array(weight.astype(np.float32), name))
        matmul = onnx.helper.make_node("MatMul", [source, name], [rescale.output[0]], node.name)
        replaced[node.name], replaced[cast.name], replaced[rescale.name] = matmul, None, None
    if not replaced:
        raise ValueError("no dynamically quantised MatMul (MatMulInteger) in this graph")
    nodes = [replaced.get(node.name, node) for node in graph.node]
    kept = _live_nodes([n for n in nodes if n is not None], [o.name for o in graph.output])
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_weights)
    used = {name for node in kept for name in node.input}
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    onnx.checker.check_model(model)
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy: ONNX Runtime's in-memory quantiser and the dequantiser rewrite in place."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _quantize_through_files(
    model: onnx.ModelProto, quantize: Callable[[Path, Path], None]
) -> onnx.ModelProto:
    """Run one of ONNX Runtime's file-to-file quantisers on ``model``; keep its ser metadata."""
    metadata = read_metadata(model)
    with tempfile.TemporaryDirectory() as folder, _quiet_logging():
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, source)
        quantize(source, target)
        quantized = onnx.load(target)
    return attach_metadata(quantized, metadata)


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """ONNX Runtime's quantisers log a line per node at INFO; keep the CLI's output readable."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


def _live_nodes(nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
    """``nodes`` less those whose outputs nothing uses (in the original order)."""
    needed, keep = set(outputs), []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(node.input)
    return keep[::-1]
