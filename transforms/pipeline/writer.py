"""Publish mapped datasets as `save_to_disk` folders without copying their data.

A `.map` result already lives in Arrow files of exactly the format `save_to_disk` writes. Publishing
hard-links those files into the output folder (a copy only when the cache is on another filesystem)
and writes the `state.json` / `dataset_info.json` that `load_from_disk` reads:

- `state.json` sets the format `load_from_disk` gives the rows in (`format_type`, e.g. numpy).
- `dataset_info.json` is the `info` given (e.g. `info.samples_info`: the samples, not the corpus' turns).
- A split without rows is left out (`datasets` cannot read one back reliably); the report says why.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import datasets

logger = logging.getLogger(__name__)


def _place_file(source: Path, target: Path) -> bool:
    """Hard-link `source` to `target` atomically; copy when linking is impossible. True if linked."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
        linked = True
    except OSError:
        shutil.copyfile(source, partial)
        linked = False
    os.replace(partial, target)
    return linked


def _write_json(path: Path, content: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(partial, path)


def publish_split(
    dataset: datasets.Dataset, split_dir: Path, info: datasets.DatasetInfo | None = None, format_type: str | None = None
) -> None:
    """Make `split_dir` a `save_to_disk` folder of `dataset`, whose rows must all be in its cache files."""
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
    _write_json(split_dir / datasets.config.DATASET_STATE_JSON_FILENAME, state)
    _write_json(split_dir / datasets.config.DATASET_INFO_FILENAME, asdict(info or dataset.info))


def splits_with_rows(splits: dict[str, datasets.Dataset]) -> dict[str, datasets.Dataset]:
    """The splits an output holds: an empty one is left out (`datasets` cannot read it back reliably)."""
    return {name: dataset for name, dataset in splits.items() if len(dataset)}


def publish_dataset_dict(
    splits: dict[str, datasets.Dataset],
    output_dir: Path,
    info: datasets.DatasetInfo | None = None,
    format_type: str | None = None,
) -> None:
    """`output_dir` becomes loadable with `datasets.load_from_disk` as a `DatasetDict` of the splits of
    `splits` that have rows, formatted as `format_type` (None: Python objects); `info` (default: each
    split's own) goes to every split's `dataset_info.json`."""
    splits = splits_with_rows(splits)
    for name, dataset in splits.items():
        publish_split(dataset, output_dir / name, info, format_type)
    _write_json(output_dir / datasets.config.DATASETDICT_JSON_FILENAME, {"splits": list(splits)})
