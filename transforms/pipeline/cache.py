"""The maps' cache as prepare uses it: results checked before reuse, shards locked while written, leftovers removed.

    with MapCache.of(turns) as cache:                      # turns: the builder's rows; maps cache beside them
        with cache.shard_lock(shard._fingerprint):          # one run at a time writes a shard's entries
            result = cache.checked(shard, identity, lambda: shard.map(...))

- Checksums. When a step's `.map` returns, the size and xxh3-128 of its cache file(s) go into a small entry
  `csm-checksums/<key>.json` beside them (written atomically), keyed by the step's input and what defines
  its result. Before the step runs again (a rerun, `--resume`), every file of its entry is checked: a file
  that fails is deleted, with one warning naming it, so `datasets` recomputes it instead of reusing it.
  The output's shards are hard links to these files, so a damaged output shard is caught here too.
- Locks. A shard's steps run under a lock keyed by the shard's fingerprint: two runs sharing a cache
  never write (or check and delete) the same entry at once; the second waits, then reuses. These are
  record locks (`lockf`), not `flock`s (as `filelock` takes): datasets' forked pool workers do not inherit
  them, so workers that outlive a killed run hold nothing.
- Leftovers. A `.map` writes a `tmp*` file and renames it when done; a killed run leaves it behind. Every
  run holds a shared lock on `csm-runs.lock` for its life; a run that gets it exclusively (no other run
  is alive) first removes the `tmp*` files and unfinished entries of dead runs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
from datasets.fingerprint import Hasher

from csm_synthetic.folders import locked, try_lock

from .checksums import file_checksum, file_problem

logger = logging.getLogger(__name__)

CHECKSUMS_DIR = "csm-checksums"
LOCKS_DIR = "csm-locks"
RUNS_LOCK = "csm-runs.lock"
MAP_TEMPORARY = "tmp*"  # how datasets names a map's file until it is complete (tempfile's default prefix)


class MapCache:
    """The folder in which the maps of a dataset cache their results (None: caching is off, nothing to check)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.checksums: dict[Path, dict] = {}  # every cache file checked or written in this run
        self._runs_fd: int | None = None

    @classmethod
    def of(cls, dataset: datasets.Dataset) -> MapCache:
        files = dataset.cache_files
        return cls(Path(files[0]["filename"]).parent if files and datasets.is_caching_enabled() else None)

    def __enter__(self) -> MapCache:
        if self.folder is not None:
            self._runs_fd = os.open(self.folder / RUNS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            if try_lock(self._runs_fd):
                self.remove_leftovers()  # no other run is alive: what is half-written is a dead run's
            fcntl.lockf(self._runs_fd, fcntl.LOCK_SH)  # an exclusive lock becomes shared at once
        return self

    def __exit__(self, *exc_info) -> None:
        if self._runs_fd is not None:
            os.close(self._runs_fd)
            self._runs_fd = None

    def remove_leftovers(self) -> None:
        leftovers = [path for path in self.folder.glob(MAP_TEMPORARY) if path.is_file()]
        leftovers += list((self.folder / CHECKSUMS_DIR).glob("*.partial"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            logger.warning("removed %d unfinished cache files of interrupted runs from %s", len(leftovers), self.folder)

    @contextmanager
    def shard_lock(self, fingerprint: str) -> Iterator[None]:
        """Hold the lock of one shard's cache entries (waiting, with one warning, for a run that holds it)."""
        if self.folder is None:
            yield
            return
        (self.folder / LOCKS_DIR).mkdir(exist_ok=True)
        with locked(self.folder / LOCKS_DIR / f"{fingerprint}.lock", on_wait=lambda: logger.warning(
            "waiting for another run that is writing the same shard into the cache %s", self.folder
        )):
            yield

    def checked(self, source: datasets.Dataset, identity, compute: Callable[[], datasets.Dataset]) -> datasets.Dataset:
        """`compute()` (a `.map` of `source`), its cached files checked before reuse and recorded after.

        `identity` is what, besides `source`, defines the result (the transform, not how it runs: device,
        batch size, processes): the key of the entry that remembers the result's files.
        """
        if self.folder is None:
            return compute()
        entry_path = self.folder / CHECKSUMS_DIR / f"{Hasher.hash([source._fingerprint, identity])}.json"
        recorded = read_entry(entry_path)
        for name, expected in recorded.items():
            self.check(self.folder / name, expected)
        result = compute()
        files = [Path(cache["filename"]) for cache in result.cache_files]
        entry = {path.name: self.checksum(path) for path in files if path.parent == self.folder}
        if entry != recorded:
            entry_path.parent.mkdir(exist_ok=True)
            partial = entry_path.with_name(f"{entry_path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(entry, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(partial, entry_path)
        return result

    def check(self, path: Path, expected: dict) -> None:
        """Keep `path` if it is the file that was recorded; delete it (so that it is recomputed) if not."""
        if not path.exists():
            return  # removed since: the map writes it anew
        problem = file_problem(path, expected)
        if problem is None:
            self.checksums[path] = expected
            return
        logger.warning("cache file %s is %s: deleted, it is computed again", path, problem)
        path.unlink()

    def checksum(self, path: Path) -> dict:
        """The checksum of a cache file this run checked or wrote (computed once)."""
        if path not in self.checksums:
            self.checksums[path] = file_checksum(path)
        return self.checksums[path]


def read_entry(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        logger.warning("%s is unreadable: the cache files it lists cannot be checked this time", path)
        return {}
