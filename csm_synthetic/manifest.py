"""A manifest of turns (JSONL or CSV) read into the reader's records.

One row per turn; columns (JSONL keys or the CSV header):

    conversation_id   the conversation (any string; its split comes from a hash of it, as for folders)
    turn_index        0-based position of the turn in its conversation
    speaker           0-based speaker id, or a label ("SPEAKER_01"): labels are numbered per conversation
    text              what is said
    audio             the audio file, relative to the manifest's folder (or absolute)
    start, end        optional: seconds into that file (a turn cut from a long recording); read by seeking
    language          optional: a language code (rows without one: "und")

    {"conversation_id": "ep1", "turn_index": 0, "speaker": 0, "text": "Hello.", "audio": "ep1.flac", "start": 0.0, "end": 1.8}

A file that is neither JSONL (`.jsonl`, `.ndjson`) nor CSV (`.csv`), or that lacks a required column, is
refused (`InputError`, naming the file and the columns). A row that cannot be read is a problem naming its
line; how rows become conversations is `turn_rows.read_turn_rows`. Other columns are ignored.
"""

from __future__ import annotations

import csv
import json
import os
from functools import lru_cache
from pathlib import Path

from .corpus import DEFAULT_MAX_TURN_SECONDS, Corpus, Problem, ProblemKind
from .errors import InputError
from .turn_rows import COLUMNS, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, AudioRef, TurnRow, read_turn_rows, turn_row

JSONL, CSV = "jsonl", "csv"
FORMATS = {".jsonl": JSONL, ".ndjson": JSONL, ".csv": CSV}


def manifest_format(path: Path) -> str:
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise InputError(
            f"manifest {str(path)!r} is neither JSONL nor CSV (by its name: {', '.join(FORMATS)}); columns: "
            f"{', '.join(REQUIRED_COLUMNS)} (required), {', '.join(OPTIONAL_COLUMNS)} (optional)"
        )
    return found


def check_manifest(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {str(path)!r} does not exist or is not a file")
    manifest_format(path)
    return path


def manifest_records(path: Path) -> tuple[list[tuple[int, dict | None, str]], list[str]]:
    """(line number, values or None, why not) per row, and the columns the file has."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read manifest {str(path)!r} as UTF-8 text: {error}") from error
    if manifest_format(path) == CSV:
        return csv_records(text)
    return jsonl_records(text, path)


def jsonl_records(text: str, path: Path) -> tuple[list[tuple[int, dict | None, str]], list[str]]:
    records, columns = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            records.append((number, None, f"not JSON ({error.msg})"))
            continue
        if not isinstance(values, dict):
            records.append((number, None, f"not a JSON object but {type(values).__name__}"))
            continue
        columns.update(dict.fromkeys(values))
        records.append((number, values, ""))
    if records and not columns:
        raise InputError(
            f"manifest {str(path)!r} is not JSONL: no line is a JSON object ({records[0][2]} on line "
            f"{records[0][0]}); each line holds one turn's {', '.join(REQUIRED_COLUMNS)} (required), "
            f"{', '.join(OPTIONAL_COLUMNS)} (optional)"
        )
    return records, list(columns)


def csv_records(text: str) -> tuple[list[tuple[int, dict | None, str]], list[str]]:
    reader = csv.DictReader(text.splitlines())
    records = []
    for values in reader:
        if None in values:  # more fields than the header has
            records.append((reader.line_num, None, f"{len(values) - 1 + len(values[None])} fields, the header has "
                            f"{len(reader.fieldnames)}"))
            continue
        records.append((reader.line_num, values, ""))
    return records, list(reader.fieldnames or [])


def manifest_rows(path: str | os.PathLike) -> tuple[list[TurnRow], list[Problem]]:
    """The rows of a manifest and the problems of rows that name no conversation. Raises `InputError` for a
    file that is not JSONL/CSV or lacks required columns. Parsed once per version of the file (its size and
    mtime) in a process: checking a run's source, listing its languages, fingerprinting and reading it each ask."""
    path = check_manifest(path)
    stat = path.stat()
    # rows keep working from any working folder: their audio is resolved against the folder's absolute path
    rows, problems = parsed_manifest(str(path), os.path.abspath(path.parent), stat.st_size, stat.st_mtime_ns)
    return list(rows), list(problems)


@lru_cache(maxsize=4)
def parsed_manifest(
    path: str, folder: str, size: int, mtime_ns: int
) -> tuple[tuple[TurnRow, ...], tuple[Problem, ...]]:
    """`manifest_rows` of the file at `path` as it is at `size` and `mtime_ns` (the cache key, with `folder`)."""
    path = Path(path)
    records, columns = manifest_records(path)
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise InputError(
            f"manifest {str(path)!r} lacks the required columns {missing} (it has {columns}); "
            f"required: {', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)}"
        )

    def resolve_audio(value) -> AudioRef:
        if not isinstance(value, str):
            raise ValueError(f"audio {value!r} is not a path")
        return AudioRef(str(Path(folder) / value.strip()), value.strip())

    rows, problems = [], []
    for number, values, why_not in records:
        where = f"{path.name} line {number}"
        if values is None:
            problems.append(Problem(path.name, None, ProblemKind.MALFORMED_ROW, f"{where}: {why_not}: the row is ignored"))
            continue
        row, found = turn_row({name: values.get(name) for name in COLUMNS}, where, resolve_audio, path.name)
        problems += found
        if row is not None:
            rows.append(row)
    return tuple(rows), tuple(problems)


def read_manifest(
    path: str | os.PathLike, languages: list[str] | None = None, max_turn_seconds: float = DEFAULT_MAX_TURN_SECONDS
) -> Corpus:
    """The conversations of a manifest (only those of `languages`; None: all) and every problem."""
    rows, problems = manifest_rows(path)
    return read_turn_rows(rows, problems, str(path), languages, max_turn_seconds)
