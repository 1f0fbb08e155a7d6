"""Quality checks of turns: what a TTS, a diarizer or a mixing desk got wrong although the files are readable.

Three layers, so that each fact is computed once and caching stays correct:

- **measures** (`csm_synthetic.measures.measure_turn`): per turn, from its decoded samples, where each turn is
  decoded once (`transforms.maps.TurnAudio`; `inspect_corpus.py --measures` too): leading and trailing
  silence, share of clipped samples, level, a content hash, the speaking rate - plain numbers, no thresholds;
- **corpus decisions** (`corpus_quality`): from the measured columns of every turn, before any plan: the
  median speaking rate of each language, and which turns repeat the audio of an earlier turn;
- **turn decisions** (`turn_checks`): thresholds (`QualityChecks`) applied to one conversation's measures and
  the corpus decisions, in the plan step. A failed check is *flagged* (reported) or *dropped*: a dropped turn
  cuts its conversation just before it, by the rule for a bad turn.

Nothing here imports `datasets` or torch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from csm_synthetic.errors import InputError
from csm_synthetic.measures import letters

RATE_MIN_LETTERS = 20  # shorter texts say little about a speaking rate: they are not judged

# the checks, as reported (`check` of an entry) and as problem kinds of a dropped turn
TOO_SHORT = "too_short_turn"
SPEAKING_RATE = "speaking_rate"
EDGE_SILENCE = "edge_silence"
CLIPPING = "clipping"
NEAR_SILENT = "near_silent"
DUPLICATE_AUDIO = "duplicate_audio"
ASR_MISMATCH = "asr_mismatch"
CHECKS = (TOO_SHORT, SPEAKING_RATE, EDGE_SILENCE, CLIPPING, NEAR_SILENT, DUPLICATE_AUDIO, ASR_MISMATCH)
FLAGGED, DROPPED = "flagged", "dropped"

HELP = {
    "min_turn_seconds": f"drop a turn shorter than this ({TOO_SHORT}); 0 or none: off",
    "speaking_rate_flag": "flag a turn whose letters per second of speech are this many times above or below its "
    f"language's median ({SPEAKING_RATE}: a TTS that skipped or repeated words); none: off",
    "speaking_rate_drop": f"drop such a turn from this factor on ({SPEAKING_RATE}); none: off",
    "max_edge_silence": f"flag (or with --trim_silence, trim) leading or trailing silence longer than this, in "
    f"seconds ({EDGE_SILENCE}); none: off",
    "trim_silence": "trim leading and trailing silence down to --max_edge_silence instead of flagging it",
    "max_clipped_share": f"drop a turn with a larger share of samples at full scale ({CLIPPING}); none: off",
    "min_level_db": f"drop a turn whose level (RMS, dBFS) is below this ({NEAR_SILENT}); none: off",
    "duplicate_audio": f"drop a turn whose audio repeats an earlier turn's exactly ({DUPLICATE_AUDIO})",
    "max_cer": f"with --asr_model: drop a turn whose character error rate against its text is above this "
    f"({ASR_MISMATCH})",
    "flag_only": f"checks that only flag, never drop: any of {', '.join(CHECKS)}, or 'all'",
}


@dataclass(frozen=True)
class QualityChecks:
    """Thresholds of the checks (None: that check is off), and which checks only flag."""

    min_turn_seconds: float | None = 0.5
    speaking_rate_flag: float | None = 1.5
    speaking_rate_drop: float | None = 2.0
    max_edge_silence: float | None = 1.0
    trim_silence: bool = False
    max_clipped_share: float | None = 0.001
    min_level_db: float | None = -50.0
    duplicate_audio: bool = True
    max_cer: float | None = 0.3
    flag_only: tuple[str, ...] = ()

    def __post_init__(self):
        """Refuses values that mean nothing (an `InputError` naming the flag)."""
        for name in ("min_turn_seconds", "max_edge_silence", "max_clipped_share", "max_cer"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise InputError(f"--{name} must be >= 0 or none (got {value})")
        for name in ("speaking_rate_flag", "speaking_rate_drop"):
            value = getattr(self, name)
            if value is not None and not value >= 1:
                raise InputError(f"--{name} is a factor above or below the median: >= 1 or none (got {value})")
        unknown = set(self.flag_only) - set(CHECKS)
        if unknown:
            raise InputError(f"--flag_only: no check {sorted(unknown)}; the checks: {', '.join(CHECKS)}")
        if self.trim_silence and not self.max_edge_silence:
            raise InputError("--trim_silence trims silence down to --max_edge_silence: give that a value")

    @classmethod
    def off(cls) -> QualityChecks:
        """No check at all (`--no_quality_checks`)."""
        return cls(
            min_turn_seconds=None,
            speaking_rate_flag=None,
            speaking_rate_drop=None,
            max_edge_silence=None,
            max_clipped_share=None,
            min_level_db=None,
            duplicate_audio=False,
            max_cer=None,
        )

    def to_dict(self) -> dict:
        values = asdict(self)
        values["flag_only"] = list(self.flag_only)
        return values

    def action(self, check: str) -> str:
        """What a failed check does to its turn."""
        return FLAGGED if check in self.flag_only else DROPPED

    @property
    def trim_to(self) -> float | None:
        """Seconds of silence an edge keeps when silence is trimmed (None: audio is not trimmed)."""
        return self.max_edge_silence if self.trim_silence else None


# --- corpus decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusQuality:
    """What the checks of a turn need to know of the whole corpus (a plan parameter: plain, hashable values)."""

    rate_medians: tuple[tuple[str, float], ...] = ()  # language -> median letters per second
    duplicates: tuple[tuple[str, str, int], ...] = ()  # (audio hash, conversation id, turn index) of each first one

    def rate_median(self, language: str) -> float | None:
        return dict(self.rate_medians).get(language)

    def first_with(self) -> dict[str, tuple[str, int]]:
        """Audio hash -> (conversation id, turn index) of the first turn with that audio, for repeated audio only.
        (Built per call, never kept on the object: the object's pickle is its cache key.)"""
        return {hash_: (conversation_id, turn_index) for hash_, conversation_id, turn_index in self.duplicates}

    def to_dict(self) -> dict:
        return {
            "speaking_rate_medians": {language: round(median, 3) for language, median in self.rate_medians},
            "repeated_audio": len(self.duplicates),
        }


def corpus_quality(
    conversation_ids: Sequence[str],
    turn_indices: Sequence[int],
    languages: Sequence[str],
    texts: Sequence[str],
    speaking_rates: Sequence[float | None],
    hashes: Sequence[str | None],
) -> CorpusQuality:
    """The corpus decisions from every turn's measured columns (None for a turn whose audio is faulty).

    The median speaking rate of each language counts turns of at least `RATE_MIN_LETTERS` letters; of turns
    with the same audio hash, the first in corpus order (conversation id, turn) is the original."""
    by_language: dict[str, list[float]] = defaultdict(list)
    first_of: dict[str, tuple[str, int]] = {}
    repeated: set[str] = set()
    for conversation_id, turn, language, text, rate, hash_ in zip(
        conversation_ids, turn_indices, languages, texts, speaking_rates, hashes
    ):
        if rate is not None and letters(text) >= RATE_MIN_LETTERS:
            by_language[language].append(rate)
        if hash_ is None:
            continue
        key = (conversation_id, int(turn))
        if hash_ in first_of:
            repeated.add(hash_)
            first_of[hash_] = min(first_of[hash_], key)
        else:
            first_of[hash_] = key
    medians = tuple((language, float(np.median(rates))) for language, rates in sorted(by_language.items()))
    duplicates = tuple(sorted((hash_, *first_of[hash_]) for hash_ in repeated))
    return CorpusQuality(medians, duplicates)


# --- turn decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """A failed check of one turn (its position in the conversation): what was measured, and what it does."""

    position: int
    check: str
    value: float
    action: str  # FLAGGED or DROPPED
    message: str


@dataclass(frozen=True)
class ConversationMeasures:
    """One conversation's measured columns (None for a turn whose audio is faulty: it has no measures)."""

    conversation_id: str
    language: str
    turn_indices: Sequence[int]
    texts: Sequence[str]
    num_samples: Sequence[int]
    leading_silence: Sequence[float | None]
    trailing_silence: Sequence[float | None]
    clipped_share: Sequence[float | None]
    level_db: Sequence[float | None]
    audio_hash: Sequence[str | None]
    speaking_rate: Sequence[float | None]
    cer: Sequence[float | None] = ()


def turn_checks(
    measures: ConversationMeasures,
    checks: QualityChecks,
    corpus: CorpusQuality,
    sampling_rate: int,
    first_with: dict[str, tuple[str, int]] | None = None,
) -> list[CheckResult]:
    """Every failed check of every measured turn, in turn order (a turn may fail several). `first_with`:
    `corpus.first_with()`, built once for many conversations."""
    first_with = corpus.first_with() if first_with is None else first_with
    results = []
    for position in range(len(measures.turn_indices)):
        if measures.level_db[position] is None:
            continue  # a faulty turn: its fault cuts the conversation
        results += checks_of_turn(measures, position, checks, corpus, sampling_rate, first_with)
    return results


def checks_of_turn(
    m: ConversationMeasures,
    position: int,
    checks: QualityChecks,
    corpus: CorpusQuality,
    sampling_rate: int,
    first_with: dict[str, tuple[str, int]],
) -> list[CheckResult]:
    found = []

    def failed(check: str, value: float, message: str, action: str | None = None) -> None:
        found.append(CheckResult(position, check, float(value), action or checks.action(check), message))

    seconds = m.num_samples[position] / sampling_rate
    if checks.min_turn_seconds and seconds < checks.min_turn_seconds:
        failed(TOO_SHORT, seconds, f"lasts {seconds:.3f} s, less than --min_turn_seconds {checks.min_turn_seconds:g}")
    median = corpus.rate_median(m.language)
    rate = m.speaking_rate[position]
    if median and rate is not None and letters(m.texts[position]) >= RATE_MIN_LETTERS:
        factor = max(rate / median, median / rate) if rate > 0 else math.inf
        message = f"speaks {rate:.1f} letters/s, {factor:.2f} times off the {m.language} median {median:.1f}"
        if checks.speaking_rate_drop and factor > checks.speaking_rate_drop:
            failed(SPEAKING_RATE, rate, message + f" (--speaking_rate_drop {checks.speaking_rate_drop:g})")
        elif checks.speaking_rate_flag and factor > checks.speaking_rate_flag:
            failed(SPEAKING_RATE, rate, message + f" (--speaking_rate_flag {checks.speaking_rate_flag:g})", FLAGGED)
    edge = max(m.leading_silence[position], m.trailing_silence[position])
    if checks.max_edge_silence and not checks.trim_silence and edge > checks.max_edge_silence:
        failed(EDGE_SILENCE, edge, f"has {m.leading_silence[position]:.2f} s of silence before the speech and "
               f"{m.trailing_silence[position]:.2f} s after it (--max_edge_silence {checks.max_edge_silence:g})",
               FLAGGED)
    clipped = m.clipped_share[position]
    if checks.max_clipped_share is not None and clipped > checks.max_clipped_share:
        failed(CLIPPING, clipped, f"has {clipped:.2%} of its samples at full scale (--max_clipped_share "
               f"{checks.max_clipped_share:g})")
    level = m.level_db[position]
    if checks.min_level_db is not None and level < checks.min_level_db:
        failed(NEAR_SILENT, level, f"is near silent: {level:.1f} dBFS (--min_level_db {checks.min_level_db:g})")
    first = first_with.get(m.audio_hash[position]) if checks.duplicate_audio else None
    if first is not None and first != (m.conversation_id, int(m.turn_indices[position])):
        failed(DUPLICATE_AUDIO, 1.0, f"has exactly the audio of {first[0]} turn {first[1]}")
    cer = m.cer[position] if len(m.cer) else None
    if checks.max_cer is not None and cer is not None and cer > checks.max_cer:
        failed(ASR_MISMATCH, cer, f"its ASR transcript differs from its text by {cer:.1%} of characters "
               f"(--max_cer {checks.max_cer:g})")
    return found


def normalized_characters(text: str) -> str:
    """Text as compared by the character error rate: lower case, letters and digits, single spaces."""
    words = "".join(character if character.isalnum() else " " for character in text.lower()).split()
    return " ".join(words)


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Edits (insertions, deletions, substitutions) that turn `hypothesis` into `reference`, per reference
    character, after `normalized_characters` (1.0 for an empty reference with any hypothesis)."""
    reference, hypothesis = normalized_characters(reference), normalized_characters(hypothesis)
    if not reference:
        return 0.0 if not hypothesis else 1.0
    columns = np.arange(len(hypothesis) + 1)
    found = np.array(list(hypothesis), dtype=object)
    previous = columns
    for row, expected in enumerate(reference, start=1):
        best = np.empty_like(previous)  # without insertions: substitution (or match) or deletion
        best[0] = row
        best[1:] = np.minimum(previous[:-1] + (found != expected), previous[1:] + 1)
        previous = np.minimum.accumulate(best - columns) + columns  # then any run of insertions
    return float(previous[-1]) / len(reference)
