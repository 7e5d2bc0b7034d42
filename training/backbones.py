"""Frozen speech encoders behind one interface: raw 16 kHz audio in, every layer's states out.

Two families:

- wav2vec2-style raw-waveform encoders (wav2vec2, HuBERT, WavLM, data2vec-audio): the waveform
  is normalised per window as the model's feature extractor says (``do_normalize``);
- the Whisper encoder: an 80-bin log-mel frontend computed in torch (so it exports to ONNX with
  the rest), fed the window as it is rather than padded to Whisper's 30 s (``whisper_pad_30s``
  keeps the padded variant for comparison), with Whisper's 80 dB log-mel dynamic range or a
  narrower one (``whisper_dynamic_range_db``: quiet background under the speech then reaches
  the model as the floor it saw in training, not as spectrum).

Every backbone returns hidden states ``[batch, layers, frames, hidden]`` (the input embeddings
first, then each transformer layer), and says how many samples one output frame covers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ser.audio import SAMPLE_RATE
from ser.errors import ModelError
from ser.training.progress import quiet_library_bars

WAVEFORM_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer")
WHISPER_TYPES = ("whisper",)
DEFAULT_BACKBONE = "facebook/wav2vec2-base"
HUB_PROBE_TIMEOUT_S = 5.0
WHISPER_DYNAMIC_RANGE_DB = 80.0  # Whisper's log-mel floor: 8 log10 units under the peak
DYNAMIC_RANGE_LIMITS_DB = (20.0, 200.0)


class SpeechEncoder(nn.Module):
    """A frozen encoder. ``forward(audio [batch, samples]) -> [batch, layers, frames, hidden]``."""

    family: str
    name_or_path: str
    hidden_size: int
    num_layers: int
    samples_per_frame: int

    def num_frames(self, samples: int) -> int:
        raise NotImplementedError

    def freeze(self) -> SpeechEncoder:
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self.eval()

    def source(self) -> str:
        """The id or path to record in checkpoints (a local folder becomes absolute)."""
        path = Path(self.name_or_path)
        return str(path.resolve()) if path.exists() else self.name_or_path

    def cache_identity(self) -> str:
        """What makes this encoder's states what they are, as text for cache keys: its source
        and configuration (an encoder with frontend settings adds them)."""
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        return {
            "backbone": self.source(),
            "family": self.family,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "samples_per_frame": self.samples_per_frame,
        }


class WaveformEncoder(SpeechEncoder):
    """wav2vec2, HuBERT, WavLM, data2vec-audio: the model eats the normalised waveform."""

    family = "waveform"

    def __init__(self, model: nn.Module, name_or_path: str, do_normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.name_or_path = name_or_path
        self.do_normalize = do_normalize
        config = model.config
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_hidden_layers + 1
        self.samples_per_frame = math.prod(config.conv_stride)

    def num_frames(self, samples: int) -> int:
        lengths = self.model._get_feat_extract_output_lengths(torch.tensor([samples]))
        return int(lengths[0])

    def cache_identity(self) -> str:
        return f"{self.source()}|{self.model.config.to_json_string()}|"

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if self.do_normalize:  # as Wav2Vec2FeatureExtractor: zero mean, unit variance per input
            mean = audio.mean(dim=1, keepdim=True)
            var = audio.var(dim=1, keepdim=True, unbiased=False)
            audio = (audio - mean) / torch.sqrt(var + 1e-7)
        outputs = self.model(audio, output_hidden_states=True)
        return torch.stack(outputs.hidden_states, dim=1)


class LogMel(nn.Module):
    """Whisper's log-mel spectrogram (n_fft 400, hop 160, 80 bins) with the STFT as a convolution.

    A fixed-kernel ``conv1d`` gives the same numbers as ``torch.stft`` and exports to any ONNX
    opset and runtime; the mel filters come from the checkpoint's feature extractor.
    """

    def __init__(
        self,
        mel_filters: np.ndarray,
        n_fft: int = 400,
        hop: int = 160,
        dynamic_range_db: float = WHISPER_DYNAMIC_RANGE_DB,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.floor = dynamic_range_db / 10.0  # log10 power units under the window's peak
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * freqs * torch.arange(n_fft, dtype=torch.float64)[None, :] / n_fft
        kernel = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])
        self.register_buffer("dft", kernel[:, None, :].float(), persistent=False)
        filters = torch.as_tensor(np.asarray(mel_filters), dtype=torch.float32)  # [freqs, mels]
        self.register_buffer("mel", filters.T.contiguous(), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        padded = nn.functional.pad(audio[:, None, :], (self.n_fft // 2, self.n_fft // 2), "reflect")
        spectrum = nn.functional.conv1d(padded, self.dft, stride=self.hop)
        real, imag = spectrum.chunk(2, dim=1)
        power = (real**2 + imag**2)[:, :, :-1]  # Whisper drops the last frame
        log_spec = torch.clamp(self.mel @ power, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(log_spec, peak - self.floor) + 4.0) / 4.0


class WhisperEncoderBackbone(SpeechEncoder):
    """The encoder of a Whisper checkpoint over a short window, without the 30 s padding."""

    family = "whisper"

    def __init__(
        self,
        encoder: nn.Module,
        mel_filters: np.ndarray,
        name_or_path: str,
        pad_30s: bool = False,
        dynamic_range_db: float = WHISPER_DYNAMIC_RANGE_DB,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.dynamic_range_db = float(dynamic_range_db)  # checked by load_backbone
        self.frontend = LogMel(mel_filters, dynamic_range_db=self.dynamic_range_db)
        self.name_or_path = name_or_path
        self.pad_30s = pad_30s
        self.hidden_size = encoder.config.d_model
        self.num_layers = encoder.config.encoder_layers + 1
        self.samples_per_frame = self.frontend.hop * 2
        self.max_samples = encoder.config.max_source_positions * self.samples_per_frame

    def num_frames(self, samples: int) -> int:
        return (samples // self.frontend.hop - 1) // 2 + 1

    def cache_identity(self) -> str:
        text = f"{self.source()}|{self.encoder.config.to_json_string()}|{self.pad_30s}"
        if self.dynamic_range_db != WHISPER_DYNAMIC_RANGE_DB:  # Whisper's own keeps older keys
            text += f"|range{self.dynamic_range_db!r}"  # a float: 60, 60.0, np.float64(60) alike
        return text

    def describe(self) -> dict[str, object]:
        """The frontend this encoder really ran, over what a training config asked for."""
        return {
            **super().describe(),
            "whisper_pad_30s": self.pad_30s,
            "whisper_dynamic_range_db": self.dynamic_range_db,
        }

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        frames = self.num_frames(audio.shape[1])
        if audio.shape[1] > self.max_samples:
            raise ModelError(f"Whisper windows are at most {self.max_samples / SAMPLE_RATE:.0f} s")
        if self.pad_30s:
            audio = nn.functional.pad(audio, (0, self.max_samples - audio.shape[1]))
        encoder = self.encoder
        hidden = nn.functional.gelu(encoder.conv1(self.frontend(audio)))
        hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + encoder.embed_positions.weight[: hidden.shape[1]]
        states = [hidden]
        for layer in encoder.layers:
            hidden = layer(hidden, None)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            states.append(hidden)
        states[-1] = encoder.layer_norm(states[-1])
        return torch.stack(states, dim=1)[:, :, :frames]


def backbone_from_config(config: Mapping[str, object]) -> SpeechEncoder:
    """The frozen encoder a checkpoint's ``config.json`` was trained with (older ones lack the
    dynamic range: Whisper's own)."""
    return load_backbone(
        str(config["backbone"]),
        whisper_pad_30s=bool(config.get("whisper_pad_30s", False)),
        whisper_dynamic_range_db=dynamic_range_of(config),
    )


def load_backbone(
    name_or_path: str,
    *,
    whisper_pad_30s: bool = False,
    whisper_dynamic_range_db: float = WHISPER_DYNAMIC_RANGE_DB,
) -> SpeechEncoder:
    """Load a pretrained speech encoder (a hub id or a local folder) and freeze it.

    Raises:
        ModelError: when ``name_or_path`` cannot be loaded or is not a supported speech encoder,
            or a dynamic range is asked of a waveform encoder; without network, in seconds
            (see :func:`local_files_only`).
    """
    from transformers import AutoConfig

    whisper_dynamic_range_db = check_dynamic_range(whisper_dynamic_range_db)
    quiet_library_bars()
    local_only = local_files_only(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path, local_files_only=local_only)
    except (OSError, ValueError, json.JSONDecodeError) as error:
        reason = " ".join(str(error).split())[:300]
        raise ModelError(f"{name_or_path}: cannot load a model configuration ({reason})") from None
    model_type = getattr(config, "model_type", "")
    if model_type not in (*WHISPER_TYPES, *WAVEFORM_TYPES):
        supported = ", ".join((*WAVEFORM_TYPES, *WHISPER_TYPES))
        raise ModelError(
            f"{name_or_path}: a {model_type or 'unknown'} model is not a speech encoder "
            f"(supported: {supported})"
        )
    try:
        if model_type in WHISPER_TYPES:
            backbone: SpeechEncoder = _load_whisper(
                name_or_path, whisper_pad_30s, whisper_dynamic_range_db, local_only
            )
        elif whisper_dynamic_range_db != WHISPER_DYNAMIC_RANGE_DB:
            raise ModelError(
                f"{name_or_path}: a {model_type} model has no log-mel frontend; "
                "the dynamic range applies to Whisper encoders only"
            )
        else:
            backbone = _load_waveform(name_or_path, local_only)
    except OSError as error:
        reason = " ".join(str(error).split())[:300]
        raise ModelError(f"{name_or_path}: cannot load the model weights ({reason})") from None
    return backbone.freeze()


def dynamic_range_of(extra: Mapping[str, object]) -> float:
    """The Whisper dynamic range a checkpoint config or a model's metadata (JSON text) records;
    those from before the option, and waveform encoders: Whisper's own 80 dB.

    Raises:
        ModelError: when the recorded value is not a number.
    """
    value = extra.get("whisper_dynamic_range_db", WHISPER_DYNAMIC_RANGE_DB)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ModelError(f"unreadable whisper_dynamic_range_db {value!r}") from None


def check_dynamic_range(value: object) -> float:
    """``value`` as a float number of dB within :data:`DYNAMIC_RANGE_LIMITS_DB` (the CLI's
    bounds, for the Python API too; click lets nan through).

    Raises:
        ModelError: for anything else.
    """
    low, high = DYNAMIC_RANGE_LIMITS_DB
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise ModelError(f"a dynamic range of {value!r} dB: give a number from {low:g} to {high:g}")
    return float(number)


def local_files_only(name_or_path: str) -> bool:
    """Whether to load without the network, failing in seconds where the network is needed.

    A local folder, and a hub id already in the Hugging Face cache, load from disk with no
    network at all. Any other hub id must be downloaded: in offline mode (``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE``), or when one short request cannot reach the hub, this raises one
    line at once instead of letting huggingface_hub retry for most of a minute.

    Raises:
        ModelError: when the model is neither on disk nor downloadable now.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return True
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelError(f"{name_or_path}: cannot load a model configuration (no such folder)")
    from huggingface_hub import constants, get_session, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return True
    hint = "give a local folder with --backbone, or download it once with internet"
    if _offline_mode():
        raise ModelError(
            f"{name_or_path}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"offline mode is on (HF_HUB_OFFLINE); {hint}"
        )
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as error:  # DNS, refused, timeout, proxy: any transport failure
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise ModelError(
            f"{name_or_path}: cannot reach {constants.ENDPOINT} ({reason}) and it is not in the "
            f"Hugging Face cache; {hint}"
        ) from None
    return False


def _offline_mode() -> bool:
    """huggingface_hub's own test, read now rather than when it was imported."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").upper() in {"1", "ON", "YES", "TRUE"} for name in names)


def _load_waveform(name_or_path: str, local_only: bool) -> WaveformEncoder:
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(
        name_or_path, dtype=torch.float32, local_files_only=local_only
    )
    try:
        extractor = AutoFeatureExtractor.from_pretrained(name_or_path, local_files_only=local_only)
        do_normalize = bool(extractor.do_normalize)
    except (OSError, ValueError, AttributeError):
        do_normalize = True  # wav2vec2-base and most fine-tuned checkpoints normalise
    return WaveformEncoder(model, name_or_path, do_normalize)


def _load_whisper(
    name_or_path: str, pad_30s: bool, dynamic_range_db: float, local_only: bool
) -> WhisperEncoderBackbone:
    from transformers import WhisperFeatureExtractor, WhisperModel

    model = WhisperModel.from_pretrained(
        name_or_path, dtype=torch.float32, local_files_only=local_only
    )
    try:
        extractor = WhisperFeatureExtractor.from_pretrained(
            name_or_path, local_files_only=local_only
        )
    except (OSError, ValueError):
        extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    return WhisperEncoderBackbone(
        model.encoder, extractor.mel_filters, name_or_path, pad_30s, dynamic_range_db
    )
