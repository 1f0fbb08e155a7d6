"""Where a corpus comes from: a folder (CORPUS.md), a manifest of turns (JSONL/CSV) or a `datasets` dataset of
turns. Each source reads into the same records (`Corpus`), so the builder, `inspect_corpus` and the prepare
pipeline take any of them and give the same features, splits and problem kinds.

    source = input_source(input_manifest="turns.jsonl")      # or input_dir=..., or input_dataset=...
    source.languages()                                        # the configs besides `all`
    corpus = source.read(languages=None, max_turn_seconds=60)
    source.fingerprint(None)                                  # the builder's cache key: what the reader reads

Light: `datasets` is imported only when a dataset source is read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import (
    SEGMENTS_DIR,
    Corpus,
    conversation_id_of,
    find_conversation_dirs,
    find_language_dirs,
    read_corpus,
    segments_entries,
)
from .errors import InputError
from .turn_rows import COLUMNS

INPUT_FLAGS = ("input_dir", "input_manifest", "input_dataset")


def file_stamp(path: str | os.PathLike) -> str:
    """Size and mtime of a file (behind a link: its target's); -1 for one that cannot be read."""
    try:
        stat = os.stat(path)
        return f"{stat.st_size}\0{stat.st_mtime_ns}"
    except OSError:  # a broken link or a missing file: the reader reports it
        return "-1\0-1"


def corpus_fingerprint(data_dir: str | os.PathLike, languages: list[str] | None) -> str:
    """Hash of what the folder reader reads: each conversation's id and the path, size and mtime of every entry
    of its `segments/` (behind links: their targets'), found by the reader's own traversal.

    A changed corpus gets a fresh cache, not a stale one, also where the change is behind a symbolic link;
    files that are no part of a conversation (an output or cache folder inside the corpus root, `_meta/`)
    change nothing. Languages enter through the conversation ids: a language folder without a conversation
    yields no rows.
    """
    root = Path(data_dir)
    hasher = hashlib.sha256()
    conversation_dirs, _ = find_conversation_dirs(root, languages)
    for conversation_dir in conversation_dirs:
        conversation_id = conversation_id_of(conversation_dir, root)
        hasher.update(f"{conversation_id}\n".encode())
        try:
            entries = segments_entries(conversation_dir / SEGMENTS_DIR)
        except OSError:
            entries = []  # the reader reports the conversation unreadable: no rows
        for entry in entries:
            hasher.update(f"{conversation_id}/{SEGMENTS_DIR}/{entry.name}\0{file_stamp(entry)}\n".encode())
    return hasher.hexdigest()[:16]


def files_fingerprint(parts: list[str], files: list[str]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(f"{part}\n".encode())
    for path in files:
        hasher.update(f"{path}\0{file_stamp(path)}\n".encode())
    return hasher.hexdigest()[:16]


@dataclass(frozen=True)
class FolderSource:
    """A corpus root in the layout of CORPUS.md (`--input_dir`)."""

    input_dir: str

    def check(self) -> None:
        if not Path(self.input_dir).is_dir():
            raise InputError(f"--input_dir {self.input_dir!r} does not exist or is not a folder")

    def languages(self) -> list[str]:
        return [path.name for path in find_language_dirs(Path(self.input_dir))]

    def read(self, languages: list[str] | None, max_turn_seconds: float) -> Corpus:
        return read_corpus(self.input_dir, languages, max_turn_seconds)

    def fingerprint(self, languages: list[str] | None) -> str:
        return corpus_fingerprint(self.input_dir, languages)

    def arguments(self) -> dict:
        return {"input_dir": str(Path(self.input_dir).resolve())}

    def __str__(self) -> str:
        return f"--input_dir {self.input_dir!r}"


@dataclass(frozen=True)
class ManifestSource:
    """A JSONL or CSV manifest of turns (`--input_manifest`, see `csm_synthetic.manifest`)."""

    input_manifest: str

    def check(self) -> None:
        """The file is a manifest with the required columns (its rows are read; no audio is)."""
        from .manifest import manifest_rows

        manifest_rows(self.input_manifest)

    def languages(self) -> list[str]:
        from .manifest import manifest_rows
        from .turn_rows import row_languages

        return row_languages(manifest_rows(self.input_manifest)[0])

    def read(self, languages: list[str] | None, max_turn_seconds: float) -> Corpus:
        from .manifest import read_manifest

        return read_manifest(self.input_manifest, languages, max_turn_seconds)

    def fingerprint(self, languages: list[str] | None) -> str:
        """The manifest's bytes and the path, size and mtime of every audio file it names."""
        from .manifest import manifest_rows

        rows, _ = manifest_rows(self.input_manifest)
        content = hashlib.sha256(Path(self.input_manifest).read_bytes()).hexdigest()
        audio = sorted({row.audio.path for row in rows if row.audio.path})
        return files_fingerprint([content, repr(languages)], audio)

    def arguments(self) -> dict:
        return {"input_manifest": str(Path(self.input_manifest).resolve())}

    def __str__(self) -> str:
        return f"--input_manifest {self.input_manifest!r}"


@dataclass(frozen=True)
class DatasetSource:
    """A `datasets` dataset of turns on the Hub or in a folder (`--input_dataset`, see
    `csm_synthetic.dataset_input`); `columns`: (ours, theirs) pairs of `--columns`."""

    input_dataset: str
    input_config: str | None = None
    columns: tuple[tuple[str, str], ...] = ()
    cache_dir: str | None = field(default=None, compare=False)  # where `datasets` and the embedded audio go

    def check(self) -> None:
        check_dataset_name(self.input_dataset)

    def languages(self) -> list[str]:
        from .dataset_input import dataset_languages

        return dataset_languages(self.input_dataset, self.input_config, self.columns, self.cache_dir)

    def read(self, languages: list[str] | None, max_turn_seconds: float) -> Corpus:
        from .dataset_input import read_dataset

        return read_dataset(
            self.input_dataset, self.input_config, self.columns, self.cache_dir, languages, max_turn_seconds
        )

    def fingerprint(self, languages: list[str] | None) -> str:
        """Each split's `datasets` fingerprint and the path, size and mtime of audio given as paths."""
        from .dataset_input import dataset_identity

        splits, files = dataset_identity(self.input_dataset, self.input_config, self.columns, self.cache_dir)
        return files_fingerprint([repr(self.columns), repr(languages), *map(repr, splits)], files)

    def arguments(self) -> dict:
        name = str(Path(self.input_dataset).expanduser().resolve()) if is_local(self.input_dataset) else self.input_dataset
        return {"input_dataset": name, "input_config": self.input_config, "columns": [list(pair) for pair in self.columns]}

    def __str__(self) -> str:
        return f"--input_dataset {self.input_dataset!r}"


def parse_columns(text: str | None) -> tuple[tuple[str, str], ...]:
    """`--columns conversation_id=episode,turn_index=idx` as ((ours, theirs), ...); refuses unknown names."""
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        ours, equals, theirs = item.partition("=")
        ours, theirs = ours.strip(), theirs.strip()
        if not equals or not ours or not theirs:
            raise InputError(f"--columns {text!r}: {item!r} is not OURS=THEIRS (e.g. conversation_id=episode)")
        if ours not in COLUMNS:
            raise InputError(f"--columns {text!r}: {ours!r} is not one of our columns {list(COLUMNS)}")
        pairs.append((ours, theirs))
    if len({ours for ours, _ in pairs}) != len(pairs):
        raise InputError(f"--columns {text!r} names a column twice")
    return tuple(pairs)


def is_local(name: str) -> bool:
    """A folder, or a name that can only be a path (a Hub id is `name` or `owner/name`)."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1


def check_dataset_name(name: str) -> None:
    """A name that can only be a local path must exist (a Hub id is checked when loaded)."""
    if is_local(name) and not Path(name).expanduser().exists():
        raise InputError(f"--input_dataset {name!r} is no folder (and no Hub dataset id)")


CorpusSource = FolderSource | ManifestSource | DatasetSource


def input_source(
    input_dir: str | None = None,
    input_manifest: str | None = None,
    input_dataset: str | None = None,
    input_config: str | None = None,
    columns: str | None = None,
    cache_dir: str | None = None,
) -> CorpusSource:
    """The one source the flags name (an `InputError` when none or several are given)."""
    given = [name for name, value in zip(INPUT_FLAGS, (input_dir, input_manifest, input_dataset)) if value]
    if len(given) != 1:
        raise InputError(f"give exactly one of --{', --'.join(INPUT_FLAGS)} (got {len(given)})")
    if (input_config or columns) and not input_dataset:
        raise InputError("--input_config and --columns go with --input_dataset")
    if input_dir:
        return FolderSource(str(input_dir))
    if input_manifest:
        return ManifestSource(str(input_manifest))
    return DatasetSource(str(input_dataset), input_config, parse_columns(columns), cache_dir)
