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
    """Dynamic int8 quantisation of the matrix multiplications (int8 weights, runtime scales).

    Convolutions stay float: dynamically quantised ConvInteger is slower than float Conv in ONNX
    Runtime on CPU, and the feature encoders are mostly convolutions.
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
