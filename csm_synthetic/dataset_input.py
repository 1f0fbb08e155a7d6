"""A `datasets` dataset of turns - a Hub repository or a local folder - read into the reader's records.

    --input_dataset REPO_OR_DIR [--input_config NAME] [--columns conversation_id=episode,turn_index=idx]

One row per turn with the columns of a manifest (`manifest.py`: `conversation_id`, `turn_index`, `speaker`,
`text`, `audio`, optional `start`, `end`, `language`); `--columns` maps ours to the dataset's names. Every
split of the dataset is read: conversations get their split by our rule (a hash of the id), so what
`push_to_hub.py` publishes for a raw corpus prepares to the same splits and samples as the folder did.

Audio may be embedded (an `Audio` column with bytes, as published) or paths (absolute, or relative to a local
dataset's folder). Embedded audio is written once, by content, to files under `<cache>/csm_synthetic_audio/`
(`<sha256>/<original name>`): every later step reads files, spans by seeking, as for a folder or manifest.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

import datasets
import pyarrow.compute as pc

from .corpus import DEFAULT_MAX_TURN_SECONDS, Corpus, Problem
from .errors import InputError
from .sources import check_dataset_name, is_local
from .turn_rows import COLUMNS, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, AudioRef, TurnRow, read_turn_rows, turn_row

AUDIO_STORE = "csm_synthetic_audio"
ROWS_PER_READ = 256


def load_turn_dataset(name: str, config: str | None, cache_dir: str | None) -> dict[str, datasets.Dataset]:
    """Every split of the dataset: a `save_to_disk` folder, a folder of data files or a Hub repository."""
    check_dataset_name(name)
    folder = Path(name).expanduser()
    try:
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            loaded = datasets.load_from_disk(str(folder))
        else:
            loaded = datasets.load_dataset(name, config, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError, OSError, datasets.exceptions.DatasetNotFoundError) as error:
        raise InputError(f"cannot load --input_dataset {name!r} (config {config!r}): {error}") from error
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def column_names(mapping: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Our column -> the dataset's."""
    return {ours: dict(mapping).get(ours, ours) for ours in COLUMNS}


def check_columns(dataset: datasets.Dataset, names: dict[str, str], where: str) -> None:
    missing = [f"{ours} (as {theirs!r})" if ours != theirs else ours for ours, theirs in names.items()
               if ours in REQUIRED_COLUMNS and theirs not in dataset.column_names]
    if missing:
        raise InputError(
            f"{where} lacks the required columns {missing} (it has {dataset.column_names}); map yours with "
            f"--columns {','.join(f'{name}=YOURS' for name in REQUIRED_COLUMNS[:2])},...; required: "
            f"{', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)}"
        )


def with_audio_references(dataset: datasets.Dataset, column: str) -> datasets.Dataset:
    """The dataset with its audio column as stored ({"bytes", "path"}), never decoded."""
    if isinstance(dataset.features[column], datasets.Audio):
        return dataset.cast_column(column, datasets.Audio(decode=False))
    return dataset


def path_audio(dataset: datasets.Dataset, column: str) -> list[str]:
    """The audio paths of rows whose audio is not embedded (read from Arrow, no bytes touched)."""
    stored = with_audio_references(dataset, column).data.column(column)  # chunked: no copy of embedded bytes
    if not isinstance(dataset.features[column], datasets.Audio):
        return [value for value in stored.to_pylist() if isinstance(value, str)]
    without_bytes = pc.is_null(pc.struct_field(stored, "bytes"))
    return [value for value in pc.struct_field(stored, "path").filter(without_bytes).to_pylist() if value]


class AudioStore:
    """Embedded audio as files, by content: the same bytes under the same name are written once."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def put(self, data: bytes, name: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.folder / digest[:2] / digest / (PurePosixPath(name).name or "audio")
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            partial.write_bytes(data)
            os.replace(partial, target)  # a reader never sees a half-written file
        return str(target)


def resolve_audio_path(name: str, path: str) -> AudioRef:
    """An audio path of dataset `name`'s rows: absolute, or relative to the dataset's folder."""
    if os.path.isabs(path):
        return AudioRef(path, path)
    if not is_local(name):
        raise ValueError(f"audio path {path!r} is relative, and the dataset is not a local folder")
    return AudioRef(str(Path(name).expanduser() / path), path)


def audio_resolver(name: str, store: AudioStore):
    """How a row's audio value becomes a file: embedded bytes are stored, a path is taken as it is."""

    def resolve(value) -> AudioRef:
        if isinstance(value, str):
            return resolve_audio_path(name, value)
        if isinstance(value, dict) and value.get("bytes"):
            stored_name = value.get("path") or "embedded audio"
            return AudioRef(store.put(value["bytes"], stored_name), stored_name)
        if isinstance(value, dict) and value.get("path"):
            return resolve_audio_path(name, value["path"])
        raise ValueError(f"audio {str(value)[:60]!r} is neither a path nor embedded audio")

    return resolve


def dataset_rows(
    name: str, splits: dict[str, datasets.Dataset], mapping: tuple[tuple[str, str], ...], store: AudioStore
) -> tuple[list[TurnRow], list[Problem]]:
    names = column_names(mapping)
    resolve = audio_resolver(name, store)
    rows, problems = [], []
    for split, dataset in splits.items():
        check_columns(dataset, names, f"--input_dataset {name!r} split {split!r}")
        present = {ours: theirs for ours, theirs in names.items() if theirs in dataset.column_names}
        readable = with_audio_references(dataset, names["audio"]).select_columns(list(present.values()))
        for offset, batch in enumerate(readable.iter(batch_size=ROWS_PER_READ)):
            for position in range(len(batch[names["audio"]])):
                values = {ours: batch[theirs][position] for ours, theirs in present.items()}
                where = f"{split} row {offset * ROWS_PER_READ + position}"
                row, found = turn_row(values, where, resolve, name)
                problems += found
                if row is not None:
                    rows.append(row)
    return rows, problems


def audio_store(cache_dir: str | None) -> AudioStore:
    return AudioStore(Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / AUDIO_STORE)


def read_dataset(
    name: str,
    config: str | None = None,
    mapping: tuple[tuple[str, str], ...] = (),
    cache_dir: str | None = None,
    languages: list[str] | None = None,
    max_turn_seconds: float = DEFAULT_MAX_TURN_SECONDS,
) -> Corpus:
    """The conversations of a dataset of turns (only those of `languages`; None: all) and every problem."""
    splits = load_turn_dataset(name, config, cache_dir)
    rows, problems = dataset_rows(name, splits, mapping, audio_store(cache_dir))
    return read_turn_rows(rows, problems, name, languages, max_turn_seconds)


def dataset_languages(name: str, config: str | None, mapping: tuple[tuple[str, str], ...], cache_dir: str | None) -> list[str]:
    """The languages of the dataset's rows (from the language column alone)."""
    from .turn_rows import UNKNOWN_LANGUAGE

    column = column_names(mapping)["language"]
    found = set()
    for dataset in load_turn_dataset(name, config, cache_dir).values():
        if column not in dataset.column_names:
            found.add(UNKNOWN_LANGUAGE)
            continue
        found |= {value.strip() if isinstance(value, str) and value.strip() else UNKNOWN_LANGUAGE
                  for value in dataset.data.column(column).unique().to_pylist()}
    return sorted(found)


def dataset_identity(
    name: str, config: str | None, mapping: tuple[tuple[str, str], ...], cache_dir: str | None
) -> tuple[list[tuple[str, str]], list[str]]:
    """What the dataset's rows depend on: each split's `datasets` fingerprint (its data files or Hub revision),
    and the files of the audio given as paths (embedded audio is part of the fingerprint)."""
    splits = load_turn_dataset(name, config, cache_dir)
    audio_column = column_names(mapping)["audio"]
    fingerprints, files = [], set()
    for split, dataset in splits.items():
        fingerprints.append((split, dataset._fingerprint))
        if audio_column in dataset.column_names:
            for path in path_audio(dataset, audio_column):
                try:
                    files.add(resolve_audio_path(name, path).path)
                except ValueError:
                    continue  # the reader reports it
    return fingerprints, sorted(files)
