"""Measures of one turn's decoded audio, plain numbers without thresholds: leading and trailing silence,
share of clipped samples, level, a content hash and the speaking rate (letters per second of speech).

The prepare steps measure each turn where they decode it (`transforms.maps.TurnAudio`) and decide with
thresholds there (`transforms.core.quality`); `inspect_corpus.py --measures` shows their distributions, so
that thresholds can be chosen before preparing. Energy-based, no model; numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xxhash

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


def frame_length(rate: int) -> int:
    return max(1, round(FRAME_SECONDS * rate))


def frame_energies(samples: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of squares and number of samples of each `FRAME_SECONDS` frame (the last may be shorter); one pass
    in float32 (a frame is a few hundred samples: its sum loses nothing a level in dB shows)."""
    length = frame_length(rate)
    full = len(samples) // length * length
    framed = samples[:full].reshape(-1, length)
    energies = np.einsum("ij,ij->i", framed, framed).astype(np.float64)
    counts = np.full(len(energies), length)
    if full < len(samples):
        tail = samples[full:]
        energies = np.r_[energies, float(np.dot(tail, tail))]
        counts = np.r_[counts, len(tail)]
    return energies, counts


def levels_db(energies: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of frames with these energies and sample counts (floored at `LEVEL_FLOOR_DB`)."""
    return 10 * np.log10(np.maximum(energies / np.maximum(counts, 1), 10 ** (LEVEL_FLOOR_DB / 10)))


def frame_levels_db(samples: np.ndarray, rate: int) -> np.ndarray:
    """RMS level of each `FRAME_SECONDS` frame, dBFS."""
    return levels_db(*frame_energies(samples, rate))


def voiced_span(levels: np.ndarray, length: int, num_samples: int) -> tuple[int, int]:
    """(first, stop) sample of the part between the edge silences, from the frame levels (frames more than
    `SILENCE_BELOW_PEAK_DB` below the loudest are silence); (n, n) when all is silence."""
    voiced = np.flatnonzero(levels > max(levels.max(initial=LEVEL_FLOOR_DB) - SILENCE_BELOW_PEAK_DB, LEVEL_FLOOR_DB))
    if not len(voiced):
        return num_samples, num_samples
    return int(voiced[0]) * length, min(num_samples, (int(voiced[-1]) + 1) * length)


def voiced_bounds(samples: np.ndarray, rate: int) -> tuple[int, int]:
    """(first, stop) sample of the part of `samples` between the edge silences (energy-based)."""
    return voiced_span(frame_levels_db(samples, rate), frame_length(rate), len(samples))


def letters(text: str) -> int:
    """What a speaking rate counts: letters and digits (not spaces or punctuation)."""
    return sum(character.isalnum() for character in text)


def audio_hash(samples: np.ndarray) -> str:
    """A 128-bit hash of the samples (xxHash3: a few GB/s, so hashing costs next to nothing)."""
    return xxhash.xxh3_128_hexdigest(np.ascontiguousarray(samples, dtype=np.float32).data)


def clipped_count(samples: np.ndarray) -> int:
    """Samples at or beyond `FULL_SCALE`; counted only when the peak reaches it (most turns: two reductions)."""
    if not len(samples) or max(float(samples.max()), -float(samples.min())) < FULL_SCALE:
        return 0
    return int(np.count_nonzero(np.abs(samples) >= FULL_SCALE))


def measure_turn(samples: np.ndarray, rate: int, text: str) -> TurnMeasures:
    """The measures of one turn's decoded samples (mono float32, at `rate`) and its text."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    energies, counts = frame_energies(samples, rate)
    first, stop = voiced_span(levels_db(energies, counts), frame_length(rate), len(samples))
    mean_square = float(energies.sum()) / max(len(samples), 1)
    return TurnMeasures(
        leading_silence=first / rate,
        trailing_silence=(len(samples) - stop) / rate,
        clipped_share=clipped_count(samples) / max(len(samples), 1),
        level_db=max(10 * math.log10(mean_square), LEVEL_FLOOR_DB) if mean_square > 0 else LEVEL_FLOOR_DB,
        audio_hash=audio_hash(samples),
        speaking_rate=letters(text) / (max(stop - first, 1) / rate),
    )


def trimmed_bounds(samples: np.ndarray, rate: int, keep_seconds: float) -> tuple[int, int]:
    """(first, stop) of the samples with each edge's silence cut down to `keep_seconds`."""
    first, stop = voiced_bounds(samples, rate)
    if first >= stop:  # all silence: nothing to tell speech from; left as it is (the level check sees it)
        return 0, len(samples)
    keep = round(keep_seconds * rate)
    return max(0, first - keep), min(len(samples), stop + keep)
