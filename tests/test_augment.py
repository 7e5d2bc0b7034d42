"""Training views: the room background lands at the ratio asked for, and old caches stay valid."""

import numpy as np
import pytest

from ser.training.augment import Augmentation, room_background

from synth import voiced


def speech_rms(signal: np.ndarray) -> float:
    frames = signal[: signal.size // 512 * 512].reshape(-1, 512).astype(np.float64)
    energy = (frames**2).mean(axis=1)
    return float(np.sqrt(energy[energy >= energy.max() * 10**-3.5].mean()))


@pytest.mark.parametrize("seed", range(6))
def test_the_background_sits_at_a_ratio_inside_the_range(seed):
    clip = np.concatenate(
        [np.zeros(8000, np.float32), voiced(180.0, 2.0), np.zeros(8000, np.float32)]
    )
    noise = room_background(clip, np.random.default_rng(seed), (10.0, 20.0))
    assert noise.shape == clip.shape and noise.dtype == np.float32
    ratio = 20 * np.log10(speech_rms(clip) / np.sqrt(np.mean(noise.astype(np.float64) ** 2)))
    assert 10.0 - 1e-6 <= ratio <= 20.0 + 1e-6  # the silence around the clip is not "speech"
    again = room_background(clip, np.random.default_rng(seed), (10.0, 20.0))
    assert np.array_equal(noise, again)


def test_the_background_is_low_frequency_more_often_than_white():
    clip = voiced(150.0, 2.0)
    low_share = []
    for seed in range(20):
        spectrum = np.abs(np.fft.rfft(room_background(clip, np.random.default_rng(seed), (20, 20))))
        low_share.append(spectrum[: spectrum.size // 8].sum() / spectrum.sum())
    assert np.median(low_share) > 0.25  # white noise puts 1/8 of its magnitude there


def test_a_silent_or_tiny_clip_gets_no_nan():
    rng = np.random.default_rng(0)
    assert np.all(np.isfinite(room_background(np.zeros(16000, np.float32), rng, (5, 35))))
    assert room_background(np.zeros(100, np.float32), rng, (5, 35)).shape == (100,)


def test_views_keep_their_old_cache_keys_without_a_background():
    assert repr(Augmentation()) == (
        "Augmentation(noise_p=0.2, noise_peak_fraction=0.01, stretch_p=0.2, stretch_max=0.1)"
    )
    assert "background_p=0.5" in repr(Augmentation(background_p=0.5))
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    clip = voiced(200.0, 1.0)
    plain = Augmentation(noise_p=0, stretch_p=0).apply(clip, rng_a)
    noisy = Augmentation(noise_p=0, stretch_p=0, background_p=1.0).apply(clip, rng_b)
    assert np.array_equal(plain, clip) and not np.array_equal(noisy, clip)
