"""Backbone loading and frontends, on tiny random configs and (where present) real Whisper."""

import numpy as np
import pytest
import torch

from ser.errors import ModelError
from ser.training.backbones import backbone_from_config, load_backbone
from ser.training.encoding import backbone_fingerprint
from ser.training.heads import LayerMix, build_head, valid_frames

from synth import WHISPER_TINY, voiced


@pytest.mark.parametrize(
    ("fixture", "family", "layers", "frames"), [("tiny_wav2vec2", "waveform", 3, 49),
                                                ("tiny_whisper", "whisper", 3, 50)],
)  # fmt: skip
def test_backbones_return_every_layer(request, fixture, family, layers, frames):
    backbone = load_backbone(str(request.getfixturevalue(fixture)))
    assert backbone.family == family and backbone.num_layers == layers
    assert backbone.num_frames(16_000) == frames
    with torch.inference_mode():
        states = backbone(torch.from_numpy(np.stack([voiced(150, 1.0), voiced(250, 1.0)])))
    assert states.shape == (2, layers, frames, 32)
    assert not any(p.requires_grad for p in backbone.parameters())


def test_whisper_logmel_matches_the_feature_extractor(tiny_whisper):
    from transformers import WhisperFeatureExtractor

    backbone = load_backbone(str(tiny_whisper))
    audio = voiced(180, 2.0)
    expected = WhisperFeatureExtractor.from_pretrained(tiny_whisper)(
        audio, sampling_rate=16_000, return_tensors="np", padding=False
    )["input_features"][0]
    actual = backbone.frontend(torch.from_numpy(audio)[None])[0].numpy()
    assert actual.shape == expected.shape == (80, 200)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_whisper_dynamic_range_floors_quiet_background(tiny_whisper):
    """A narrower range clamps each window's log-mel at its peak minus the range: noise 45 dB
    under a tone reaches the 40 dB model as the floor, the 80 dB model as spectrum."""
    rng = np.random.default_rng(0)
    tone = (0.1 * np.sin(2 * np.pi * 300 * np.arange(16_000) / 16_000)).astype(np.float32)
    noise = np.float32(0.1 * 10 ** (-45 / 20)) * rng.standard_normal(tone.size)
    pair = torch.from_numpy(np.stack([tone, tone + noise.astype(np.float32)]))
    whisper = load_backbone(str(tiny_whisper))
    narrow = load_backbone(str(tiny_whisper), whisper_dynamic_range_db=40.0)
    with torch.inference_mode():
        wide_mel, narrow_mel = whisper.frontend(pair), narrow.frontend(pair)
    # the model's input is (log10 power + 4) / 4, so 10 dB is 0.25 and 1 dB 0.025
    torch.testing.assert_close(narrow_mel.amin(dim=(1, 2)), narrow_mel.amax(dim=(1, 2)) - 1.0)
    assert (wide_mel.amin(dim=(1, 2)) >= wide_mel.amax(dim=(1, 2)) - 2.0 - 1e-6).all()
    moved = lambda mel: ((mel[0] - mel[1]).abs() > 0.025).float().mean().item()  # noqa: E731
    assert moved(narrow_mel) < 0.01 and moved(wide_mel) > 0.5
    assert backbone_fingerprint(narrow) != backbone_fingerprint(whisper)


def test_dynamic_range_from_config_and_refusals(tiny_whisper, tiny_wav2vec2):
    older = backbone_from_config({"backbone": str(tiny_whisper), "whisper_pad_30s": False})
    assert older.dynamic_range_db == 80.0  # a checkpoint from before the option: Whisper's
    config = {"backbone": str(tiny_whisper), "whisper_dynamic_range_db": 50.0}
    assert backbone_from_config(config).frontend.floor == 5.0
    with pytest.raises(ModelError, match="Whisper encoders only"):
        load_backbone(str(tiny_wav2vec2), whisper_dynamic_range_db=40.0)
    for bad in (float("nan"), float("inf"), 0.0, 19.9, 1e300, True, "60"):
        with pytest.raises(ModelError, match="give a number from 20 to 200"):
            load_backbone(str(tiny_whisper), whisper_dynamic_range_db=bad)
    as_int = load_backbone(str(tiny_whisper), whisper_dynamic_range_db=60)
    as_numpy = load_backbone(str(tiny_whisper), whisper_dynamic_range_db=np.float64(60))
    assert backbone_fingerprint(as_int) == backbone_fingerprint(as_numpy)  # one cache entry
    assert as_int.describe()["whisper_dynamic_range_db"] == 60.0
    with pytest.raises(ModelError, match="unreadable whisper_dynamic_range_db"):
        backbone_from_config({"backbone": str(tiny_whisper), "whisper_dynamic_range_db": "x"})


def test_the_cli_bounds_are_the_api_bounds():
    from ser.training.backbones import DYNAMIC_RANGE_LIMITS_DB
    from ser.training.cli import neural

    option = next(p for p in neural.params if p.name == "whisper_dynamic_range_db")
    assert (option.type.min, option.type.max) == DYNAMIC_RANGE_LIMITS_DB


def test_whisper_padded_variant_equals_transformers_encoder(tiny_whisper):
    from transformers import WhisperFeatureExtractor, WhisperModel

    audio = voiced(180, 1.0)
    features = WhisperFeatureExtractor.from_pretrained(tiny_whisper)(
        audio, sampling_rate=16_000, return_tensors="pt"
    )["input_features"]
    encoder = WhisperModel.from_pretrained(tiny_whisper).encoder.eval()
    backbone = load_backbone(str(tiny_whisper), whisper_pad_30s=True)
    with torch.inference_mode():
        expected = encoder(features).last_hidden_state[0, :50]
        actual = backbone(torch.from_numpy(audio)[None])[0, -1]
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not WHISPER_TINY.is_dir(), reason=f"no Whisper checkpoint at {WHISPER_TINY}")
def test_real_whisper_tiny_loads_from_its_folder():
    backbone = load_backbone(str(WHISPER_TINY))
    assert (backbone.family, backbone.num_layers, backbone.hidden_size) == ("whisper", 5, 384)
    assert backbone.num_frames(64_000) == 200


def test_not_a_speech_encoder_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="a bert model is not a speech encoder"):
        load_backbone(str(tmp_path))
    with pytest.raises(ModelError, match="cannot load a model configuration"):
        load_backbone(str(tmp_path / "missing"))


def test_valid_frames_excludes_zero_padding_only():
    audio = torch.zeros(2, 3200)
    audio[0, 640:2000] = 0.1
    mask = valid_frames(audio, 320, 10)
    assert mask[0].tolist() == [False, False, True, True, True, True, True, False, False, False]
    assert mask[1].all()  # all silent: keep every frame rather than none


def test_layer_mix_and_head_shapes():
    states = torch.randn(3, 4, 20, 16)
    assert torch.equal(LayerMix(4, "last")(states), states[:, -1])
    torch.testing.assert_close(LayerMix(4, "weighted")(states), states.mean(dim=1))
    for kind in ("pooled", "reference"):
        head = build_head(kind, num_layers=4, frames=20, hidden=16, classes=8, layers="weighted")
        assert head(states, torch.ones(3, 20, dtype=torch.bool)).shape == (3, 8)
    with pytest.raises(ValueError, match="unknown head"):
        build_head("lstm", num_layers=4, frames=20, hidden=16, classes=8, layers="last")
