"""Faster variants of an exported graph: ONNX Runtime graph optimisation and int8 quantisation.

Both work on the serialized model and return a new one; neither changes the ser metadata.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ser.export.onnx_io import attach_metadata, read_metadata

WEIGHT_BLOCK = 32


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


def quantize_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """int8 weights of the matrix multiplications, activations quantised per row (MatMulNBits).

    This is the int8 that ``ser-export --quantize int8`` makes. Each weight matrix is stored
    in 8 bits with a scale per block of 32 input channels; at run time ONNX Runtime quantises
    the activations block by block *within each row* (``accuracy_level`` 4, int8 dot products),
    so a window's result never depends on its batch-mates, unlike dynamic quantisation
    (:func:`quantize_dynamic_int8`), whose activation scale spans the whole batch. Matrix
    products of two activations (attention scores) and convolutions stay float32.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    metadata = read_metadata(model)
    quantizer = MatMulNBitsQuantizer(
        model, bits=8, block_size=WEIGHT_BLOCK, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    return attach_metadata(quantizer.model.model, metadata)


def quantize_dynamic_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Dynamic int8 quantisation of the matrix multiplications (int8 weights, runtime scales).

    Kept to measure against (``benchmarks/quantization.py``), never exported: its activation
    scale is computed over the whole batch tensor, so scores depend on the batch and the
    batch-invariance gate refuses it.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    metadata = read_metadata(model)
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, source)
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        quantized = onnx.load(target)
    return attach_metadata(quantized, metadata)


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

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, source)
        quantize_static(
            source,
            target,
            Windows(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"ActivationSymmetric": True, "CalibPercentile": 99.99},
        )
        quantized = onnx.load(target)
    return attach_metadata(quantized, metadata)


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
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    predicted = np.concatenate(
        [
            session.run([metadata.probs_name], {metadata.input_name: windows[i : i + 8]})[0]
            for i in range(0, len(windows), 8)
        ]
    ).argmax(axis=1)
    return float((predicted == targets).mean())
