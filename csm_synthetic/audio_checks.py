"""Whether a turn's decoded audio can be trained on: one rule for every place that decodes turns.

`transforms.maps.TurnAudio` decodes every turn once; what is wrong with it becomes a `TurnFault` carried as
data in the turn's row (never an exception), and the plan (`plan_conversation`) cuts the conversation just
before the first faulty turn, by the reader's rule for a bad turn. `inspect_corpus --measures` leaves such a
turn out of its distributions, and `verify_shard` checks prepared audio against the same bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .corpus import ProblemKind

# Full scale is 1.0. Float files may overshoot it a little (mixing, resampling); a sample beyond 4.0 (+12 dB)
# is no recording but a broken file or a wrong scale (e.g. 16-bit integers stored as floats).
MAX_ABS_SAMPLE = 4.0


@dataclass(frozen=True)
class TurnFault:
    """What is wrong with one turn's audio: a `ProblemKind` and a message naming the file."""

    kind: str
    message: str


def check_turn_audio(samples: np.ndarray, sampling_rate: int, name: str) -> TurnFault | None:
    """The fault of a turn's decoded samples (file `name`), or None when they can be trained on."""
    if not len(samples):
        return TurnFault(ProblemKind.EMPTY_AUDIO, f"{name} decodes to no samples")
    bad = ~(np.abs(samples) <= MAX_ABS_SAMPLE)  # NaN compares False: one pass finds NaN, inf and overshoot
    if not bad.any():
        return None
    first = int(np.argmax(bad)) / sampling_rate
    non_finite = int(np.count_nonzero(~np.isfinite(samples)))
    if non_finite:
        message = f"{name} holds {non_finite} NaN or infinite samples (the first at {first:.3f} s)"
        return TurnFault(ProblemKind.NON_FINITE_AUDIO, message)
    return TurnFault(
        ProblemKind.OUT_OF_RANGE_AUDIO,
        f"{name} holds {int(np.count_nonzero(bad))} samples beyond ±{MAX_ABS_SAMPLE:g} full scale (peak "
        f"{float(np.max(np.abs(samples))):.3g}, the first at {first:.3f} s)",
    )


def decoding_fault(name: str, error: Exception) -> TurnFault:
    """A file whose header was readable but whose audio cannot be decoded (e.g. a damaged compressed body)."""
    return TurnFault(ProblemKind.UNREADABLE_AUDIO, f"cannot decode {name}: {error}")
