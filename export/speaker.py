"""Speaker mode in an exported model: frame features from the one encoder pass, and the head.

The model's graph gains two outputs, ``speaker_frames`` ``[batch, members, frames, dim]`` (each
speaker head's :meth:`~ser.training.heads.PooledHead.frame_features`) and ``frame_valid``
``[batch, frames]``, computed from the same encoder states as ``probs``; so ``ser-batch`` runs the
encoder once per item whichever head it uses. The speaker head itself (frame features centred
by their speaker's mean in, probabilities out) is a second, small ONNX graph stored base64 in the
metadata (``speaker_head``), next to a ``speaker`` record saying how to use it. Both are added to
a graph that exists already (the shipped default included): the speaker branch hangs off the
encoder states where the plain head's standardisation starts, so the plain path is untouched.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ser.corpus import Clip, label_indices
from ser.errors import ModelError
from ser.export.neural import NEURAL_TOLERANCE, module_to_onnx, parity_inputs
from ser.export.onnx_io import attach_metadata, load_onnx, read_metadata, save_model
from ser.export.optimize import accuracy_lost
from ser.export.parity import ParityError
from ser.metadata import ModelMetadata
from ser.training.backbones import SpeechEncoder, backbone_from_config, dynamic_range_of
from ser.training.checkpoint import load_checkpoint
from ser.training.heads import HeadEnsemble, valid_frames

FRAMES_NAME, VALID_NAME = "speaker_frames", "frame_valid"
OPSET = 17
PREFIX = "speaker_branch/"
DEFAULT_MIN_ITEMS = 30  # validation: speaker mode beat plain from 30 clips a speaker (20: not)
DEFAULT_MIN_SECONDS = 0.0  # the item count decides (a window is at most 4 s)
MAX_ACCURACY_DROP = 0.01


def members_of(head: nn.Module) -> list[nn.Module]:
    return list(head.members) if isinstance(head, HeadEnsemble) else [head]


class SpeakerFrames(nn.Module):
    """``audio``, encoder ``states`` -> every member's frame features and the valid-frame mask."""

    def __init__(self, head: nn.Module, samples_per_frame: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(members_of(head))
        self.samples_per_frame = samples_per_frame

    def forward(self, audio: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        valid = valid_frames(audio, self.samples_per_frame, states.shape[2])
        frames = torch.stack([m.frame_features(states, valid) for m in self.members], dim=1)
        return frames, valid.to(torch.float32)


class SpeakerScorer(nn.Module):
    """Centred frame features ``[n, members, frames, dim]`` and masks -> probabilities.

    Training centred the *states* by the speaker's mean; frame features are affine in the
    states, so centring them instead differs by each member's features of a zero state, which
    is added back here.
    """

    def __init__(self, head: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.members = nn.ModuleList(members_of(head))
        first = self.members[0]
        zero = torch.zeros(1, first.standardize.mean.shape[0], 1, first.standardize.mean.shape[2])
        with torch.no_grad():
            offsets = torch.stack([m.frame_features(zero)[0, 0] for m in self.members])
        self.register_buffer("offsets", offsets)  # [members, dim]
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, centred: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = valid > 0.5
        logs = [
            torch.log_softmax(m.classify_frames(centred[:, k] + self.offsets[k], mask), dim=-1)
            for k, m in enumerate(self.members)
        ]
        mean_log = torch.logsumexp(torch.stack(logs), dim=0) - np.log(len(logs))
        return torch.softmax(mean_log / self.temperature, dim=-1)


def centre(frames: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``frames`` centred by their mean over all valid frames: the batch as one speaker."""
    weights = valid.astype(np.float64)[:, None, :, None]
    mean = (frames.astype(np.float64) * weights).sum(axis=(0, 2)) / weights.sum()
    return (frames - mean[None, :, None, :]).astype(np.float32)


def states_tensor(model: onnx.ModelProto) -> str:
    """The encoder states in ``model``: the input of the plain head's standardisation."""
    for node in model.graph.node:
        if node.op_type == "Sub" and node.input[-1].endswith("standardize.mean"):
            return node.input[0]
    raise ModelError(
        "the graph has no encoder states to attach a speaker head to (no ser pooled head's "
        "standardisation); export it with ser-export neural"
    )


def branch_graph(
    head: nn.Module, samples_per_frame: int, window: int, frames: int
) -> onnx.ModelProto:
    member = members_of(head)[0]
    layers, hidden = member.standardize.mean.shape[0], member.standardize.mean.shape[2]
    example = (torch.randn(2, window) * 0.1, torch.randn(2, layers, frames, hidden))
    axes = {
        "audio": {0: "batch", 1: "samples"}, "states": {0: "batch", 2: "frames"},
        FRAMES_NAME: {0: "batch", 2: "frames"}, VALID_NAME: {0: "batch", 1: "frames"},
    }  # fmt: skip
    module = SpeakerFrames(head, samples_per_frame).eval()
    return module_to_onnx(module, example, ["audio", "states"], [FRAMES_NAME, VALID_NAME], axes)


def scorer_graph(head: nn.Module, temperature: float, frames: int) -> bytes:
    members = members_of(head)
    dim = members[0].frame_features(torch.zeros(1, *members[0].standardize.mean.shape)).shape[-1]
    example = (torch.randn(2, len(members), frames, dim), torch.ones(2, frames))
    axes = {"centred": {0: "n", 2: "frames"}, "valid": {0: "n", 1: "frames"}, "probs": {0: "n"}}
    module = SpeakerScorer(head, temperature).eval()
    return module_to_onnx(
        module, example, ["centred", "valid"], ["probs"], axes
    ).SerializeToString()


def splice(model: onnx.ModelProto, branch: onnx.ModelProto, audio_name: str) -> onnx.ModelProto:
    """``model`` with ``branch``'s nodes fed by its audio input and encoder states."""
    states = states_tensor(model)
    if any(output.name == FRAMES_NAME for output in model.graph.output):
        raise ModelError("the model already has a speaker head; export from the plain graph")
    rename = {"audio": audio_name, "states": states}

    def name(value: str) -> str:
        if not value:
            return value
        return rename.get(value, value if value in (FRAMES_NAME, VALID_NAME) else PREFIX + value)

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for initializer in branch.graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(initializer)
        copy.name = name(initializer.name)
        out.graph.initializer.append(copy)
    for node in branch.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = PREFIX + node.name
        copy.ClearField("input")
        copy.input.extend(name(value) for value in node.input)
        copy.ClearField("output")
        copy.output.extend(name(value) for value in node.output)
        out.graph.node.append(copy)
    out.graph.output.extend(
        output for output in branch.graph.output if output.name in (FRAMES_NAME, VALID_NAME)
    )
    onnx.checker.check_model(out)
    return out


@dataclass(frozen=True)
class SpeakerParity:
    """The speaker branch against PyTorch, and what the model's own encoder changes.

    ``branch`` and ``head`` compare the exported pieces with PyTorch on the same inputs (the
    graph's own encoder states, then its frame features): export faithfulness, gated.
    ``encoder`` compares frame features from the graph's encoder with PyTorch's encoder: zero
    for a fresh export, larger for a graph whose encoder weights were rounded (the shipped
    default keeps the 0.1.0 int8 file's weights); that is judged by accuracy instead.
    """

    branch: float
    head: float
    plain: float
    encoder: float
    windows: int

    def ok(self, tolerance: float) -> bool:
        return max(self.branch, self.head, self.plain) <= tolerance


def attach_speaker_head(
    model: onnx.ModelProto,
    metadata: ModelMetadata,
    head: nn.Module,
    *,
    encoder: SpeechEncoder,
    window: int,
    temperature: float,
    min_items: int,
    min_seconds: float,
    record: dict,
) -> onnx.ModelProto:
    """``model`` with the speaker branch spliced in and the speaker head in its metadata."""
    frames = encoder.num_frames(window)
    branch = branch_graph(head, encoder.samples_per_frame, window, frames)
    out = splice(model, branch, metadata.input_name)
    spec = {
        "frames_name": FRAMES_NAME, "valid_name": VALID_NAME, "members": len(members_of(head)),
        "min_items": min_items, "min_seconds": min_seconds, **record,
    }  # fmt: skip
    scorer = scorer_graph(head, temperature, frames)
    extra = {**metadata.extra, "speaker": spec, "speaker_head": base64.b64encode(scorer).decode()}
    return attach_metadata(out, replace(metadata, extra=extra))


def _sessions(attached: onnx.ModelProto) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    """ONNX Runtime sessions (CPU) of the attached graph and of the speaker head it carries."""
    cpu = ["CPUExecutionProvider"]
    speaker_head = read_metadata(attached).extra["speaker_head"]
    return (
        ort.InferenceSession(attached.SerializeToString(), providers=cpu),
        ort.InferenceSession(base64.b64decode(speaker_head), providers=cpu),
    )


def speaker_parity(
    original: bytes,
    attached: onnx.ModelProto,
    encoder: nn.Module,
    head: nn.Module,
    temperature: float,
    inputs: np.ndarray,
) -> SpeakerParity:
    """The attached graph against PyTorch, piece by piece (all inputs taken as one speaker),
    and its plain probabilities against the original graph's."""
    metadata = read_metadata(attached)
    audio, probs_name = metadata.input_name, metadata.probs_name
    probe = onnx.ModelProto()
    probe.CopyFrom(attached)
    states_name = states_tensor(attached)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(states_name, 1, None))
    session, scorer = _sessions(probe)
    before = ort.InferenceSession(original, providers=["CPUExecutionProvider"])
    names = [probs_name, FRAMES_NAME, VALID_NAME, states_name]
    plain, frames, valid, states = session.run(names, {audio: inputs})
    plain_before = before.run([probs_name], {audio: inputs})[0]
    centred = centre(frames, valid > 0.5)
    onnx_probs = scorer.run(["probs"], {"centred": centred, "valid": valid})[0]
    branch = SpeakerFrames(head, encoder.samples_per_frame)
    with torch.inference_mode():
        tensor = torch.from_numpy(inputs)
        from_graph = branch(tensor, torch.from_numpy(states))[0].numpy()
        from_torch = branch(tensor, encoder(tensor))[0].numpy()
        torch_probs = SpeakerScorer(head, temperature)(
            torch.from_numpy(centred), torch.from_numpy(valid)
        ).numpy()
    return SpeakerParity(
        float(np.abs(frames - from_graph).max()),
        float(np.abs(onnx_probs - torch_probs).max()),
        float(np.abs(plain - plain_before).max()),
        float(np.abs(frames - from_torch).max()),
        len(inputs),
    )


def describe(parity: SpeakerParity) -> str:
    return (
        f"{parity.windows} windows: frame features from the graph's states max |d| "
        f"{parity.branch:.2e}, speaker probabilities max |dp| {parity.head:.2e}, plain "
        f"probabilities against the original graph max |dp| {parity.plain:.2e}; frame "
        f"features, the graph's encoder against PyTorch's: max |d| {parity.encoder:.2e}"
    )


@dataclass(frozen=True)
class SpeakerExport:
    parity: SpeakerParity
    accuracy: SpeakerAccuracy | None


@dataclass(frozen=True)
class SpeakerAccuracy:
    """Validation accuracy in speaker mode (each speaker centred by its own clips)."""

    torch: float
    onnx: float
    clips: int


def speaker_accuracy(
    attached: onnx.ModelProto,
    encoder: nn.Module,
    head: nn.Module,
    temperature: float,
    clips: Sequence[Clip],
    window: int,
    labels: Sequence[str],
) -> SpeakerAccuracy:
    """Speaker-mode accuracy on ``clips`` with PyTorch's encoder and with the graph's."""
    audio = read_metadata(attached).input_name
    session, scorer = _sessions(attached)
    inputs = parity_inputs(clips, window)
    branch, torch_head = (
        SpeakerFrames(head, encoder.samples_per_frame),
        SpeakerScorer(head, temperature),
    )
    graph_parts, torch_parts = [], []
    for start in range(0, len(inputs), 16):
        batch = inputs[start : start + 16]
        graph_parts.append(session.run([FRAMES_NAME, VALID_NAME], {audio: batch}))
        with torch.inference_mode():
            tensor = torch.from_numpy(batch)
            torch_parts.append([t.numpy() for t in branch(tensor, encoder(tensor))])
    speakers = np.array([clip.speaker for clip in clips])
    truth = label_indices(clips, labels)
    scores = []
    for parts, run in ((torch_parts, "torch"), (graph_parts, "onnx")):
        frames, valid = (np.concatenate([part[k] for part in parts]) for k in range(2))
        guess = np.empty(len(clips), dtype=int)
        for speaker in np.unique(speakers):
            rows = speakers == speaker
            centred = centre(frames[rows], valid[rows] > 0.5)
            if run == "onnx":
                probs = scorer.run(["probs"], {"centred": centred, "valid": valid[rows]})[0]
            else:
                with torch.inference_mode():
                    probs = torch_head(torch.from_numpy(centred), torch.from_numpy(valid[rows]))
            guess[rows] = np.asarray(probs).argmax(1)
        scores.append(float(np.mean(guess == truth)))
    return SpeakerAccuracy(scores[0], scores[1], len(clips))


def export_speaker(
    model_path: Path,
    checkpoint_dir: Path,
    out_path: Path,
    *,
    parity_clips: Sequence[Clip] = (),
    validation_clips: Sequence[Clip] = (),
    min_items: int | None = None,
    min_seconds: float | None = None,
) -> SpeakerExport:
    """Attach the speaker heads of ``checkpoint_dir`` to the exported model ``model_path``.

    ``min_items`` and ``min_seconds`` (None: :data:`DEFAULT_MIN_ITEMS`,
    :data:`DEFAULT_MIN_SECONDS`) become the model's default minimum per speaker.

    Raises:
        ModelError: for a model or checkpoint that do not belong together, or a checkpoint
            trained without ``--normalize speaker``.
        ParityError: with the figures, when ONNX Runtime disagrees with PyTorch.
    """
    checkpoint = load_checkpoint(checkpoint_dir)
    config = checkpoint.config
    if checkpoint.speaker_head is None:
        raise ModelError(
            f"{checkpoint_dir}: has no speaker heads; train with ser-train neural --normalize "
            "speaker"
        )
    original = load_onnx(model_path)
    metadata = ModelMetadata.from_props(
        {prop.key: prop.value for prop in original.metadata_props}, source=str(model_path)
    )
    pool = metadata.extra_json("pool", "all")
    if pool != "all":
        raise ModelError(
            f"{model_path}: its heads pool over speech frames only (pool {pool}); speaker "
            "heads pool over every frame, so speaker mode cannot be attached to it"
        )
    window = config["window"]
    model_range, heads_range = dynamic_range_of(metadata.extra), dynamic_range_of(config)
    if (
        Path(str(metadata.extra.get("backbone", ""))).name != Path(config["backbone"]).name
        or metadata.window_s is None
        or round(metadata.window_s * metadata.sample_rate) != window
        or model_range != heads_range
    ):
        raise ModelError(
            f"{model_path} (backbone {metadata.extra.get('backbone')}, window "
            f"{metadata.window_s} s, range {model_range:g} dB) was not made with the encoder and "
            f"window of {checkpoint_dir} ({config['backbone']}, "
            f"{window / config['sample_rate']} s, {heads_range:g} dB)"
        )
    encoder = backbone_from_config(config).eval()
    speaker = config["speaker"]
    record = {
        key: speaker[key] for key in ("normalise", "bottleneck", "ensemble") if key in speaker
    } | {"manifest_hash": config["manifest_hash"], "pytorch_metrics": _speaker_scores(checkpoint)}
    attached = attach_speaker_head(
        original, metadata, checkpoint.speaker_head, encoder=encoder, window=window,
        temperature=speaker.get("temperature", 1.0),
        min_items=DEFAULT_MIN_ITEMS if min_items is None else min_items,
        min_seconds=DEFAULT_MIN_SECONDS if min_seconds is None else min_seconds, record=record,
    )  # fmt: skip
    inputs = parity_inputs(parity_clips, window)
    parity = speaker_parity(
        original.SerializeToString(), attached, encoder, checkpoint.speaker_head,
        speaker.get("temperature", 1.0), inputs,
    )  # fmt: skip
    if not parity.ok(NEURAL_TOLERANCE):
        raise ParityError(f"{out_path}: the speaker branch disagrees: {describe(parity)}")
    accuracy = None
    if validation_clips:  # the graph's own encoder may differ (rounded weights): judge it
        accuracy = speaker_accuracy(
            attached, encoder, checkpoint.speaker_head, speaker.get("temperature", 1.0),
            validation_clips, window, config["labels"],
        )  # fmt: skip
        if accuracy_lost(accuracy.torch, accuracy.onnx, MAX_ACCURACY_DROP):
            raise ParityError(
                f"{out_path}: speaker mode loses accuracy with the graph's encoder: validation "
                f"{accuracy.onnx:.4f} against {accuracy.torch:.4f} with PyTorch's"
            )
    save_model(attached, out_path)
    return SpeakerExport(parity, accuracy)


def _speaker_scores(checkpoint) -> dict:
    """The speaker heads' validation and test figures from the checkpoint's metrics.json."""
    path = checkpoint.folder / "metrics.json"
    if not path.is_file():
        return {}
    speaker = json.loads(path.read_text()).get("speaker", {})
    return {
        split: {key: speaker[split][key] for key in ("accuracy", "uar") if key in speaker[split]}
        for split in ("validation", "test")
        if split in speaker
    }
