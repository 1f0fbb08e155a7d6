"""How a turn's decoded samples become the audio of its samples: edge silence trimmed, loudness normalized.

`transforms.maps.TurnAudio` decides it once per turn (where each turn is decoded) and stores the decision as
data (`audio_offset`, `num_samples`, `gain`); whoever decodes the turn again (`ContextualSamples`) applies the
stored decision with `apply_preparation`, so every format trains on exactly the same samples.

Loudness is measured with pyloudnorm (ITU-R BS.1770, the `quality` extra), never with hand-written filters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from csm_synthetic.errors import InputError
from csm_synthetic.measures import trimmed_bounds

LOUDNESS_EXTRA = "quality"  # the optional dependencies that hold pyloudnorm


@dataclass(frozen=True)
class AudioPreparation:
    trim_to: float | None = None  # seconds of silence each edge keeps (None: no trimming)
    loudness: float | None = None  # target integrated loudness, LUFS (None: samples keep their level)

    def decide(self, samples: np.ndarray, rate: int) -> tuple[int, int, np.float32]:
        """(offset, number of samples, gain) for one turn's decoded samples."""
        first, stop = trimmed_bounds(samples, rate, self.trim_to) if self.trim_to is not None else (0, len(samples))
        gain = np.float32(1.0)
        if self.loudness is not None:
            gain = loudness_gain(samples[first:stop], rate, self.loudness)
        return first, stop - first, gain


def apply_preparation(samples: np.ndarray, offset: int, num_samples: int, gain: float) -> np.ndarray:
    """A turn's prepared samples from its decoded samples and the stored decision."""
    part = samples[offset : offset + num_samples]
    return part if gain == 1.0 else part * np.float32(gain)


def require_pyloudnorm() -> None:
    """Refuse --normalize_loudness before any work when pyloudnorm is not installed."""
    try:
        import pyloudnorm  # noqa: F401
    except ImportError:
        raise InputError(
            f"--normalize_loudness needs pyloudnorm: install the '{LOUDNESS_EXTRA}' extra "
            f"(uv sync --extra {LOUDNESS_EXTRA})"
        ) from None


def integrated_loudness(samples: np.ndarray, rate: int) -> float | None:
    """Integrated loudness in LUFS (None for audio shorter than one 400 ms gating block, or silence)."""
    import pyloudnorm

    try:
        loudness = pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))
    except ValueError:  # shorter than the gating block
        return None
    return float(loudness) if np.isfinite(loudness) else None


def loudness_gain(samples: np.ndarray, rate: int, target: float) -> np.float32:
    """The factor that brings the samples to `target` LUFS (1 when their loudness cannot be measured)."""
    loudness = integrated_loudness(samples, rate)
    return np.float32(1.0 if loudness is None else 10 ** ((target - loudness) / 20))
