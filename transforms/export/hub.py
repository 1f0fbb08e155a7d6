"""Publish a raw corpus or prepared samples as a `load_dataset`-ready dataset repository.

    content = raw_corpus_content("synthetic-dataset")    # or prepared_content("prepared")
    staged = stage_repository(content, "out")            # Parquet shards + README.md card + figures
    api, user = connect(hub_endpoint())                  # token, and a Hub that accepts it
    upload_repository(staged, "me/my-dataset", api)      # the very same folder goes to the Hub

`publish(PublishOptions(...))` does either, as `scripts/push_to_hub.py` asks. There is one code path:
an upload first stages the repository exactly as `--to_dir` writes it, then uploads that folder.

- Layout: `data/<config>/<split>-NNNNN-of-MMMMM.parquet` (audio bytes embedded; a split is cut into
  equal row ranges of about `max_shard_size` before compression, as `datasets`' push_to_hub does), `figures/*.png`, and a `README.md` whose YAML declares configs,
  splits and features. The raw corpus has one config per language; its default config `all` lists the
  languages' shards rather than repeating them.
- Staging builds under a hidden `.<name>.partial-*` sibling and renames it into place when complete:
  no half-written folder ever looks finished.
- Before the long work, an upload checks the token, that the Hub answers, and that an existing
  repository has our layout. The data goes up with `HfApi.upload_folder` (with hf_xet: batched commits,
  resumable - re-running skips committed files and deduplicates uploaded chunks; shard bytes are
  deterministic, so a rebuilt folder dedups too), the card last, and the remote file list is checked
  against the staged one before success is reported.
- Every failure is a `HubError` whose `exit_code` says what kind it is (see `ExitCode`).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import huggingface_hub
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard, HfApi
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    HTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id
from tqdm.auto import tqdm

from csm_synthetic.builder import ALL_LANGUAGES, CsmSynthetic, available_configs
from .card import (
    CARD_TAG,
    FIGURES_DIR,
    ConfigLayout,
    PreparedDescription,
    RawCorpusDescription,
    SplitFiles,
)
from csm_synthetic.corpus import DEFAULT_MAX_TURN_SECONDS
from csm_synthetic.environment import package_versions
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.splits import DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION, split_rank

logger = logging.getLogger(__name__)

DATA_DIR = "data"
CARD_NAME = "README.md"
DEFAULT_MAX_SHARD_SIZE = "500MB"
EMBED_BATCH_ROWS = 16  # rows per embedding step; an embedded shard (<= max_shard_size) is held in memory
PREPARED_CONFIG = "default"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # config names double as folder names


class ExitCode:
    USAGE = 2  # bad arguments or input folders
    AUTH = 3  # no token, token rejected, permission denied
    NETWORK = 4  # the Hub cannot be reached (or answered 5xx)
    REMOTE = 5  # the repository has another layout, the Hub refused, or the upload is incomplete


class HubError(Exception):
    """A failure with a message for the user and the exit status of the command."""

    exit_code = ExitCode.USAGE


class UsageError(HubError):
    exit_code = ExitCode.USAGE


class AuthError(HubError):
    exit_code = ExitCode.AUTH


class NetworkError(HubError):
    exit_code = ExitCode.NETWORK


class RemoteError(HubError):
    exit_code = ExitCode.REMOTE


# --- what goes into the repository ---------------------------------------------------------------


@dataclass(frozen=True)
class ConfigContent:
    name: str
    splits: dict[str, datasets.Dataset]  # rows written under data/<name>/ (empty for a config of others' shards)
    reuses: tuple[str, ...] = ()  # configs whose shards make up this one (the raw corpus' `all`)
    default: bool = False


@dataclass(frozen=True)
class RepositoryContent:
    configs: tuple[ConfigContent, ...]
    description: RawCorpusDescription | PreparedDescription  # renders the card

    @property
    def config_names(self) -> list[str]:
        return [config.name for config in self.configs]


def check_config_name(name: str, source: str) -> None:
    if not _SAFE_NAME.match(name) or name == DATA_DIR:
        raise UsageError(
            f"{source} {name!r} cannot be a config name (letters, digits, '_', '.', '-' only, not {DATA_DIR!r}): "
            "rename the folder"
        )


def raw_corpus_content(
    input_dir: str | os.PathLike,
    cache_dir: str | None = None,
    target_sampling_rate: int = 24000,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    max_turn_seconds: float = DEFAULT_MAX_TURN_SECONDS,
) -> RepositoryContent:
    """The raw corpus through the builder: one config per language, `all` (default) made of them."""
    if not Path(input_dir).is_dir():
        raise UsageError(f"--input_dir {str(input_dir)!r} does not exist or is not a folder")
    settings = {
        "target_sampling_rate": target_sampling_rate,
        "validation_fraction": validation_fraction,
        "test_fraction": test_fraction,
        "max_turn_seconds": max_turn_seconds,
    }
    languages = available_configs(input_dir)[1:]
    for language in languages:
        check_config_name(language, "language folder")
        if language == ALL_LANGUAGES:
            raise UsageError(
                f"a language folder may not be called {ALL_LANGUAGES!r}: that is the config of every language"
            )
    language_splits, problems, skipped, dropped = {}, [], [], 0
    for language in languages:
        builder = language_builder(input_dir, language, cache_dir, settings)
        corpus = builder.corpus
        problems += [problem.to_dict() for problem in corpus.problems]
        usable = {conversation.conversation_id for conversation in corpus.conversations}
        dropped += len({problem.conversation_id for problem in corpus.problems} - usable)
        if not corpus.conversations:
            logger.warning("language folder %r has no usable conversation: left out", language)
            skipped.append(language)
            continue
        logger.info("Reading the %s turns (%d conversations)", language, len(corpus.conversations))
        builder.download_and_prepare()
        language_splits[language] = ordered_splits(builder.as_dataset())
    if not language_splits:
        raise UsageError(f"no usable conversation found under {str(input_dir)!r} ({len(problems)} problems)")
    configs = [ConfigContent(ALL_LANGUAGES, {}, reuses=tuple(language_splits), default=True)]
    configs += [ConfigContent(language, splits) for language, splits in language_splits.items()]
    description = RawCorpusDescription(
        settings=settings,
        versions=package_versions(),
        problems=tuple(problems),
        dropped_conversations=dropped,
        skipped_languages=tuple(skipped),
    )
    return RepositoryContent(tuple(configs), description)


def language_builder(input_dir, language: str, cache_dir: str | None, settings: dict) -> CsmSynthetic:
    try:
        return CsmSynthetic(data_dir=input_dir, config_name=language, cache_dir=cache_dir, settings=CorpusSettings(**settings))
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from error


def ordered_splits(splits: datasets.DatasetDict | dict) -> dict:
    """train, validation, test first (in that order), then any other split by name."""
    return {name: splits[name] for name in sorted(splits, key=split_rank)}


def prepared_content(prepared_dir: str | os.PathLike) -> RepositoryContent:
    """The output of `prepare_dataset_for_training.py`: one default config, its report on the card."""
    from transforms.pipeline.options import REPORT_NAME  # the prepare step owns the name of its report

    folder = Path(prepared_dir)
    if not folder.is_dir():
        raise UsageError(f"--prepared_dir {str(folder)!r} does not exist or is not a folder")
    report_path = folder / REPORT_NAME
    if not report_path.is_file():
        raise UsageError(
            f"--prepared_dir {str(folder)!r} has no {REPORT_NAME}: it is not the output of a finished "
            "prepare_dataset_for_training.py run (finish it with --resume)"
        )
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(f"cannot load --prepared_dir {str(folder)!r} with datasets.load_from_disk: {error}") from error
    if not isinstance(loaded, datasets.DatasetDict):
        raise UsageError(f"--prepared_dir {str(folder)!r} holds a single Dataset, not the splits prepare writes")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    empty = [split for split, dataset in loaded.items() if not len(dataset)]
    if empty:
        logger.warning("left out the splits without samples (a split cannot be read back empty): %s", empty)
    splits = {split: dataset for split, dataset in loaded.items() if len(dataset)}
    if not splits:
        raise UsageError(f"--prepared_dir {str(folder)!r} holds no samples")
    config = ConfigContent(PREPARED_CONFIG, ordered_splits(splits), default=True)
    return RepositoryContent((config,), PreparedDescription(report))


# --- staging: the repository as a local folder ---------------------------------------------------


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
        raise UsageError(f"--max_shard_size {max_shard_size!r} is not a size like '500MB' or '2GB'") from error
    if size <= 0:
        raise UsageError(f"--max_shard_size must be positive (got {max_shard_size!r})")
    return size


def stage_repository(
    content: RepositoryContent,
    target_dir: str | os.PathLike,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> StagedRepository:
    """Write the repository of `content` to `target_dir`, atomically (renamed into place when complete)."""
    max_bytes = parse_shard_size(max_shard_size)
    target = Path(target_dir)
    check_target_dir(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    warn_about_leftover_partials(target)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write_repository(content, partial, max_bytes, repo_id)
        move_into_place(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return inspect_repository(target)


def check_target_dir(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise UsageError(f"{str(target)!r} exists and is not a folder")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not overwrite:
        raise UsageError(
            f"{str(target)!r} already holds files: pass --overwrite to replace it, or choose another folder"
        )
    if not is_our_repository(target):
        raise UsageError(
            f"refusing to replace {str(target)!r}: it was not written by this tool (no {CARD_NAME} tagged "
            f"{CARD_TAG!r}); remove it yourself or choose another folder"
        )


def is_our_repository(folder: Path) -> bool:
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        return False
    return CARD_TAG in (DatasetCard.load(card_path).data.get("tags") or [])


def warn_about_leftover_partials(target: Path) -> None:
    for leftover in target.parent.glob(f".{target.name}.partial-*"):
        logger.warning("%s is left from an interrupted run; remove it to free its disk space", leftover)


def move_into_place(partial: Path, target: Path) -> None:
    if not target.exists():
        os.replace(partial, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(partial, target)
    shutil.rmtree(old)


@dataclass(frozen=True)
class SplitPlan:
    config: str
    split: str
    dataset: datasets.Dataset
    num_shards: int

    def shard_path(self, index: int) -> str:
        return f"{DATA_DIR}/{self.config}/{self.split}-{index:05d}-of-{self.num_shards:05d}.parquet"


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
            pattern = f"{DATA_DIR}/{plan.config}/{plan.split}-*"
            written[plan.config, plan.split] = SplitFiles(
                plan.split, (pattern,), len(plan.dataset), num_bytes, download_bytes
            )
    return written


@contextmanager
def quiet_datasets_progress() -> Iterator[None]:
    """Silence the per-shard bars of `datasets` (one bar over all shards replaces them)."""
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def config_layout(config: ConfigContent, written: dict[tuple[str, str], SplitFiles]) -> ConfigLayout:
    features = next(iter(config.splits.values())).features
    splits = tuple(written[config.name, split] for split in config.splits)
    return ConfigLayout(config.name, features, splits, config.default)


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


def combined_layout(config: ConfigContent, parts: list[ConfigLayout]) -> ConfigLayout:
    """A config made of other configs' shards, split by split (rows in the order of `parts`)."""
    features = parts[0].features
    if any(part.features != features for part in parts):
        raise ValueError(f"config {config.name!r}: its parts {config.reuses} have different features")
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
        raise UsageError(f"{str(folder)!r} is not a repository written by push_to_hub --to_dir (no tagged {CARD_NAME})")
    configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(folder / CARD_NAME).data)
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size for path in sorted(folder.rglob("*")) if path.is_file()
    }
    for name, config in configs.items():
        for entry in config.get("data_files", []):
            patterns = [entry["path"]] if isinstance(entry["path"], str) else entry["path"]
            for pattern in patterns:
                if not fnmatch.filter(files, pattern):
                    raise UsageError(
                        f"{str(folder)!r} is incomplete: config {name!r} lists {pattern!r}, no file matches"
                    )
    return StagedRepository(folder, tuple(configs), files)


# --- the Hub -------------------------------------------------------------------------------------


def hub_endpoint() -> str:
    """The Hub's address: HF_ENDPOINT when set (read now, not at import), else huggingface_hub's default."""
    return os.environ.get("HF_ENDPOINT", huggingface_hub.constants.ENDPOINT).rstrip("/")


def resolve_token() -> str:
    """The token from HF_TOKEN or `hf auth login`; an `AuthError` when there is none."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise NetworkError(
            "HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it, or write the repository with --to_dir"
        )
    token = huggingface_hub.get_token()
    if not token:
        raise AuthError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access is needed); "
            "or write the repository to a local folder with --to_dir"
        )
    return token


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UsageError(f"--repo_id {repo_id!r} is not a valid repository id: {error}") from error


RESUME_HINT = "Re-running the same command continues the upload (files already committed are skipped)."


@contextmanager
def hub_errors(repo_id: str, endpoint: str, uploading: bool = False) -> Iterator[None]:
    """Turn what huggingface_hub raises into a `HubError` with a clear message."""
    resume = f" {RESUME_HINT}" if uploading else ""
    try:
        yield
    except OfflineModeIsEnabled as error:
        raise NetworkError("HF_HUB_OFFLINE is set, so the Hub cannot be reached.") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        raise http_status_error(status, repo_id, endpoint, error, resume) from error
    except HTTPError as error:  # no HTTP answer at all: DNS, refused connection, timeout, TLS
        raise NetworkError(
            f"cannot reach the Hugging Face Hub at {endpoint}: {error or type(error).__name__}. "
            f"Check the network connection (and HF_ENDPOINT, if set).{resume}"
        ) from error


def http_status_error(status: int | None, repo_id: str, endpoint: str, error: HfHubHTTPError, resume: str) -> HubError:
    namespace = repo_id.split("/")[0] if "/" in repo_id else "your user namespace"
    server = error.server_message or first_line(error)
    if status == 401:
        return AuthError(
            f"the Hub at {endpoint} rejected the token (401 Unauthorized): run `hf auth login` again or set a "
            f"valid HF_TOKEN ({server})"
        )
    if status == 403:
        return AuthError(
            f"permission denied (403) on dataset repository {repo_id!r}: the token needs write access to "
            f"{namespace!r} ({server})"
        )
    if status == 404:
        return AuthError(
            f"dataset repository {repo_id!r} was not found (404) or is not visible to this token ({server})"
        )
    if status == 429 or (status is not None and status >= 500):
        return NetworkError(f"the Hub at {endpoint} answered {status}: {server}. Try again later.{resume}")
    return RemoteError(f"the Hub refused the request ({status}): {server}")


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def connect(endpoint: str) -> tuple[HfApi, str]:
    """An `HfApi` with the user's token, after checking that the Hub accepts it for writing."""
    from csm_synthetic import __version__

    token = resolve_token()
    api = HfApi(endpoint=endpoint, token=token, library_name="csm-synthetic", library_version=__version__)
    identity = api.whoami()
    role = identity.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise AuthError(f"the token of {identity.get('name')!r} is read-only: create a token with write access")
    return api, identity.get("name", "?")


def remote_repository(api: HfApi, repo_id: str):
    """The Hub's info on `repo_id`, or None when it does not exist (yet)."""
    try:
        return api.dataset_info(repo_id)
    except RepositoryNotFoundError:
        return None


def is_managed_path(path: str, config_names: tuple[str, ...] | list[str]) -> bool:
    """A file this tool writes (or replaces) in a repository with these configs."""
    if path in (".gitattributes", CARD_NAME) or path.startswith(f"{FIGURES_DIR}/"):
        return True
    return any(path.startswith(f"{DATA_DIR}/{name}/") for name in config_names)


def check_remote_layout(info, config_names: list[str] | tuple[str, ...], force: bool) -> None:
    """Refuse (unless `force`) to write into a repository that holds a dataset of another layout."""
    if info is None:
        return
    files = [sibling.rfilename for sibling in info.siblings or []]
    foreign = [path for path in files if not is_managed_path(path, config_names)]
    card_data = info.card_data
    remote_configs = sorted(MetadataConfigs.from_dataset_card_data(card_data)) if card_data is not None else []
    tagged = card_data is not None and CARD_TAG in (card_data.get("tags") or [])
    differences = []
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        differences.append(f"files outside this layout ({shown})")
    if remote_configs and sorted(remote_configs) != sorted(config_names):
        differences.append(f"configs {remote_configs}, where this upload has {sorted(config_names)}")
    if remote_configs and not tagged:
        differences.append(f"a dataset card not written by this tool (no {CARD_TAG!r} tag)")
    if not differences:
        return
    message = f"dataset repository {info.id!r} already exists with another layout: " + "; ".join(differences)
    if not force:
        raise RemoteError(message + ". Choose another --repo_id, or pass --force to replace its content.")
    logger.warning("%s. --force: its content will be replaced.", message)


def check_card_accepted(api: HfApi, staged: StagedRepository) -> None:
    """Ask the Hub whether it accepts the card's YAML before uploading any data (it refuses a bad card)."""
    validate = getattr(api, "_validate_yaml", None)  # the check create_commit runs on a README.md
    if validate is None:
        return
    try:
        validate((staged.folder / CARD_NAME).read_text(encoding="utf-8"), repo_type="dataset")
    except ValueError as error:
        raise RemoteError(f"the Hub rejects the dataset card, so nothing was uploaded: {error}") from error


def push_files(api: HfApi, staged: StagedRepository, repo_id: str, force: bool) -> str:
    """Upload the data and figures (stale shards removed), then the card; returns the last commit's URL."""
    delete_patterns = ["*"] if force else [f"{DATA_DIR}/*", f"{FIGURES_DIR}/*"]
    logger.info("Uploading %d files (%.1f MB) to %s", len(staged.files), staged.num_bytes / 1e6, repo_id)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=staged.folder,
        repo_type="dataset",
        ignore_patterns=[CARD_NAME],
        delete_patterns=delete_patterns,
        commit_message="Upload data files (csm-synthetic)",
    )
    commit = api.upload_file(
        path_or_fileobj=str(staged.folder / CARD_NAME),
        path_in_repo=CARD_NAME,
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Update dataset card (csm-synthetic)",
    )
    return commit.commit_url


def verify_upload(api: HfApi, staged: StagedRepository, repo_id: str) -> None:
    """Every staged file is in the repository with its size, and no other shard is."""
    remote = {
        entry.path: entry.size
        for entry in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)
        if isinstance(entry, RepoFile)
    }
    missing = [path for path, size in staged.files.items() if remote.get(path) != size]
    stale = [path for path in remote if path.startswith(f"{DATA_DIR}/") and path not in staged.files]
    if missing or stale:
        raise RemoteError(
            f"the upload to {repo_id!r} is incomplete: {len(missing)} files missing or of another size "
            f"(e.g. {missing[:3]}), {len(stale)} stale shards (e.g. {stale[:3]}). {RESUME_HINT}"
        )


def upload_repository(
    staged: StagedRepository, repo_id: str, api: HfApi, private: bool = False, force: bool = False
) -> str:
    """Create the repository if needed, upload `staged`, verify; returns the card commit's URL."""
    with hub_errors(repo_id, api.endpoint, uploading=True):
        remote = remote_repository(api, repo_id)
        check_remote_layout(remote, staged.config_names, force)
        check_card_accepted(api, staged)
        if remote is not None and private and not remote.private:
            logger.warning("%s exists and is public: --private does not change an existing repository", repo_id)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit_url = push_files(api, staged, repo_id, force)
        verify_upload(api, staged, repo_id)
    return commit_url


# --- the whole command ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishOptions:
    input_dir: str | None = None  # one source: the raw corpus,
    prepared_dir: str | None = None  # or prepare's output,
    staged_dir: str | None = None  # or a folder written earlier with to_dir
    repo_id: str | None = None
    to_dir: str | None = None
    private: bool = False
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE
    force: bool = False
    overwrite: bool = False
    cache_dir: str | None = None
    staging_dir: str | None = None  # parent of the temporary folder an upload is staged in
    target_sampling_rate: int = 24000
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    max_turn_seconds: float = DEFAULT_MAX_TURN_SECONDS


@dataclass(frozen=True)
class PublishResult:
    staged: StagedRepository
    repo_url: str | None = None  # set after an upload
    commit_url: str | None = None


def check_options(options: PublishOptions) -> None:
    sources = [name for name in ("input_dir", "prepared_dir", "staged_dir") if getattr(options, name)]
    if len(sources) != 1:
        raise UsageError("give exactly one of --input_dir, --prepared_dir, --staged_dir")
    if not options.repo_id and not options.to_dir:
        raise UsageError("give --repo_id (upload) or --to_dir (write the repository locally)")
    if options.staged_dir and options.to_dir:
        raise UsageError("--staged_dir is already a repository folder: it takes --repo_id, not --to_dir")
    if options.repo_id:
        check_repo_id(options.repo_id)
    parse_shard_size(options.max_shard_size)


def load_content(options: PublishOptions) -> RepositoryContent:
    if options.prepared_dir:
        return prepared_content(options.prepared_dir)
    return raw_corpus_content(
        options.input_dir,
        cache_dir=options.cache_dir,
        target_sampling_rate=options.target_sampling_rate,
        validation_fraction=options.validation_fraction,
        test_fraction=options.test_fraction,
        max_turn_seconds=options.max_turn_seconds,
    )


def publish(options: PublishOptions) -> PublishResult:
    """Write the repository to `to_dir`, or stage it and upload it to `repo_id` (see module docstring)."""
    check_options(options)
    if options.to_dir:
        check_target_dir(Path(options.to_dir), options.overwrite)  # before reading any data
        content = load_content(options)
        return PublishResult(
            stage_repository(content, options.to_dir, options.max_shard_size, options.repo_id, options.overwrite)
        )
    return publish_to_hub(options)


def make_staging_folder(parent: str | None) -> Path:
    try:
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="csm-hub-", dir=parent))
    except OSError as error:
        raise UsageError(f"cannot make a staging folder in {parent or tempfile.gettempdir()!r}: {error}") from error


def publish_to_hub(options: PublishOptions) -> PublishResult:
    endpoint, repo_id = hub_endpoint(), options.repo_id
    with hub_errors(repo_id, endpoint):  # fail fast: before any long work
        api, user = connect(endpoint)
        logger.info("Logged in to %s as %s", endpoint, user)
    if options.staged_dir:
        staged = inspect_repository(options.staged_dir)
        commit_url = upload_repository(staged, repo_id, api, options.private, options.force)
        return PublishResult(staged, f"{endpoint}/datasets/{repo_id}", commit_url)

    content = load_content(options)
    with hub_errors(repo_id, endpoint):
        check_remote_layout(remote_repository(api, repo_id), content.config_names, options.force)
    work = make_staging_folder(options.staging_dir)
    try:
        staged = stage_repository(content, work / "repository", options.max_shard_size, repo_id)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        commit_url = upload_repository(staged, repo_id, api, options.private, options.force)
    except HubError as error:
        error.args = (
            (
                f"{error} The repository built for this upload is kept in {staged.folder}: "
                f"`--staged_dir {staged.folder} --repo_id {repo_id}` uploads it without rebuilding."
            ),
        )
        raise
    shutil.rmtree(work, ignore_errors=True)
    return PublishResult(staged, f"{endpoint}/datasets/{repo_id}", commit_url)
