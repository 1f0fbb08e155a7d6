"""Read a raw corpus (the layout of CORPUS.md) into plain records and a list of problems.

Only scripts and audio *headers* are read here; audio is decoded later, by whoever needs samples.

Policy for faults:
- Anything that could misalign text and audio (script/audio counts or numbers differ, a file named for
  the other speaker, a script line not in ``[N]: text`` form, a missing script) drops the whole
  conversation: it yields no turns.
- A single bad turn (empty text, audio unreadable, empty or too long) cuts the conversation just before
  it: the turns before stay (their context is whole), the bad turn and everything after it are dropped.
- Leftover files next to the data are reported and otherwise ignored; so is a conversation without any turn.
- Symbolic links to folders and files are followed. A link that leads back to a folder above it (a cycle),
  to a folder already read through another path, or nowhere is reported and not followed.
Every fault becomes a `Problem` naming the conversation and, where there is one, the 0-based turn.

The builder's cache fingerprint hashes the files that `find_conversation_dirs` and `segments_entries`
list - the very traversal this reader uses - so what is read is what is fingerprinted.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import soundfile as sf

from .audio import audio_header, span_frames
from .errors import InputError

SCRIPT_NAME = "vibevoice-podcast-script.txt"
SEGMENTS_DIR = "segments"
AUDIO_SUFFIXES = (".wav", ".flac")
DEFAULT_MAX_TURN_SECONDS = 60.0
ALL_LANGUAGES = "all"  # the config / selection of every language folder
NOT_A_LANGUAGE = ("_", ".")  # name prefixes of folders at the root that are no language (`_meta/`, hidden ones)

# "[2]: Danke, schön hier zu sein."
_SCRIPT_LINE = re.compile(r"^\[(\d+)\]:(.*)$")
# 001_speaker1.wav, 1_speaker1.wav, segment_0001_speaker1.wav, 0001_spk1.wav, 1_spk1.wav
_AUDIO_STEM = re.compile(r"^(?:segment_)?(\d+)_(?:speaker|spk)(\d+)$")


class ProblemKind:
    """The kinds of fault the reader reports (the `kind` of a `Problem`)."""

    MISSING_SCRIPT = "missing_script"
    UNREADABLE_SCRIPT = "unreadable_script"
    MALFORMED_LINE = "malformed_line"
    COUNT_MISMATCH = "count_mismatch"
    DUPLICATE_TURN_NUMBER = "duplicate_turn_number"
    SPEAKER_MISMATCH = "speaker_mismatch"
    EMPTY_TEXT = "empty_text"
    UNREADABLE_AUDIO = "unreadable_audio"
    EMPTY_AUDIO = "empty_audio"
    TOO_LONG_AUDIO = "too_long_audio"
    UNEXPECTED_FILE = "unexpected_file"
    TRUNCATED = "conversation_truncated"
    EMPTY_CONVERSATION = "empty_conversation"
    # the traversal
    SYMLINK_CYCLE = "symlink_cycle"
    DUPLICATE_FOLDER = "duplicate_folder"
    BROKEN_LINK = "broken_link"
    UNREADABLE_FOLDER = "unreadable_folder"
    # found by the prepare steps, which decode the audio and tokenize the text (`transforms`)
    NON_FINITE_AUDIO = "non_finite_audio"
    OUT_OF_RANGE_AUDIO = "out_of_range_audio"
    SPECIAL_TOKEN_IN_TEXT = "special_token_in_text"
    # turn rows of a manifest or a `datasets` dataset (`csm_synthetic.turn_rows`)
    MALFORMED_ROW = "malformed_row"
    UNKNOWN_SPEAKER = "unknown_speaker"
    MISSING_TURN = "missing_turn"
    MISSING_AUDIO = "missing_audio"
    BAD_SPAN = "bad_span"
    SPAN_PAST_END = "span_past_end"
    OVERLAPPING_SPAN = "overlapping_span"
    MIXED_LANGUAGES = "mixed_languages"


@dataclass(frozen=True)
class Problem:
    conversation_id: str
    turn_index: int | None  # 0-based, None when the problem concerns the whole conversation
    kind: str
    message: str

    def to_dict(self) -> dict:
        return {
            "conversation_id": self.conversation_id,
            "turn_index": self.turn_index,
            "kind": self.kind,
            "problem": self.message,
        }

    def __str__(self) -> str:
        where = self.conversation_id if self.turn_index is None else f"{self.conversation_id} turn {self.turn_index}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Turn:
    index: int  # 0-based position in the conversation
    speaker: int  # 0-based: script speaker 1 -> 0
    text: str
    audio_path: str
    sampling_rate: int
    channels: int
    frames: int  # of the turn: its span's when it is a span of the file
    start: float | None = None  # seconds into the file where the turn starts (None: the file's start)
    end: float | None = None  # seconds into the file where it ends (None: the file's end)

    @property
    def duration(self) -> float:
        return self.frames / self.sampling_rate


@dataclass(frozen=True)
class Conversation:
    conversation_id: str  # folder path relative to the corpus root, POSIX form
    language: str
    turns: tuple[Turn, ...]

    @property
    def duration(self) -> float:
        return sum(turn.duration for turn in self.turns)


@dataclass(frozen=True)
class Corpus:
    root: str
    conversations: tuple[Conversation, ...]  # only those with at least one usable turn, sorted by id
    problems: tuple[Problem, ...]

    @property
    def languages(self) -> list[str]:
        return sorted({conversation.language for conversation in self.conversations})


@dataclass(frozen=True)
class ScriptLine:
    speaker_number: int  # 1-based, as written in the script
    text: str


@dataclass(frozen=True)
class AudioFile:
    turn_number: int  # 1-based, as written in the file name
    speaker_number: int
    path: Path


class ConversationFault(Exception):
    """A fault that makes the whole conversation unusable; carries its problems."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


# --- finding conversations ------------------------------------------------------------------------


def is_language_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(NOT_A_LANGUAGE)


def find_language_dirs(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if is_language_dir(path))


def find_conversation_dirs(root: Path, languages: list[str] | None = None) -> tuple[list[Path], list[Problem]]:
    """Every folder (any depth) under the language folders of `root` that holds a `segments/` folder, in id
    order, and the problems of the traversal. `languages`: only these language folders (None: all).

    Symbolic links are followed, each folder is read once: a link back to a folder above it (a cycle), a
    second path to a folder already read, or a link to nothing is reported instead. Paths keep the links
    (ids are the paths as seen from the root); only the cycle check resolves them.
    """
    traversal = _Traversal(root)
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(NOT_A_LANGUAGE) or (languages is not None and entry.name not in languages):
            continue
        if entry.is_dir():
            traversal.walk(entry, (os.path.realpath(root),))
        elif is_broken_link(entry):  # a language folder on storage that is not mounted
            traversal.report(entry, ProblemKind.BROKEN_LINK, broken_link_message(entry))
    # by the POSIX string, which is the order of conversation ids ("a-b" < "a/c"; as Path parts it is the reverse)
    return sorted(traversal.found, key=lambda path: path.as_posix()), traversal.problems


class _Traversal:
    def __init__(self, root: Path):
        self.root = root
        self.found: list[Path] = []
        self.problems: list[Problem] = []
        self.seen: dict[str, Path] = {}  # real path of each folder read -> the path it was read as

    def walk(self, folder: Path, above: tuple[str, ...]) -> None:
        real = os.path.realpath(folder)
        if real in above:
            self.report(folder, ProblemKind.SYMLINK_CYCLE, f"links to {real}, a folder above it (a cycle): skipped")
            return
        if real in self.seen:
            first = conversation_id_of(self.seen[real], self.root)
            self.report(folder, ProblemKind.DUPLICATE_FOLDER, f"leads to {real}, already read as {first}: skipped")
            return
        self.seen[real] = folder
        if (folder / SEGMENTS_DIR).is_dir():
            self.found.append(folder)
            return  # a conversation's own folders hold no further conversations
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as error:
            self.report(folder, ProblemKind.UNREADABLE_FOLDER, f"cannot list the folder: {error}")
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                self.walk(Path(entry.path), (*above, real))
            elif is_broken_link(Path(entry.path)):
                self.report(Path(entry.path), ProblemKind.BROKEN_LINK, broken_link_message(Path(entry.path)))

    def report(self, path: Path, kind: str, message: str) -> None:
        self.problems.append(Problem(conversation_id_of(path, self.root), None, kind, message))


def is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def broken_link_message(path: Path) -> str:
    return f"{path.name} is a link to {os.readlink(path)}, which does not exist (storage not mounted?)"


def segments_entries(segments_dir: Path) -> list[Path]:
    """What a conversation's `segments/` folder holds, by name: the files the reader reads (and reports)."""
    return sorted(segments_dir.iterdir())


def conversation_id_of(conversation_dir: Path, root: Path) -> str:
    return PurePosixPath(conversation_dir.relative_to(root)).as_posix()


# --- parsing --------------------------------------------------------------------------------------


def parse_script(text: str, conversation_id: str) -> list[ScriptLine]:
    """Parse a script (BOM, CRLF and blank lines allowed). Raises `ConversationFault` on a bad line."""
    lines = []
    problems = []
    # split on line ends only: str.splitlines() would also cut a line at \x0c, \x85 or \u2028 inside the text
    for raw in text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not raw.strip():
            continue
        match = _SCRIPT_LINE.match(raw.strip())
        if match is None or int(match.group(1)) < 1:
            problems.append(
                Problem(
                    conversation_id,
                    len(lines),
                    ProblemKind.MALFORMED_LINE,
                    f"{SCRIPT_NAME} line {raw.strip()[:60]!r} is not in the form '[N]: text' (N >= 1)",
                )
            )
            lines.append(ScriptLine(0, ""))  # keep counting so later problems name the right turn
            continue
        lines.append(ScriptLine(int(match.group(1)), match.group(2).strip()))
    if problems:
        raise ConversationFault(problems)
    return lines


def parse_audio_name(name: str) -> tuple[int, int] | None:
    """(turn number, speaker number) from an audio file name, or None if it is not one."""
    path = PurePosixPath(name)
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        return None
    match = _AUDIO_STEM.match(path.stem)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def read_script(segments_dir: Path, conversation_id: str) -> list[ScriptLine]:
    script_path = segments_dir / SCRIPT_NAME
    if not script_path.is_file():
        raise ConversationFault(
            [Problem(conversation_id, None, ProblemKind.MISSING_SCRIPT, f"no {SCRIPT_NAME} in {SEGMENTS_DIR}/")]
        )
    try:
        text = script_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConversationFault(
            [Problem(conversation_id, None, ProblemKind.UNREADABLE_SCRIPT, f"cannot read {SCRIPT_NAME}: {error}")]
        ) from error
    return parse_script(text, conversation_id)


def list_audio_files(segments_dir: Path, conversation_id: str) -> tuple[list[AudioFile], list[Problem]]:
    """Audio files of a conversation, sorted by turn number, and problems for leftover files and broken links.

    Raises `ConversationFault` when the folder cannot be listed."""
    audio_files, problems = [], []
    try:
        entries = segments_entries(segments_dir)
    except OSError as error:
        raise ConversationFault(
            [Problem(conversation_id, None, ProblemKind.UNREADABLE_FOLDER, f"cannot list {SEGMENTS_DIR}/: {error}")]
        ) from error
    for entry in entries:
        if is_broken_link(entry):
            problems.append(Problem(conversation_id, None, ProblemKind.BROKEN_LINK, broken_link_message(entry)))
            continue
        if entry.name == SCRIPT_NAME:
            continue
        numbers = parse_audio_name(entry.name) if entry.is_file() else None
        if numbers is None:
            problems.append(
                Problem(conversation_id, None, ProblemKind.UNEXPECTED_FILE, f"ignored unexpected file {entry.name!r}")
            )
            continue
        audio_files.append(AudioFile(numbers[0], numbers[1], entry))
    audio_files.sort(key=lambda audio: audio.turn_number)
    return audio_files, problems


def pair_script_with_audio(
    lines: list[ScriptLine], audio_files: list[AudioFile], conversation_id: str
) -> list[tuple[ScriptLine, AudioFile]]:
    """Pair script line i with audio turn number i. Raises `ConversationFault` if they could be misaligned."""
    by_number: dict[int, list[AudioFile]] = defaultdict(list)
    for audio in audio_files:
        by_number[audio.turn_number].append(audio)

    problems = []
    for number, files in sorted(by_number.items()):
        if len(files) > 1:
            names = ", ".join(file.path.name for file in files)
            problems.append(
                Problem(
                    conversation_id,
                    number - 1,
                    ProblemKind.DUPLICATE_TURN_NUMBER,
                    f"several audio files for turn number {number}: {names}",
                )
            )
    for number in range(1, len(lines) + 1):
        if number not in by_number:
            problems.append(
                Problem(
                    conversation_id,
                    number - 1,
                    ProblemKind.COUNT_MISMATCH,
                    f"script line {number} has no audio file ({len(lines)} script lines, {len(audio_files)} audio files)",
                )
            )
    for number in sorted(set(by_number) - set(range(1, len(lines) + 1))):
        problems.append(
            Problem(
                conversation_id,
                None,
                ProblemKind.COUNT_MISMATCH,
                f"audio file {by_number[number][0].path.name} has no script line "
                f"({len(lines)} script lines, {len(audio_files)} audio files)",
            )
        )
    if problems:
        raise ConversationFault(problems)

    pairs = [(line, by_number[number][0]) for number, line in enumerate(lines, start=1)]
    mismatched = [
        Problem(
            conversation_id,
            index,
            ProblemKind.SPEAKER_MISMATCH,
            f"script line {index + 1} is speaker [{line.speaker_number}] but its audio is {audio.path.name}",
        )
        for index, (line, audio) in enumerate(pairs)
        if line.speaker_number != audio.speaker_number
    ]
    if mismatched:
        raise ConversationFault(mismatched)
    return pairs


def read_turn(
    index: int, line: ScriptLine, audio: AudioFile, conversation_id: str, max_turn_seconds: float
) -> tuple[Turn | None, Problem | None]:
    """Build a turn from its script line and its audio file's header; a bad turn gives (None, problem)."""
    if not line.text:
        return None, Problem(conversation_id, index, ProblemKind.EMPTY_TEXT, f"script line {index + 1} has no text")
    return turn_from_header(
        conversation_id, index, line.speaker_number - 1, line.text, audio.path, audio.path.name, max_turn_seconds
    )


def turn_from_header(
    conversation_id: str,
    index: int,
    speaker: int,
    text: str,
    path: str | os.PathLike,
    name: str,
    max_turn_seconds: float,
    start: float | None = None,
    end: float | None = None,
) -> tuple[Turn | None, Problem | None]:
    """A turn whose audio is the file at `path` (the span `start`-`end` seconds of it when given), checked from
    the file's header: a bad turn gives (None, problem). `name` names the audio in messages."""

    def bad(kind: str, message: str) -> tuple[None, Problem]:
        return None, Problem(conversation_id, index, kind, message)

    try:
        info = audio_header(str(path))
    except (RuntimeError, OSError, sf.LibsndfileError) as error:
        if not os.path.exists(path):
            return bad(ProblemKind.MISSING_AUDIO, f"{name}: no such file")
        return bad(ProblemKind.UNREADABLE_AUDIO, f"cannot read {name}: {error}")
    if info.frames <= 0 or info.samplerate <= 0:
        return bad(ProblemKind.EMPTY_AUDIO, f"{name} holds no audio")
    first, stop = span_frames(start, end, info.samplerate, info.frames)
    if stop > info.frames:
        return bad(
            ProblemKind.SPAN_PAST_END,
            f"{name}: the span {describe_span(start, end)} ends past the end of the file ({info.frames / info.samplerate:.3f} s)",
        )
    if stop - first <= 0:
        return bad(ProblemKind.BAD_SPAN, f"{name}: the span {describe_span(start, end)} holds no audio")
    duration = (stop - first) / info.samplerate
    if duration > max_turn_seconds:
        return bad(
            ProblemKind.TOO_LONG_AUDIO,
            f"{name} lasts {duration:.1f} s, more than the {max_turn_seconds:g} s allowed for a turn",
        )
    turn = Turn(
        index=index,
        speaker=speaker,
        text=text,
        audio_path=str(path),
        sampling_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(stop - first),
        start=start,
        end=end,
    )
    return turn, None


def describe_span(start: float | None, end: float | None) -> str:
    return f"{'start' if start is None else f'{start:g}'}-{'end' if end is None else f'{end:g}'} s"


def truncation(conversation_id: str, first_dropped: int, num_turns: int) -> Problem:
    """The record of a conversation cut before its bad turn `first_dropped` (of turns 0 to `num_turns` - 1).

    The reader and the prepare steps (which find bad turns when decoding audio or tokenizing text) both
    cut by this rule and report it with this record.
    """
    return Problem(
        conversation_id,
        first_dropped,
        ProblemKind.TRUNCATED,
        f"kept turns 0-{first_dropped - 1}, dropped turns {first_dropped}-{num_turns - 1} of {num_turns}"
        if first_dropped
        else f"dropped all {num_turns} turns",
    )


def read_conversation(
    conversation_dir: Path, root: Path, max_turn_seconds: float = DEFAULT_MAX_TURN_SECONDS
) -> tuple[Conversation, list[Problem]]:
    """Read one conversation. Its `turns` are empty when it is unusable; problems say why."""
    conversation_id = conversation_id_of(conversation_dir, root)
    language = PurePosixPath(conversation_id).parts[0]
    segments_dir = conversation_dir / SEGMENTS_DIR
    problems = []
    try:
        audio_files, problems = list_audio_files(segments_dir, conversation_id)
        lines = read_script(segments_dir, conversation_id)
        pairs = pair_script_with_audio(lines, audio_files, conversation_id)
    except ConversationFault as fault:
        return Conversation(conversation_id, language, ()), problems + fault.problems
    if not pairs:  # a script without lines and no audio: say so rather than drop it silently
        empty = Problem(conversation_id, None, ProblemKind.EMPTY_CONVERSATION, f"{SCRIPT_NAME} has no lines, no audio")
        return Conversation(conversation_id, language, ()), problems + [empty]

    turns = []
    for index, (line, audio) in enumerate(pairs):
        turn, problem = read_turn(index, line, audio, conversation_id, max_turn_seconds)
        if problem is not None:
            problems += [problem, truncation(conversation_id, index, len(pairs))]
            break
        turns.append(turn)
    return Conversation(conversation_id, language, tuple(turns)), problems


def read_corpus(
    input_dir: str | os.PathLike,
    languages: list[str] | None = None,
    max_turn_seconds: float = DEFAULT_MAX_TURN_SECONDS,
) -> Corpus:
    """Read every conversation under `input_dir` (optionally only some language folders)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"corpus folder {str(root)!r} does not exist or is not a folder")
    conversation_dirs, problems = find_conversation_dirs(root, languages)
    conversations = []
    for conversation_dir in conversation_dirs:
        conversation, found = read_conversation(conversation_dir, root, max_turn_seconds)
        problems.extend(found)
        if conversation.turns:
            conversations.append(conversation)
    problems.sort(key=lambda problem: problem.conversation_id)  # stable: each conversation's in the order found
    return Corpus(str(root), tuple(conversations), tuple(problems))
