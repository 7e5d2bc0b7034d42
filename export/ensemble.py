"""Several exported neural models as one graph: their probabilities averaged, one encoder pass.

Heads trained on different corpora can be better together than apart (README, "Several
corpora": the RAVDESS heads and the RAVDESS + nEMO heads averaged beat each alone on the
validation speakers of both corpora). Running two graphs would run the encoder twice, so here
every member runs the first member's encoder weights (their encoders must have the same
structure, which is checked node by node), and weights and nodes that are then identical are
kept once: the ensemble costs one encoder pass plus its heads.

Gates, as for every export: the merged graph's probabilities against the weighted mean of the
members run separately (each on the shared encoder), and batch invariance. Members that ran
their own encoder weights before (an int8-rounded one, say) are scored on validation clips
both ways when clips are given, and the export is refused if one loses more than a point.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from scipy.special import softmax

from ser.corpus import Clip, label_indices
from ser.errors import ModelError
from ser.export.invariance import (
    InvarianceReport,
    batch_invariance,
    require_invariance,
    session_runner,
)
from ser.export.neural import parity_inputs
from ser.export.onnx_io import (
    attach_metadata,
    check_writable,
    load_onnx,
    read_metadata,
    save_model,
)
from ser.export.optimize import accuracy_lost, onnx_accuracy
from ser.export.speaker import states_tensor
from ser.metadata import ModelMetadata
from ser.training.backbones import dynamic_range_of
from ser.training.calibration import fit_temperature, reliability
from ser.training.metrics import classification_metrics

PARITY_TOLERANCE = 1e-5
ACCURACY_DROP = 0.01
CHUNK = 16


@dataclass(frozen=True)
class MemberCheck:
    """A member's validation accuracy on its own encoder weights and on the shared ones."""

    name: str
    own: float
    shared: float


@dataclass(frozen=True)
class ExportedEnsemble:
    parity: float  # max |p_merged - weighted mean of members|
    invariance: InvarianceReport
    members: list[MemberCheck]
    replaced: list[int]  # per member: encoder weights that differed from the first member's
    temperature: float = 1.0


def pair_encoder_weights(model: onnx.ModelProto, reference: onnx.ModelProto) -> dict[str, str]:
    """Each of ``model``'s encoder initializers and ``reference``'s at the same place, found by
    walking both graphs up from their encoder states input by input.

    Raises:
        ModelError: when the two encoders differ in structure.
    """
    both = (model, reference)
    produced = [{out: node for node in m.graph.node for out in node.output} for m in both]
    weights = [{i.name for i in m.graph.initializer} for m in both]
    pairs: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    stack = [(states_tensor(model), states_tensor(reference))]
    while stack:
        a, b = stack.pop()
        if (a, b) in seen:
            continue
        seen.add((a, b))
        if a in weights[0] and b in weights[1]:
            pairs[a] = b
            continue
        node_a, node_b = produced[0].get(a), produced[1].get(b)
        if node_a is None and node_b is None and a == b:  # the graph input
            continue
        if (
            node_a is None
            or node_b is None
            or node_a.op_type != node_b.op_type
            or len(node_a.input) != len(node_b.input)
            or list(node_a.output).index(a) != list(node_b.output).index(b)
            or node_a.domain != node_b.domain
            or list(node_a.attribute) != list(node_b.attribute)  # Constant values included
        ):
            raise ModelError("the members' encoders differ in structure; they cannot share one")
        stack.extend(zip(node_a.input, node_b.input, strict=True))
    return pairs


def share_encoder(model: onnx.ModelProto, reference: onnx.ModelProto) -> int:
    """Give ``model`` the encoder weights of ``reference`` (in place); how many differed.

    Only weights may differ (members exported from the same encoder differ where one was
    int8-rounded). A scalar that differs is a setting of the frontend, such as the log-mel
    floor an optimised graph holds as an initializer: sharing would silently give ``model``
    another frontend than it was trained with, so it is refused.

    Raises:
        ModelError: for encoders of other structure, shapes or types, or differing scalars.
    """
    own = {init.name: init for init in model.graph.initializer}
    theirs = {init.name: init for init in reference.graph.initializer}
    changed = 0
    for name, other in pair_encoder_weights(model, reference).items():
        mine, value = numpy_helper.to_array(own[name]), numpy_helper.to_array(theirs[other])
        if mine.shape != value.shape or mine.dtype != value.dtype:
            raise ModelError(f"encoder weight {name}: {mine.shape} {mine.dtype} against "
                             f"{value.shape} {value.dtype}")  # fmt: skip
        if mine.size == 1 and not np.array_equal(mine, value):
            raise ModelError(
                f"encoder constant {name} differs ({mine.item():g} against {value.item():g}): "
                "the members' encoders were not built with the same settings"
            )
        if not np.array_equal(mine, value):
            own[name].CopyFrom(numpy_helper.from_array(value, name))
            changed += 1
    return changed


def merge(
    models: Sequence[onnx.ModelProto],
    weights: Sequence[float],
    metadata: ModelMetadata,
    temperature: float = 1.0,
) -> onnx.ModelProto:
    """One graph: the members side by side on one input; ``logits`` the log of their weighted
    mean probabilities over ``temperature``, ``probs`` its softmax (the mean itself at T = 1);
    other outputs (speaker mode's) are the first member's that has them. Without metadata:
    the caller attaches it once the graph's figures are known."""
    input_name, probs_name = metadata.input_name, metadata.probs_name
    nodes, initializers, outputs, extra_outputs = [], [], [], []
    for index, model in enumerate(models):
        prefix = f"m{index}/"

        def rename(name: str, prefix: str = prefix) -> str:
            return name if name in ("", input_name) else prefix + name

        for init in model.graph.initializer:
            renamed = onnx.TensorProto()
            renamed.CopyFrom(init)
            renamed.name = rename(init.name)
            initializers.append(renamed)
        for node in model.graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [rename(name) for name in node.input]
            copy.output[:] = [rename(name) for name in node.output]
            copy.name = rename(node.name) if node.name else ""
            nodes.append(copy)
        outputs.append(rename(probs_name))
        names = {out.name for out in extra_outputs}
        for out in model.graph.output:
            if out.name not in ("logits", probs_name) and out.name not in names:
                nodes.append(helper.make_node("Identity", [rename(out.name)], [out.name]))
                extra_outputs.append(out)
    total = float(sum(weights))
    scaled = []
    for index, (name, weight) in enumerate(zip(outputs, weights, strict=True)):
        factor = f"ensemble/weight{index}"
        initializers.append(numpy_helper.from_array(np.float32(weight / total), factor))
        nodes.append(helper.make_node("Mul", [name, factor], [f"ensemble/scaled{index}"]))
        scaled.append(f"ensemble/scaled{index}")
    initializers.append(numpy_helper.from_array(np.float32(temperature), "ensemble/temperature"))
    nodes += [
        helper.make_node("Sum", scaled, ["ensemble/mean"]),
        helper.make_node("Log", ["ensemble/mean"], ["ensemble/log"]),
        helper.make_node("Div", ["ensemble/log", "ensemble/temperature"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [probs_name], axis=-1),
    ]
    first = models[0].graph
    probs_info = next(out for out in first.output if out.name == probs_name)
    logits_info = onnx.ValueInfoProto()
    logits_info.CopyFrom(probs_info)
    logits_info.name = "logits"
    graph = helper.make_graph(
        nodes, "ser_ensemble", list(first.input), [logits_info, probs_info, *extra_outputs],
        initializers,
    )  # fmt: skip
    merged = helper.make_model(graph, opset_imports=list(models[0].opset_import))
    merged.ir_version = models[0].ir_version
    return keep_once(merged)


def keep_once(model: onnx.ModelProto) -> onnx.ModelProto:
    """Identical initializers, then identical nodes on identical inputs, kept once, and nodes
    no output needs dropped (in place): what makes members that share an encoder run it once,
    and a member's unused outputs (its own logits, its speaker branch) cost nothing."""
    canonical: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    kept = []
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        key = (init.data_type, tuple(init.dims), hashlib.sha256(value.tobytes()).hexdigest())
        if key in canonical:
            alias[init.name] = canonical[key]
        else:
            canonical[key] = init.name
            kept.append(init)
    seen: dict[tuple, list[str]] = {}
    nodes = []
    for node in model.graph.node:
        node.input[:] = [alias.get(name, name) for name in node.input]
        attributes = tuple(a.SerializeToString(deterministic=True) for a in node.attribute)
        key = (node.domain, node.op_type, tuple(node.input), attributes, len(node.output))
        if key in seen:
            alias.update(zip(node.output, seen[key], strict=True))
            continue
        seen[key] = list(node.output)
        nodes.append(node)
    needed = {out.name for out in model.graph.output}
    live = []
    for node in reversed(nodes):
        if needed.intersection(node.output):
            needed.update(node.input)
            live.append(node)
    nodes = live[::-1]
    used = {name for node in nodes for name in node.input}
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(init for init in kept if init.name in used)
    return model


def export_ensemble(
    paths: Sequence[Path],
    output: Path,
    *,
    weights: Sequence[float] | None = None,
    parity_clips: Sequence[Clip] = (),
    validation_clips: Sequence[Clip] = (),
) -> ExportedEnsemble:
    """Merge the exported models at ``paths`` (the first one's encoder for all), check, write.

    Raises:
        ModelError: for fewer than two models, members that disagree on labels, rate, window
            or encoder structure, a failed gate, or a member that loses accuracy on the
            shared encoder.
    """
    if len(paths) < 2:
        raise ModelError("an ensemble needs at least two models")
    weights = [float(w) for w in weights or [1.0] * len(paths)]
    usable = all(math.isfinite(w) and w > 0 for w in weights) and math.isfinite(sum(weights))
    if len(weights) != len(paths) or not usable:
        raise ModelError("give one positive, finite weight per model")
    _check_files(paths, output)
    originals = [load_onnx(path) for path in paths]
    metas = [read_metadata(model) for model in originals]
    first = metas[0]
    contract = [(m.frontend, m.labels, m.sample_rate, m.input_name, m.probs_name, m.window_s)
                for m in metas]  # fmt: skip
    if any(item != contract[0] for item in contract[1:]) or first.frontend != "waveform":
        raise ModelError("the models must be waveform models with the same labels, rate and window")
    ranges = [dynamic_range_of(m.extra) for m in metas]  # share_encoder would refuse too, but
    if len(set(ranges)) > 1:  # by a graph constant's name: say which setting differs
        listed = ", ".join(f"{value:g} dB" for value in ranges)
        raise ModelError(f"the models' Whisper dynamic ranges differ ({listed}): they cannot "
                         "share one encoder")  # fmt: skip
    shared, replaced = [originals[0]], [0]
    for model in originals[1:]:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        replaced.append(share_encoder(copy, originals[0]))
        shared.append(copy)
    window = round(first.window_s * first.sample_rate)
    members = [_runner(model, first) for model in shared]

    checks, calibration = [], None
    if validation_clips:
        inputs = _windows(validation_clips, window)
        truth = label_indices(validation_clips, first.labels)
        probs = [run(inputs) for run in members]  # each member once, for both uses
        checks = _member_checks(paths, originals, replaced, probs, inputs, truth)
        calibration = _calibrate(_mix(probs, weights), truth, len(validation_clips))
    temperature = calibration["temperature"] if calibration else 1.0
    merged = merge(shared, weights, first, temperature)
    inputs = _windows(parity_clips, window)
    if not all(m.dynamic_length for m in metas):  # a fixed-length member fixes the input
        merged.graph.input[0].type.tensor_type.shape.dim[1].dim_value = window
    run = session_runner(merged.SerializeToString(), first.input_name, first.probs_name)
    scored = run(inputs, chunk=CHUNK).astype(np.float64)
    expected = _mix([member(inputs) for member in members], weights)
    parity = float(np.abs(scored - _tempered(expected, temperature)).max())
    if not parity <= PARITY_TOLERANCE:  # NaN fails too
        raise ModelError(f"ensemble parity failed: max |dp| {parity:.2e} > {PARITY_TOLERANCE}")
    invariance = require_invariance(batch_invariance(run, inputs[:64]), "ensemble")
    test_metrics = None
    tests = [k for k, clip in enumerate(parity_clips) if clip.split == "test"]
    if tests:  # the ensemble's own figures on the test clips among the parity clips
        truth = label_indices([parity_clips[k] for k in tests], first.labels)
        test_metrics = classification_metrics(truth, scored[tests].argmax(axis=1), first.labels)
    attach_metadata(merged, _metadata(metas, paths, weights, calibration, test_metrics))
    save_model(merged, output)
    return ExportedEnsemble(parity, invariance, checks, replaced, temperature)


def _check_files(paths: Sequence[Path], output: Path) -> None:
    """Refuse, before any work, a member given twice and an output that would overwrite a
    member or cannot be written."""
    resolved = [Path(path).resolve() for path in paths]
    if len(set(resolved)) < len(resolved):
        raise ModelError("a model is given twice; give it once and a larger --weight instead")
    target = Path(output).resolve()
    if target in resolved:
        raise ModelError(f"{output}: the output would overwrite one of the models")
    check_writable(Path(output))


def _mix(probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, probs, strict=True)) / sum(weights)


def _calibrate(probs: np.ndarray, truth: np.ndarray, clips: int) -> dict:
    """A temperature for the mixture fitted on the validation clips (all corpora pooled, as
    training fits its own), and the expected calibration error before and after."""
    log_probs = torch.from_numpy(np.log(np.clip(probs, 1e-30, 1.0)))
    temperature = fit_temperature(log_probs, torch.from_numpy(truth))
    return {
        "temperature": round(temperature, 6),
        "fitted_on": f"{clips} validation clips",
        "ece_validation": [reliability(probs, truth).ece,
                           reliability(_tempered(probs, temperature), truth).ece],
    }  # fmt: skip


def _tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.log(np.clip(probs, 1e-30, 1.0)) / temperature, axis=1)


def _metadata(
    metas: list[ModelMetadata],
    paths: Sequence[Path],
    weights: list[float],
    calibration: dict | None,
    test_metrics: dict | None,
) -> ModelMetadata:
    extra = dict(metas[0].extra)
    for meta in metas[1:]:  # speaker mode travels with the first member that has it
        if "speaker_head" in meta.extra and "speaker_head" not in extra:
            extra.update(speaker_head=meta.extra["speaker_head"], speaker=meta.extra["speaker"])
    for key, value in (("calibration", calibration), ("test_metrics", test_metrics)):
        extra.pop(key, None)  # the first member's figures, not the ensemble's
        if value:
            extra[key] = json.dumps(value, sort_keys=True)
    extra["ensemble"] = json.dumps([
        {"model": path.name, "weight": weight, "model_info": meta.extra.get("model")}
        for path, weight, meta in zip(paths, weights, metas, strict=True)
    ], sort_keys=True)  # fmt: skip
    heads = sorted({meta.extra.get("head", "") for meta in metas} - {""})
    if len(heads) > 1:
        extra["head"] = ",".join(heads)
    pools = sorted({str(meta.extra_json("pool", "all")) for meta in metas})
    if len(pools) > 1:  # some members pool over speech only, some over every frame
        extra["pool"] = ",".join(pools)
    dynamic = all(meta.dynamic_length for meta in metas)
    return replace(metas[0], extra=extra, dynamic_length=dynamic)


def _runner(model: onnx.ModelProto, meta: ModelMetadata) -> Callable[[np.ndarray], np.ndarray]:
    """A CPU session as rows -> float64 probabilities, :data:`CHUNK` rows a run (validation
    sets are large)."""
    run = session_runner(model.SerializeToString(), meta.input_name, meta.probs_name)
    return lambda rows: run(rows, chunk=CHUNK).astype(np.float64)


def _windows(clips: Sequence[Clip], window: int) -> np.ndarray:
    return parity_inputs(list(clips), window).astype(np.float32)


def _member_checks(paths, originals, replaced, shared_probs, inputs, truth) -> list[MemberCheck]:
    """Each member's validation accuracy on its own encoder and on the shared one (the same
    figure where no encoder weight changed); ModelError if one loses more than a point."""
    checks = []
    for path, own, changed, probs in zip(paths, originals, replaced, shared_probs, strict=True):
        after = float(np.mean(probs.argmax(1) == truth))
        before = onnx_accuracy(own, inputs, truth) if changed else after
        if accuracy_lost(before, after, ACCURACY_DROP):
            raise ModelError(
                f"{path.name} on the shared encoder: validation accuracy {after:.3f} against "
                f"{before:.3f} on its own (more than {ACCURACY_DROP:.0%} lost); refused"
            )
        checks.append(MemberCheck(path.name, before, after))
    return checks
