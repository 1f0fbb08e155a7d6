"""Rows of turns -> the reader's records: what a manifest (`manifest.py`) and a `datasets` dataset of turns
(`dataset_input.py`) share.

A row names its conversation, its 0-based turn, speaker, text and audio (a file, or the span `start`-`end`
seconds of one, e.g. a diarizer's turn in a long recording) and optionally its language. `turn_row` reads one
row's values; `read_turn_rows` makes conversations of them by the folder reader's rules:

- a row whose values cannot be read is a problem naming the row (`where`: "turns.jsonl line 7");
- a row without a usable conversation id is ignored, a conversation with a row without a usable turn number
  or with rows of several languages is dropped (its turn order or language is unknown);
- a conversation is cut just before its first bad turn: one that is missing or given twice, a malformed row,
  an unknown speaker, empty text, audio that is missing, unreadable, empty, too long, or a span past the end
  of its file, or a span that overlaps another turn's span of the same file (the earlier of the two);
- speakers are 0-based ids (integers or strings of digits) or labels (a diarizer's "SPEAKER_01"), which are
  numbered per conversation in the order they first speak.

Every malformed row is reported; of the faults that cut, the first one is (as the folder reader does).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .audio import span_frames
from .corpus import DEFAULT_MAX_TURN_SECONDS, Conversation, Corpus, Problem, ProblemKind, Turn, describe_span, truncation, turn_from_header

UNKNOWN_LANGUAGE = "und"  # ISO 639-2 "undetermined": a row without a language
REQUIRED_COLUMNS = ("conversation_id", "turn_index", "speaker", "text", "audio")
OPTIONAL_COLUMNS = ("start", "end", "language")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


@dataclass(frozen=True)
class AudioRef:
    """Where a row's audio is: a file path (None when there is none) and how messages name it."""

    path: str | None
    name: str


@dataclass(frozen=True)
class TurnRow:
    where: str  # names the row in messages: "turns.jsonl line 7", "train row 12"
    conversation_id: str
    turn_index: int | None  # None: unreadable (the conversation's order is unknown)
    speaker: int | str | None  # a 0-based id, a label, or None (unknown)
    text: str
    audio: AudioRef
    start: float | None
    end: float | None
    language: str | None
    faults: tuple[tuple[str, str], ...] = ()  # (ProblemKind, message) of the values that cannot be read


def is_missing(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value)
    )


def read_int(value) -> int | None:
    """A non-negative integer from an int, an integral float or a string of digits; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def read_seconds(value) -> float | None:
    """A finite, non-negative number of seconds from a number or a numeric string; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    number = float(value.strip()) if isinstance(value, str) else float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError
    return number


def read_speaker(value) -> int | str | None:
    """A 0-based speaker id (an integer or a string of digits), a label (any other non-empty string), or None."""
    number = read_int(value)
    if number is not None:
        return number
    if isinstance(value, str) and value.strip() and not value.strip().lstrip("-").replace(".", "", 1).isdigit():
        return value.strip()
    return None


def turn_row(
    values: dict, where: str, resolve_audio: Callable[[object], AudioRef], source_label: str
) -> tuple[TurnRow | None, list[Problem]]:
    """One row's values (JSON values, CSV strings or Arrow values, by our column names) as a `TurnRow`.

    A row without a usable conversation id gives (None, its problem, filed under `source_label`)."""
    conversation_id = values.get("conversation_id")
    if isinstance(conversation_id, int) and not isinstance(conversation_id, bool):
        conversation_id = str(conversation_id)
    if not isinstance(conversation_id, str) or not conversation_id.strip():
        message = f"{where}: conversation_id {conversation_id!r} is not a non-empty string: the row is ignored"
        return None, [Problem(source_label, None, ProblemKind.MALFORMED_ROW, message)]
    faults: list[tuple[str, str]] = []

    def fault(kind: str, message: str) -> None:
        faults.append((kind, message))

    turn_index = read_int(values.get("turn_index"))
    if turn_index is None:
        fault(ProblemKind.MALFORMED_ROW, f"turn_index {values.get('turn_index')!r} is not a 0-based turn number")
    speaker = read_speaker(values.get("speaker"))
    if speaker is None:
        fault(ProblemKind.UNKNOWN_SPEAKER, f"speaker {values.get('speaker')!r} is no speaker id (>= 0) or label")
    text = values.get("text")
    if not isinstance(text, str):
        fault(ProblemKind.MALFORMED_ROW, f"text {text!r} is not a string")
        text = ""
    elif not text.strip():
        fault(ProblemKind.EMPTY_TEXT, "the text is empty")
    audio = AudioRef(None, "no audio")
    if is_missing(values.get("audio")):
        fault(ProblemKind.MALFORMED_ROW, "no audio given")
    else:
        try:
            audio = resolve_audio(values["audio"])
        except ValueError as error:
            fault(ProblemKind.MALFORMED_ROW, str(error))
    span = []
    for name in ("start", "end"):
        value = values.get(name)
        try:
            span.append(None if is_missing(value) else read_seconds(value))
        except (TypeError, ValueError):
            fault(ProblemKind.MALFORMED_ROW, f"{name} {value!r} is not a number of seconds >= 0")
            span.append(None)
    start, end = span
    if start is not None and end is not None and end <= start:
        fault(ProblemKind.BAD_SPAN, f"the span {describe_span(start, end)} holds no audio (end <= start)")
    language = values.get("language")
    if is_missing(language):
        language = None
    elif not isinstance(language, str):
        fault(ProblemKind.MALFORMED_ROW, f"language {language!r} is not a string")
        language = None
    row = TurnRow(
        where, conversation_id.strip(), turn_index, speaker, text.strip(), audio, start, end,
        language.strip() if language else None, tuple(faults),
    )
    return row, []


def conversation_language(rows: list[TurnRow]) -> set[str]:
    return {row.language or UNKNOWN_LANGUAGE for row in rows}


def row_languages(rows: list[TurnRow]) -> list[str]:
    """Every language of the rows (the configs of the source besides `all`)."""
    return sorted(conversation_language(rows))


def read_turn_rows(
    rows: Iterable[TurnRow],
    problems: Iterable[Problem],
    root: str,
    languages: list[str] | None = None,
    max_turn_seconds: float = DEFAULT_MAX_TURN_SECONDS,
) -> Corpus:
    """The conversations of `rows` (only those of `languages`, None: all) and every problem, as a `Corpus`.

    `problems`: those already found (rows that could not be placed); `root` names the source."""
    by_conversation: dict[str, list[TurnRow]] = defaultdict(list)
    for row in rows:
        by_conversation[row.conversation_id].append(row)
    found = list(problems)
    conversations = []
    for conversation_id in sorted(by_conversation):
        conversation_rows = by_conversation[conversation_id]
        if languages is not None and not conversation_language(conversation_rows) & set(languages):
            continue
        conversation, conversation_problems = conversation_from_rows(conversation_id, conversation_rows, max_turn_seconds)
        found += conversation_problems
        if conversation.turns:
            conversations.append(conversation)
    found.sort(key=lambda problem: problem.conversation_id)  # stable: each conversation's in the order found
    return Corpus(root, tuple(conversations), tuple(found))


def conversation_from_rows(
    conversation_id: str, rows: list[TurnRow], max_turn_seconds: float
) -> tuple[Conversation, list[Problem]]:
    """One conversation of its rows (any order); its `turns` are empty when it is unusable."""
    languages = conversation_language(rows)
    language = min(languages)
    unplaced = [row for row in rows if row.turn_index is None]
    if unplaced:
        problems = [
            Problem(conversation_id, None, kind, f"{row.where}: {message}; the conversation's turn order is unknown: "
                    "dropped")
            for row in unplaced
            for kind, message in row.faults
        ]
        return Conversation(conversation_id, language, ()), problems
    if len(languages) > 1:
        message = f"rows of several languages {sorted(languages)}: dropped (a conversation is in one language)"
        return Conversation(conversation_id, language, ()), [
            Problem(conversation_id, None, ProblemKind.MIXED_LANGUAGES, message)
        ]
    rows = sorted(rows, key=lambda row: row.turn_index)
    problems = [
        Problem(conversation_id, row.turn_index, kind, f"{row.where}: {message}")
        for row in rows
        for kind, message in row.faults
    ]
    speakers = speaker_ids(rows)
    by_index: dict[int, list[TurnRow]] = defaultdict(list)
    for row in rows:
        by_index[row.turn_index].append(row)
    num_turns = rows[-1].turn_index + 1
    turns: list[Turn] = []
    for index in range(num_turns):
        turn, cut, found = next_turn(conversation_id, index, by_index[index], speakers, turns, max_turn_seconds)
        if turn is None:
            problems += [*found, truncation(conversation_id, cut, num_turns)]
            return Conversation(conversation_id, language, tuple(turns[:cut])), problems
        turns.append(turn)
    return Conversation(conversation_id, language, tuple(turns)), problems


def next_turn(
    conversation_id: str,
    index: int,
    rows: list[TurnRow],
    speakers: dict[str, int],
    turns: list[Turn],
    max_turn_seconds: float,
) -> tuple[Turn | None, int, list[Problem]]:
    """Turn `index` of its `rows`, after `turns`; or (None, the turn to cut before, the problems that cut there)."""
    if not rows:
        message = f"no row for turn {index} (turn_index is 0-based)"
        return None, index, [Problem(conversation_id, index, ProblemKind.MISSING_TURN, message)]
    if len(rows) > 1:
        message = f"turn {index} is given twice: {', '.join(row.where for row in rows)}"
        return None, index, [Problem(conversation_id, index, ProblemKind.DUPLICATE_TURN_NUMBER, message)]
    row = rows[0]
    if row.faults:
        return None, index, []  # reported with every malformed row
    turn, problem = turn_from_header(
        conversation_id, index, speakers[row.where], row.text, row.audio.path, f"{row.audio.name} ({row.where})",
        max_turn_seconds, row.start, row.end,
    )
    if problem is not None:
        return None, index, [problem]
    overlapped, problem = overlapping_turn(conversation_id, turns, turn)
    if overlapped is not None:
        return None, overlapped, [problem]
    return turn, index, []


def speaker_ids(rows: list[TurnRow]) -> dict[str, int]:
    """Each row's 0-based speaker id (by `where`; rows in turn order): ids as given, or, where the conversation
    names its speakers with labels, the labels numbered in the order they first speak."""
    known = [row for row in rows if row.speaker is not None]
    if all(isinstance(row.speaker, int) for row in known):
        return {row.where: row.speaker for row in known}
    numbers: dict[str, int] = {}
    for row in known:
        numbers.setdefault(str(row.speaker), len(numbers))
    return {row.where: numbers[str(row.speaker)] for row in known}


def overlapping_turn(conversation_id: str, turns: list[Turn], turn: Turn) -> tuple[int | None, Problem | None]:
    """The earliest of `turns` whose span of the same file overlaps `turn`'s, with its problem (None, None if none)."""
    first, stop = frame_span(turn)
    for earlier in turns:
        if earlier.audio_path != turn.audio_path:
            continue
        earlier_first, earlier_stop = frame_span(earlier)
        if earlier_first < stop and first < earlier_stop:
            message = (
                f"the span {describe_span(earlier.start, earlier.end)} of {turn.audio_path} overlaps that of turn "
                f"{turn.index} ({describe_span(turn.start, turn.end)}): each turn's audio would hold the other's speech"
            )
            return earlier.index, Problem(conversation_id, earlier.index, ProblemKind.OVERLAPPING_SPAN, message)
    return None, None


def frame_span(turn: Turn) -> tuple[int, int]:
    first, _ = span_frames(turn.start, turn.end, turn.sampling_rate, 0)
    return first, first + turn.frames
