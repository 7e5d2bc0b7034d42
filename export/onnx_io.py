"""Writing ONNX models with ser metadata, and reading it back."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import onnx

from ser.errors import ModelError
from ser.files import publish
from ser.metadata import ModelMetadata


def attach_metadata(model: onnx.ModelProto, metadata: ModelMetadata) -> onnx.ModelProto:
    """Replace ``model``'s metadata_props with ``metadata``; returns the same proto."""
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def load_onnx(path: Path, *, external_data: bool = True) -> onnx.ModelProto:
    """``path`` as an ONNX model; ModelError in one line for a file that is not one."""
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as error:  # onnx raises protobuf's untyped errors for non-ONNX files
        reason = " ".join(str(error).split())[:200]
        raise ModelError(f"{path}: not an ONNX model ({reason})") from None


def read_metadata(model: onnx.ModelProto) -> ModelMetadata:
    """The ser contract stored in ``model``'s metadata_props."""
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})


GRAPH_HASH = "graph_sha256"


def graph_sha256(model: onnx.ModelProto) -> str:
    """The first 16 hex digits of the SHA-256 of ``model``'s graph (metadata not included)."""
    return hashlib.sha256(model.graph.SerializeToString()).hexdigest()[:16]


def check_writable(path: Path) -> None:
    """Refuse, before an export's work, an output that cannot be written: a folder, a parent
    that is a file, a read-only place (a probe file is created there and removed).

    Raises:
        ModelError: one line saying what is wrong.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".probe"):
            pass
    except OSError as error:
        raise ModelError(f"cannot write {path} ({error.strerror or error})") from None


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write atomically: a failed export never leaves a truncated model at ``path``, nor its
    temporary file beside it.

    Raises:
        ModelError: when the file cannot be written.
    """
    for prop in model.metadata_props:  # the graph as written, after any merge or rewrite
        if prop.key == GRAPH_HASH:
            prop.value = graph_sha256(model)
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".onnx.tmp", delete=False) as out:
            temp = out.name
            out.write(model.SerializeToString())
        publish(temp, path)
    except OSError as error:
        if temp is not None:
            Path(temp).unlink(missing_ok=True)
        raise ModelError(f"cannot write {path} ({error.strerror or error})") from None
