"""openSMILE eGeMAPS functionals: the hand-crafted features of the classic baseline.

Training and scoring both featurise through :class:`EgemapsExtractor`, after the shared audio
path, so the forest sees identical features in both.
"""

from __future__ import annotations

import warnings
from functools import cached_property

import numpy as np

from ser.audio import SAMPLE_RATE
from ser.errors import AudioError

FEATURE_SET = "eGeMAPSv02"


class EgemapsExtractor:
    """88 eGeMAPSv02 functionals per signal (openSMILE is imported on first use: it is slow)."""

    feature_set = FEATURE_SET

    @cached_property
    def _smile(self):
        import opensmile

        return opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )

    @property
    def feature_names(self) -> list[str]:
        return list(self._smile.feature_names)

    @property
    def version(self) -> str:
        import opensmile

        return opensmile.__version__

    def extract(self, signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Features of one mono float32 signal, as float32 ``[88]``.

        The signal is clipped to [-1, 1] first: openSMILE converts to 16-bit integers and would
        wrap samples outside that range.

        Raises:
            AudioError: when the signal is too short for openSMILE to measure.
        """
        signal = np.clip(np.asarray(signal, dtype=np.float32), -1.0, 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            frame = self._smile.process_signal(signal, sample_rate)
        features = frame.to_numpy(dtype=np.float32).reshape(-1)
        if not np.isfinite(features).all():
            seconds = signal.size / sample_rate
            raise AudioError(f"too short for eGeMAPS features ({seconds:.3f} s)")
        return features
