"""A summary of a raw corpus: what the builder would yield, per language and split, and what is wrong.

    summary = inspect_corpus("synthetic-dataset")       # a plain, JSON-ready dict
    print(format_summary(summary))
    summary = inspect_corpus("synthetic-dataset", measures=True)   # + the distributions of the quality measures

Only what the reader reads is read (scripts or rows, and audio headers), so a corpus of many hours is
summarised in seconds. Splits come from `split_of`, the rule the builder uses, so the numbers here are
the numbers of the dataset that `CsmSynthetic` builds with the same fractions. With `measures`, every turn
is decoded (at its file's own rate) and measured as the prepare steps measure it (`csm_synthetic.measures`):
per language, the distributions of duration, speaking rate, edge silence, clipping and level that the
quality checks of `prepare_dataset_for_training.py` judge, so thresholds can be chosen before preparing.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .audio import load_audio
from .audio_checks import check_turn_audio
from .corpus import Corpus, ProblemKind, Turn
from .measures import measure_turn
from .settings import CorpusSettings
from .sources import CorpusSource, FolderSource
from .splits import SPLITS

TOTAL = "total"
LONGEST_TURNS = 10  # turns listed under "longest_turns"
PRINTED_PROBLEMS = 20  # problems listed one by one by `format_summary`; the JSON has them all
# the measures a distribution is shown of, with their units (`csm_synthetic.measures.TurnMeasures`, + duration)
MEASURES = {
    "duration": "s",
    "speaking_rate": "letters/s",
    "leading_silence": "s",
    "trailing_silence": "s",
    "clipped_share": "share",
    "level_db": "dBFS",
}
PERCENTILES = (1, 5, 50, 95, 99)
HISTOGRAM_BINS = 30


def inspect_corpus(
    source: CorpusSource | str | os.PathLike,
    settings: CorpusSettings = CorpusSettings(),
    longest_turns: int = LONGEST_TURNS,
    measures: bool = False,
) -> dict:
    """Read a corpus folder or any source (headers only) and summarise it; see `summarize_corpus`. With
    `measures`, also decode every turn: `measures` holds the distributions of `measure_distributions`."""
    source = source if isinstance(source, CorpusSource) else FolderSource(str(source))
    source.check()
    corpus = source.read(None, settings.max_turn_seconds)
    summary = summarize_corpus(corpus, settings, longest_turns)
    summary["settings"]["max_turn_seconds"] = settings.max_turn_seconds
    if measures:
        summary["measures"] = measure_distributions(measure_corpus(corpus))
    return summary


def measure_corpus(corpus: Corpus, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Every turn decoded (at its file's own rate: resampling changes none of the measures much) and measured:
    language -> measure (`MEASURES`, + `audio_hash`) -> one value per turn. A turn whose audio cannot be
    decoded, or fails the audio checks that prepare applies (`check_turn_audio`: no samples, NaN or infinite ones,
    or beyond ±4 full scale), is left out (the prepare steps report it)."""
    from tqdm.auto import tqdm

    found: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for conversation in tqdm(corpus.conversations, desc="Measuring turns", unit="conversation", disable=not progress):
        for turn in conversation.turns:
            try:
                samples = load_audio(turn.audio_path, turn.sampling_rate, turn.start, turn.end)
            except (RuntimeError, OSError, ValueError, EOFError):
                continue
            if check_turn_audio(samples, turn.sampling_rate, str(turn.audio_path)) is not None:
                continue
            measured = measure_turn(samples, turn.sampling_rate, turn.text)
            values = found[conversation.language]
            values["duration"].append(len(samples) / turn.sampling_rate)
            for name in (*MEASURES, "audio_hash"):
                if name != "duration":
                    values[name].append(getattr(measured, name))
    return {language: {name: np.asarray(v) for name, v in values.items()} for language, values in sorted(found.items())}


def measure_distributions(measured: dict[str, dict[str, np.ndarray]]) -> dict:
    """Per language and measure: count, mean, `PERCENTILES` and a histogram (`edges`, `counts`: what
    `inspect_corpus.py --plots` draws); and how many turns repeat another turn's audio."""
    distributions = {}
    hashes: Counter[str] = Counter()
    for language, values in measured.items():
        distributions[language] = {
            name: {
                "unit": unit,
                "count": int(values[name].size),
                "mean": round(float(values[name].mean()), 4),
                **{f"p{q}": round(float(np.percentile(values[name], q)), 4) for q in PERCENTILES},
                **histogram_of(values[name]),
            }
            for name, unit in MEASURES.items()
        }
        hashes.update(values["audio_hash"].tolist())
    return {
        "by_language": distributions,
        "repeated_audio_turns": sum(count - 1 for count in hashes.values()),
    }


def summarize_corpus(
    corpus: Corpus, settings: CorpusSettings = CorpusSettings(), longest_turns: int = LONGEST_TURNS
) -> dict:
    """Counts of what a read corpus yields and of what is wrong with it, as plain JSON-ready data.

    Keys: `conversations`, `turns`, `hours` (usable ones only); `by_language` (language -> `total` and
    each split -> counts) and `by_split` (split -> counts), where counts are
    ``{"conversations", "turns", "hours"}``; `speakers` (turns per 0-based speaker id, conversations per
    number of distinct speakers); `audio_formats` (turns per "rate Hz, channels ch"); `longest_turns`;
    `dropped_conversations` / `truncated_conversations` (ids); `problems_by_kind`; `problems` (every
    `Problem.to_dict()`, in the order the reader found them).
    """
    by_language: dict[str, dict[str, _Counts]] = {}
    by_split = {split: _Counts() for split in SPLITS}
    total = _Counts()
    turns_by_speaker: Counter[int] = Counter()
    conversations_by_speaker_count: Counter[int] = Counter()
    audio_formats: Counter[str] = Counter()
    all_turns: list[tuple[str, Turn]] = []

    for conversation in corpus.conversations:
        split = settings.split_of(conversation.conversation_id)
        language = by_language.setdefault(
            conversation.language, {TOTAL: _Counts(), **{name: _Counts() for name in SPLITS}}
        )
        for counts in (language[TOTAL], language[split], by_split[split], total):
            counts.add(len(conversation.turns), conversation.duration)
        turns_by_speaker.update(turn.speaker for turn in conversation.turns)
        conversations_by_speaker_count[len({turn.speaker for turn in conversation.turns})] += 1
        audio_formats.update(_audio_format(turn) for turn in conversation.turns)
        all_turns.extend((conversation.conversation_id, turn) for turn in conversation.turns)

    kept = {conversation.conversation_id for conversation in corpus.conversations}
    with_problems = {problem.conversation_id for problem in corpus.problems}
    truncated = {problem.conversation_id for problem in corpus.problems if problem.kind == ProblemKind.TRUNCATED}
    longest = sorted(all_turns, key=lambda item: (-item[1].duration, item[0], item[1].index))[:longest_turns]

    return {
        "input_dir": str(corpus.root),
        "settings": {"validation_fraction": settings.validation_fraction, "test_fraction": settings.test_fraction},
        **total.to_dict(),
        "by_language": {
            language: {name: counts.to_dict() for name, counts in splits.items()}
            for language, splits in sorted(by_language.items())
        },
        "by_split": {split: counts.to_dict() for split, counts in by_split.items()},
        "speakers": {
            "turns_by_speaker": {str(speaker): n for speaker, n in sorted(turns_by_speaker.items())},
            "conversations_by_speaker_count": {
                str(count): n for count, n in sorted(conversations_by_speaker_count.items())
            },
        },
        "audio_formats": dict(audio_formats.most_common()),
        "longest_turns": [
            {
                "conversation_id": conversation_id,
                "turn_index": turn.index,
                "speaker": turn.speaker,
                "duration": turn.duration,
                "audio_path": turn.audio_path,
            }
            for conversation_id, turn in longest
        ],
        "dropped_conversations": sorted(with_problems - kept),
        "truncated_conversations": sorted(truncated & kept),
        "problems_by_kind": dict(sorted(Counter(problem.kind for problem in corpus.problems).items())),
        "problems": [problem.to_dict() for problem in corpus.problems],
    }


def format_summary(summary: dict, max_problems: int = PRINTED_PROBLEMS) -> str:
    """The summary as text for a terminal (every problem is in the JSON; here only the first few)."""
    settings = summary["settings"]
    notes = [f"validation fraction {settings['validation_fraction']:g}", f"test fraction {settings['test_fraction']:g}"]
    if "max_turn_seconds" in settings:
        notes.append(f"turns over {settings['max_turn_seconds']:g} s are faults")
    lines = [
        f"Corpus {summary['input_dir']}: {summary['conversations']} usable conversations, "
        f"{summary['turns']} turns, {summary['hours']:.3f} audio hours",
        f"({'; '.join(notes)})",
        "",
        f"{'language':<12}{'split':<12}{'conversations':>14}{'turns':>10}{'hours':>10}",
    ]
    for language, splits in summary["by_language"].items():
        for name in (*SPLITS, TOTAL):
            lines.append(_counts_row(language, name, splits[name]))
    for split, counts in summary["by_split"].items():
        lines.append(_counts_row("all", split, counts))
    lines.append(_counts_row("all", TOTAL, summary))

    speakers = summary["speakers"]
    lines += [
        "",
        "turns by speaker: " + _join_counts(speakers["turns_by_speaker"]),
        "conversations by number of speakers: " + _join_counts(speakers["conversations_by_speaker_count"]),
        "audio formats (turns): " + _join_counts(summary["audio_formats"]),
    ]
    if summary["longest_turns"]:
        lines.append("longest turns:")
        lines += [
            f"  {turn['duration']:8.2f} s  {turn['conversation_id']} turn {turn['turn_index']} (speaker {turn['speaker']})"
            for turn in summary["longest_turns"]
        ]

    problems = summary["problems"]
    lines += [
        "",
        f"problems: {len(problems)} ({len(summary['dropped_conversations'])} conversations dropped, "
        f"{len(summary['truncated_conversations'])} truncated)",
    ]
    lines += [f"  {kind:<24}{count:>8}" for kind, count in summary["problems_by_kind"].items()]
    for problem in problems[:max_problems]:
        where = problem["conversation_id"]
        if problem["turn_index"] is not None:
            where += f" turn {problem['turn_index']}"
        lines.append(f"  {where}: [{problem['kind']}] {problem['problem']}")
    if len(problems) > max_problems:
        lines.append(f"  ... and {len(problems) - max_problems} more (all are in the --json output)")
    if "measures" in summary:
        lines.append(format_measures(summary["measures"]))
    return "\n".join(lines)


def histogram_of(values: np.ndarray) -> dict:
    """`HISTOGRAM_BINS` equal bins from the smallest value to the largest: their `edges` and `counts`."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high))
    return {"edges": [float(edge) for edge in edges], "counts": [int(count) for count in counts]}


def format_measures(measures: dict) -> str:
    """The distributions of `measure_distributions` as a table per language."""
    lines = ["", "quality measures (every turn decoded):",
             f"{'language':<10}{'measure':<18}{'unit':<11}{'turns':>7}" + "".join(f"{f'p{q}':>10}" for q in PERCENTILES)]
    for language, by_measure in measures["by_language"].items():
        for name, numbers in by_measure.items():
            lines.append(
                f"{language:<10}{name:<18}{numbers['unit']:<11}{numbers['count']:>7}"
                + "".join(f"{numbers[f'p{q}']:>10.4g}" for q in PERCENTILES)
            )
    lines.append(f"turns repeating another turn's audio exactly: {measures['repeated_audio_turns']}")
    return "\n".join(lines)


def write_summary(summary: dict, path: str | os.PathLike) -> Path:
    """Write the summary as UTF-8 JSON (parent folders are created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


class _Counts:
    def __init__(self) -> None:
        self.conversations = 0
        self.turns = 0
        self.seconds = 0.0

    def add(self, turns: int, seconds: float) -> None:
        self.conversations += 1
        self.turns += turns
        self.seconds += seconds

    def to_dict(self) -> dict:
        return {"conversations": self.conversations, "turns": self.turns, "hours": self.seconds / 3600}


def _audio_format(turn: Turn) -> str:
    return f"{turn.sampling_rate} Hz, {turn.channels} ch"


def _counts_row(language: str, split: str, counts: dict) -> str:
    return f"{language:<12}{split:<12}{counts['conversations']:>14}{counts['turns']:>10}{counts['hours']:>10.3f}"


def _join_counts(counts: dict) -> str:
    return ", ".join(f"{key}: {value}" for key, value in counts.items()) or "-"
