"""Publish a raw corpus or prepared samples to the Hugging Face Hub: the `push_to_hub.py` command.

    content = raw_corpus_content("synthetic-dataset")    # content.py: what to publish
    staged = stage_repository(content, "out")            # repository.py: Parquet shards + README.md card + figures
    api, user = connect(hub_endpoint())                  # token, and a Hub that accepts it
    upload_repository(staged, "me/my-dataset", api)      # the very same folder goes to the Hub

`publish(PublishOptions(...))` does either, as `scripts/push_to_hub.py` asks. There is one code path:
an upload first stages the repository exactly as `--to_dir` writes it, then uploads that folder.

- Before the long work, an upload checks the token, that the Hub answers, and that an existing
  repository has our layout. The data goes up with `HfApi.upload_folder` (with hf_xet: batched commits,
  resumable - re-running skips committed files and deduplicates uploaded chunks; shard bytes are
  deterministic, so a rebuilt folder dedups too), the card last, and the remote file list is checked
  against the staged one before success is reported.
- Every failure is a `CommandError` whose `exit_code` says what kind it is: `InputError` (bad arguments
  or input, raised at any layer), and here `AuthError`, `NetworkError`, `RemoteError` for the Hub's answers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    HTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id

from csm_synthetic.errors import CommandError, ExitCode, InputError
from csm_synthetic.folders import FolderLock, FolderLocked
from csm_synthetic.settings import CorpusSettings

from .card import CARD_TAG, DATA_DIR, FIGURES_DIR
from .content import RepositoryContent, prepared_content, raw_corpus_content
from .figures import require_matplotlib
from .repository import (
    CARD_NAME,
    DEFAULT_MAX_SHARD_SIZE,
    StagedRepository,
    claim_repository_dir,
    inspect_repository,
    parse_shard_size,
    stage_repository,
)

logger = logging.getLogger(__name__)


class AuthError(CommandError):
    """No token, token rejected, permission denied."""

    exit_code = ExitCode.AUTH


class NetworkError(CommandError):
    """The Hub cannot be reached (or answered 429 / 5xx)."""

    exit_code = ExitCode.NETWORK


class RemoteError(CommandError):
    """The repository has another layout, the Hub refused, or the upload is incomplete."""

    exit_code = ExitCode.REMOTE


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
        raise InputError(f"--repo_id {repo_id!r} is not a valid repository id: {error}") from error


RESUME_HINT = "Re-running the same command continues the upload (files already committed are skipped)."


@contextmanager
def hub_errors(repo_id: str, endpoint: str, uploading: bool = False) -> Iterator[None]:
    """Turn what huggingface_hub raises into an `AuthError`, `NetworkError` or `RemoteError` with a clear message."""
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


def http_status_error(
    status: int | None, repo_id: str, endpoint: str, error: HfHubHTTPError, resume: str
) -> CommandError:
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
    model_id: str | None = None  # prepared_dir: the model of the card's training snippet (default: the run's Hub id)
    settings: CorpusSettings = field(default_factory=CorpusSettings)  # how the raw corpus is read (input_dir)


@dataclass(frozen=True)
class PublishResult:
    staged: StagedRepository
    repo_url: str | None = None  # set after an upload
    commit_url: str | None = None


def check_options(options: PublishOptions) -> None:
    sources = [name for name in ("input_dir", "prepared_dir", "staged_dir") if getattr(options, name)]
    if len(sources) != 1:
        raise InputError("give exactly one of --input_dir, --prepared_dir, --staged_dir")
    if not options.repo_id and not options.to_dir:
        raise InputError("give --repo_id (upload) or --to_dir (write the repository locally)")
    if options.staged_dir and options.to_dir:
        raise InputError("--staged_dir is already a repository folder: it takes --repo_id, not --to_dir")
    if options.model_id and not options.prepared_dir:
        raise InputError("--model_id names the model of the prepared samples' training snippet: only with --prepared_dir")
    if options.repo_id:
        check_repo_id(options.repo_id)
    parse_shard_size(options.max_shard_size)
    if not options.staged_dir:
        require_matplotlib()  # the card's figures need it: say so before any data is read


def load_content(options: PublishOptions) -> RepositoryContent:
    if options.prepared_dir:
        return prepared_content(options.prepared_dir, options.model_id)
    return raw_corpus_content(options.input_dir, cache_dir=options.cache_dir, settings=options.settings)


def publish(options: PublishOptions) -> PublishResult:
    """Write the repository to `to_dir`, or stage it and upload it to `repo_id` (see module docstring)."""
    check_options(options)
    if options.to_dir:
        claim_repository_dir(options.to_dir, options.overwrite)  # before reading any data
        content = load_content(options)
        return PublishResult(
            stage_repository(content, options.to_dir, options.max_shard_size, options.repo_id, options.overwrite)
        )
    return publish_to_hub(options)


STAGING_PREFIX = "csm-hub-"


def make_staging_folder(parent: str | None) -> Path:
    """A new folder to stage an upload in, under `parent` (default: the system's temporary folder)."""
    parent_path = Path(parent or tempfile.gettempdir())
    try:
        parent_path.mkdir(parents=True, exist_ok=True)
        remove_killed_stagings(parent_path)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent_path))
    except OSError as error:
        raise InputError(f"cannot make a staging folder in {str(parent_path)!r}: {error}") from error


def remove_killed_stagings(parent: Path) -> None:
    """Remove the staging folders of killed uploads: a lock beside them whose process is gone (see `FolderLock`).

    A folder kept on purpose (an upload that failed, for `--staged_dir`) has no lock left beside it.
    """
    for lock_path in parent.glob(f".{STAGING_PREFIX}*.lock"):
        folder = parent / lock_path.name[1 : -len(".lock")]
        try:
            with FolderLock(folder, "--staging_dir"):  # takes a dead upload's lock over; refuses a live one's
                logger.warning("removing %s, the staging folder of an upload that was killed", folder)
                shutil.rmtree(folder, ignore_errors=True)
        except FolderLocked:
            continue  # a live upload


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
    with FolderLock(work, "--staging_dir"):  # held while staging and uploading: a killed upload leaves it stale
        try:
            staged = stage_repository(content, work / "repository", options.max_shard_size, repo_id)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        try:
            commit_url = upload_repository(staged, repo_id, api, options.private, options.force)
        except CommandError as error:
            error.args = (
                (
                    f"{error} The repository built for this upload is kept in {staged.folder}: "
                    f"`--staged_dir {staged.folder} --repo_id {repo_id}` uploads it without rebuilding."
                ),
            )
            raise
        except BaseException:  # interrupted: a re-run rebuilds the same bytes, and the upload skips what is committed
            shutil.rmtree(work, ignore_errors=True)
            raise
    shutil.rmtree(work, ignore_errors=True)
    return PublishResult(staged, f"{endpoint}/datasets/{repo_id}", commit_url)


def print_summary(result: PublishResult) -> None:
    """What was written or uploaded, and how to load it."""
    staged = result.staged
    data_files = [path for path in staged.files if path.startswith(f"{DATA_DIR}/")]
    print()
    if result.repo_url:
        print(f"Uploaded {len(staged.files)} files ({staged.num_bytes / 1e6:.1f} MB) to {result.repo_url}")
        print(f"  last commit: {result.commit_url}")
        where = result.repo_url.split("/datasets/", 1)[-1]
    else:
        print(f"Wrote {len(staged.files)} files ({staged.num_bytes / 1e6:.1f} MB) to {staged.folder}")
        where = str(staged.folder)
    print(f"  configs: {', '.join(staged.config_names)} ({len(data_files)} Parquet shards)")
    print(f'  load with: datasets.load_dataset("{where}", "{staged.config_names[-1]}")')
