"""A dataset repository as a local folder: its layout, its Parquet shards, and how it is written.

    staged = stage_repository(content, "out", max_shard_size="500MB")  # data/, figures/, README.md
    staged = inspect_repository("out")                                  # an earlier one, checked

- Layout: `data/<config>/<split>-NNNNN-of-MMMMM.parquet` (audio bytes embedded; a split is cut into equal
  row ranges of about `max_shard_size` before compression, as `datasets`' push_to_hub does),
  `figures/*.png`, and a `README.md` whose YAML declares configs, splits and features. A config may be
  made of other configs' shards (the raw corpus' `all`) instead of repeating them.
- Staging holds the folder's lock (`csm_synthetic.folders`: a second run exits 2 naming this one), builds
  under the hidden sibling `.<name>.partial` and renames it into place when complete: no half-written
  folder ever looks finished, and a crash leaves the old folder or the new one. What a killed run left
  beside the folder is mended or removed by the next. Shard bytes depend only on the rows, so a rebuilt
  folder is byte-for-byte the same.
- A folder is ours when its card carries `CARD_TAG`; only such a folder is ever replaced.

What goes in (`RepositoryContent`) is decided by `content.py`; this module knows no sample format.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard
from tqdm.auto import tqdm

from csm_synthetic.cli import claim_output_dir
from csm_synthetic.errors import InputError
from csm_synthetic.folders import PARTIAL, FolderLock, recover_replacement, sibling, swapped_in, write_errors

from ..maps import quiet_datasets_progress
from .card import CARD_TAG, DATA_DIR, ConfigLayout, SplitFiles, shard_path, split_pattern
from .content import ConfigContent, RepositoryContent, ordered_splits

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
DEFAULT_MAX_SHARD_SIZE = "500MB"
EMBED_BATCH_ROWS = 16  # rows per embedding step; an embedded shard (<= max_shard_size) is held in memory


@dataclass(frozen=True)
class StagedRepository:
    folder: Path
    config_names: tuple[str, ...]
    files: dict[str, int] = field(default_factory=dict)  # repository path -> size in bytes

    @property
    def num_bytes(self) -> int:
        return sum(self.files.values())


def parse_shard_size(max_shard_size: str | int) -> int:
    try:
        size = convert_file_size_to_int(max_shard_size)
    except ValueError as error:
        raise InputError(f"--max_shard_size {max_shard_size!r} is not a size like '500MB' or '2GB'") from error
    if size <= 0:
        raise InputError(f"--max_shard_size must be positive (got {max_shard_size!r})")
    return size


# --- staging -------------------------------------------------------------------------------------


def claim_repository_dir(target: str | os.PathLike, overwrite: bool) -> bool:
    """May the repository be written to `target`? True when it replaces an earlier one of ours."""
    marker = f"no {CARD_NAME} tagged {CARD_TAG!r}"
    return claim_output_dir(target, overwrite=overwrite, is_ours=is_our_repository, marker=marker, flag="--to_dir")


def is_our_repository(folder: Path) -> bool:
    card_path = Path(folder) / CARD_NAME
    if not card_path.is_file():
        return False
    return CARD_TAG in (DatasetCard.load(card_path).data.get("tags") or [])


def stage_repository(
    content: RepositoryContent,
    target_dir: str | os.PathLike,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> StagedRepository:
    """Write the repository of `content` to `target_dir`, atomically (renamed into place when complete)."""
    max_bytes = parse_shard_size(max_shard_size)
    target = Path(target_dir).resolve()
    with FolderLock(target, "--to_dir"), write_errors(target):
        recover_replacement(target, is_complete=is_complete_repository)
        claim_repository_dir(target, overwrite)
        partial = sibling(target, PARTIAL)
        with swapped_in(partial, target):  # made inside: a signal right after leaves no half-made folder
            partial.mkdir()
            write_repository(content, partial, max_bytes, repo_id)
    return inspect_repository(target)


def is_complete_repository(folder: Path) -> bool:
    try:
        inspect_repository(folder)
    except InputError:
        return False
    return True


@dataclass(frozen=True)
class SplitPlan:
    config: str
    split: str
    dataset: datasets.Dataset
    num_shards: int

    def shard_path(self, index: int) -> str:
        return shard_path(self.config, self.split, index, self.num_shards)


def write_repository(content: RepositoryContent, folder: Path, max_bytes: int, repo_id: str | None) -> None:
    plans = [
        SplitPlan(config.name, split, dataset, shard_count(dataset, max_bytes))
        for config in content.configs
        for split, dataset in config.splits.items()
    ]
    written = write_shards(plans, folder)
    layouts = [config_layout(config, written) for config in content.configs if not config.reuses]
    by_name = {layout.name: layout for layout in layouts}
    layouts = [
        combined_layout(config, [by_name[name] for name in config.reuses]) if config.reuses else by_name[config.name]
        for config in content.configs
    ]
    rows = {config.name: config.splits for config in content.configs if not config.reuses}
    card = content.description.render(layouts, rows, repo_id)
    for path, png in card.figures.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(png)
    (folder / CARD_NAME).write_text(card.text, encoding="utf-8")


# --- Parquet shards ------------------------------------------------------------------------------


def write_shards(plans: list[SplitPlan], folder: Path) -> dict[tuple[str, str], SplitFiles]:
    """Write every split as Parquet shards `data/<config>/<split>-NNNNN-of-MMMMM.parquet`, audio embedded."""
    written = {}
    with (
        quiet_datasets_progress(),
        tqdm(total=sum(plan.num_shards for plan in plans), unit="shard", desc="Writing Parquet shards") as progress,
    ):
        for plan in plans:
            (folder / DATA_DIR / plan.config).mkdir(parents=True, exist_ok=True)
            num_bytes = download_bytes = 0
            for index in range(plan.num_shards):
                path = folder / plan.shard_path(index)
                progress.set_postfix_str(plan.shard_path(index), refresh=False)
                shard = plan.dataset.shard(num_shards=plan.num_shards, index=index, contiguous=True)
                shard = embed_external_files(shard)
                shard.to_parquet(str(path))
                num_bytes += shard.data.nbytes
                download_bytes += path.stat().st_size
                progress.update()
            pattern = split_pattern(plan.config, plan.split)
            written[plan.config, plan.split] = SplitFiles(
                plan.split, (pattern,), len(plan.dataset), num_bytes, download_bytes
            )
    return written


def shard_count(dataset: datasets.Dataset, max_bytes: int) -> int:
    total = dataset.data.nbytes + external_audio_bytes(dataset)
    return max(1, min(math.ceil(total / max_bytes), len(dataset)))


def audio_columns(features: datasets.Features) -> list[str]:
    return [name for name, feature in features.items() if isinstance(feature, datasets.Audio)]


def external_audio_bytes(dataset: datasets.Dataset) -> int:
    """Bytes of the audio files the rows refer to by path (they will be embedded)."""
    total = 0
    for name in audio_columns(dataset.features):
        column = dataset.select_columns([name]).with_format("arrow")[:].column(name)
        for audio in column.to_pylist():
            if audio and audio.get("bytes") is None and audio.get("path"):
                total += os.path.getsize(audio["path"])
    return total


def embed_external_files(shard: datasets.Dataset) -> datasets.Dataset:
    """The shard with each audio file's bytes in its row (and only its base name as path)."""
    if not audio_columns(shard.features):
        return shard
    return (
        shard.with_format("arrow")
        .map(
            embed_table_storage,
            batched=True,
            batch_size=EMBED_BATCH_ROWS,
            keep_in_memory=True,
            features=shard.features,
        )
        .with_format(None)
    )


# --- what the card declares ----------------------------------------------------------------------


def config_layout(config: ConfigContent, written: dict[tuple[str, str], SplitFiles]) -> ConfigLayout:
    features = next(iter(config.splits.values())).features
    splits = tuple(written[config.name, split] for split in config.splits)
    return ConfigLayout(config.name, features, splits, config.default)


def combined_layout(config: ConfigContent, parts: list[ConfigLayout]) -> ConfigLayout:
    """A config made of other configs' shards, split by split (rows in the order of `parts`)."""
    features = parts[0].features
    if any(part.features != features for part in parts):
        raise InputError(f"config {config.name!r}: its parts {config.reuses} have different features")
    by_split: dict[str, list[SplitFiles]] = {}
    for part in parts:
        for split in part.splits:
            by_split.setdefault(split.split, []).append(split)
    splits = tuple(
        SplitFiles(
            name,
            tuple(pattern for files in pieces for pattern in files.patterns),
            sum(files.num_examples for files in pieces),
            sum(files.num_bytes for files in pieces),
            sum(files.download_bytes for files in pieces),
        )
        for name, pieces in ordered_splits(by_split).items()
    )
    return ConfigLayout(config.name, features, splits, config.default)


def inspect_repository(folder: str | os.PathLike) -> StagedRepository:
    """Check that `folder` is a complete repository written by this tool; list its configs and files."""
    folder = Path(folder)
    if not is_our_repository(folder):
        raise InputError(f"{str(folder)!r} is not a repository written by push_to_hub --to_dir (no tagged {CARD_NAME})")
    configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(folder / CARD_NAME).data)
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size for path in sorted(folder.rglob("*")) if path.is_file()
    }
    for name, config in configs.items():
        for entry in config.get("data_files", []):
            patterns = [entry["path"]] if isinstance(entry["path"], str) else entry["path"]
            for pattern in patterns:
                if not fnmatch.filter(files, pattern):
                    raise InputError(
                        f"{str(folder)!r} is incomplete: config {name!r} lists {pattern!r}, no file matches"
                    )
    return StagedRepository(folder, tuple(configs), files)
