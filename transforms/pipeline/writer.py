"""Publish mapped datasets as `save_to_disk` folders without copying their data.

A `.map` result already lives in Arrow files of exactly the format `save_to_disk` writes. Publishing
hard-links those files into the output folder (a copy only when the cache is on another filesystem)
and writes the `state.json` / `dataset_info.json` that `load_from_disk` reads:

- `state.json` sets the format `load_from_disk` gives the rows in (`format_type`, e.g. numpy).
- `dataset_info.json` is the `info` given (e.g. `info.samples_info`: the samples, not the corpus' turns).
- A split without rows is left out (`datasets` cannot read one back reliably); the report says why.

Every file appears under its name only when complete (written as `<name>.partial`, then renamed). The
output's folders are always the splits `dataset_dict.json` declares: a split folder of an earlier run that
is no split now goes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import datasets

from .checksums import file_checksum

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


def _place_file(source: Path, target: Path) -> bool:
    """Hard-link `source` to `target` atomically; copy when linking is impossible. True if linked."""
    if target.exists() and os.path.samefile(source, target):
        return True  # linked by an earlier run (and `rename` of one link onto another of the same file does nothing)
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
        linked = True
    except OSError:
        shutil.copyfile(source, partial)
        linked = False
    os.replace(partial, target)
    return linked


def write_json(path: Path, content: dict, sort_keys: bool = True) -> dict:
    """Write `content` as JSON atomically; returns the file's checksum."""
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    partial.write_text(json.dumps(content, indent=2, sort_keys=sort_keys, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)
    return file_checksum(path)


def remove_partials(folder: Path) -> None:
    """Remove the `.partial` files a killed run left in an output folder (call it holding the folder's lock)."""
    for partial in folder.rglob(f"*{PARTIAL_SUFFIX}"):
        if partial.is_file():
            partial.unlink()


def publish_split(
    dataset: datasets.Dataset,
    split_dir: Path,
    checksum_of: Callable[[Path], dict],
    info: datasets.DatasetInfo | None = None,
    format_type: str | None = None,
) -> dict[str, dict]:
    """Make `split_dir` a `save_to_disk` folder of `dataset`, whose rows must all be in its cache files.

    Returns each written file's checksum by its name; a linked (or copied) file's is `checksum_of` its source.
    """
    files = [Path(cache["filename"]) for cache in dataset.cache_files]
    if dataset._indices is not None or not files:
        raise ValueError("publish_split needs a dataset made only of whole cache files (no select/shuffle indices)")
    split_dir.mkdir(parents=True, exist_ok=True)
    names = [f"data-{index:05d}-of-{len(files):05d}.arrow" for index in range(len(files))]
    copied = [str(source) for source, name in zip(files, names) if not _place_file(source, split_dir / name)]
    if copied:
        logger.warning(
            "copied %d cache files into %s instead of linking them (cache on another filesystem?): "
            "pass a cache_dir on the output's filesystem to write the data only once",
            len(copied),
            split_dir,
        )
    for stale in split_dir.glob("data-*.arrow"):
        if stale.name not in names:
            stale.unlink()
    state = {
        "_data_files": [{"filename": name} for name in names],
        "_fingerprint": dataset._fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": format_type,
        "_output_all_columns": False,
        "_split": split_dir.name,
    }
    checksums = {name: checksum_of(source) for source, name in zip(files, names)}
    checksums[datasets.config.DATASET_STATE_JSON_FILENAME] = write_json(
        split_dir / datasets.config.DATASET_STATE_JSON_FILENAME, state
    )
    checksums[datasets.config.DATASET_INFO_FILENAME] = write_json(
        split_dir / datasets.config.DATASET_INFO_FILENAME, asdict(info or dataset.info)
    )
    return checksums


def splits_with_rows(splits: dict[str, datasets.Dataset]) -> dict[str, datasets.Dataset]:
    """The splits an output holds: an empty one is left out (`datasets` cannot read it back reliably)."""
    return {name: dataset for name, dataset in splits.items() if len(dataset)}


def publish_dataset_dict(
    splits: dict[str, datasets.Dataset],
    output_dir: Path,
    info: datasets.DatasetInfo | None = None,
    format_type: str | None = None,
    checksum_of: Callable[[Path], dict] = file_checksum,
) -> dict[str, dict]:
    """`output_dir` becomes loadable with `datasets.load_from_disk` as a `DatasetDict` of the splits of
    `splits` that have rows, formatted as `format_type` (None: Python objects); `info` (default: each
    split's own) goes to every split's `dataset_info.json`.

    Returns the checksum of every file written, by its path relative to `output_dir` (`checksum_of` gives
    those of the data files' sources: the cache has them already).
    """
    splits = splits_with_rows(splits)
    written = {}
    for name, dataset in splits.items():
        for file_name, checksum in publish_split(dataset, output_dir / name, checksum_of, info, format_type).items():
            written[f"{name}/{file_name}"] = checksum
    dict_json = datasets.config.DATASETDICT_JSON_FILENAME
    written[dict_json] = write_json(output_dir / dict_json, {"splits": list(splits)})
    for folder in stale_split_folders(output_dir, splits):
        logger.warning("removing %s: split of an earlier run that this run has not", folder)
        shutil.rmtree(folder)
    return written


def stale_split_folders(output_dir: Path, splits) -> list[Path]:
    """Folders of `output_dir` that hold a split (a `state.json`) but are none of `splits`."""
    return [
        folder
        for folder in sorted(output_dir.iterdir())
        if folder.is_dir()
        and folder.name not in splits
        and (folder / datasets.config.DATASET_STATE_JSON_FILENAME).is_file()
    ]
