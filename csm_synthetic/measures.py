"""Measures of one turn's decoded audio, plain numbers without thresholds: leading and trailing silence,
share of clipped samples, level, a content hash and the speaking rate (letters per second of speech).

The prepare steps measure each turn where they decode it (`transforms.maps.TurnAudio`) and decide with
thresholds there (`transforms.core.quality`); `inspect_corpus.py --measures` shows their distributions, so
that thresholds can be chosen before preparing. Energy-based, no model; numpy only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

FRAME_SECONDS = 0.01  # energy frames of the silence measure
SILENCE_BELOW_PEAK_DB = 50.0  # a frame this far below the turn's loudest frame is silence
FULL_SCALE = 0.999  # a sample at or beyond this magnitude is clipped
LEVEL_FLOOR_DB = -120.0  # the level of digital silence


@dataclass(frozen=True)
class TurnMeasures:
    leading_silence: float  # seconds
    trailing_silence: float
    clipped_share: float  # of samples at full scale
    level_db: float  # RMS of all samples, dBFS
    audio_hash: str  # of the decoded samples: the same audio in another file format hashes the same
    speaking_rate: float  # letters per second of speech (the turn without its edge silence)


def frame_levels_db(samples: np.ndarray, rate: int) -> np.ndarray:
    """RMS level of each `FRAME_SECONDS` frame, dBFS (the last frame may be shorter)."""
    length = max(1, round(FRAME_SECONDS * rate))
    starts = np.arange(0, len(samples), length)
    squares = np.square(samples, dtype=np.float64)
    sums = np.add.reduceat(squares, starts) if len(samples) else np.zeros(0)
    counts = np.diff(np.r_[starts, len(samples)])
    return 10 * np.log10(np.maximum(sums / np.maximum(counts, 1), 10 ** (LEVEL_FLOOR_DB / 10)))


def voiced_bounds(samples: np.ndarray, rate: int) -> tuple[int, int]:
    """(first, stop) sample of the part between the edge silences (energy-based: frames more than
    `SILENCE_BELOW_PEAK_DB` below the loudest frame are silence); (n, n) when all is silence."""
    levels = frame_levels_db(samples, rate)
    length = max(1, round(FRAME_SECONDS * rate))
    voiced = np.flatnonzero(levels > max(levels.max(initial=LEVEL_FLOOR_DB) - SILENCE_BELOW_PEAK_DB, LEVEL_FLOOR_DB))
    if not len(voiced):
        return len(samples), len(samples)
    return int(voiced[0]) * length, min(len(samples), (int(voiced[-1]) + 1) * length)


def letters(text: str) -> int:
    """What a speaking rate counts: letters and digits (not spaces or punctuation)."""
    return sum(character.isalnum() for character in text)


def audio_hash(samples: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(samples, dtype=np.float32).tobytes(), digest_size=16).hexdigest()


def measure_turn(samples: np.ndarray, rate: int, text: str) -> TurnMeasures:
    """The measures of one turn's decoded samples (mono, at `rate`) and its text."""
    first, stop = voiced_bounds(samples, rate)
    mean_square = float(np.mean(np.square(samples, dtype=np.float64))) if len(samples) else 0.0
    speech_seconds = max(stop - first, 1) / rate
    return TurnMeasures(
        leading_silence=first / rate,
        trailing_silence=(len(samples) - stop) / rate,
        clipped_share=float(np.count_nonzero(np.abs(samples) >= FULL_SCALE)) / max(len(samples), 1),
        level_db=max(10 * math.log10(mean_square), LEVEL_FLOOR_DB) if mean_square > 0 else LEVEL_FLOOR_DB,
        audio_hash=audio_hash(samples),
        speaking_rate=letters(text) / speech_seconds,
    )


def trimmed_bounds(samples: np.ndarray, rate: int, keep_seconds: float) -> tuple[int, int]:
    """(first, stop) of the samples with each edge's silence cut down to `keep_seconds`."""
    first, stop = voiced_bounds(samples, rate)
    if first >= stop:  # all silence: nothing to tell speech from; left as it is (the level check sees it)
        return 0, len(samples)
    keep = round(keep_seconds * rate)
    return max(0, first - keep), min(len(samples), stop + keep)
