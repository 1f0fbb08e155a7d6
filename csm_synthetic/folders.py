"""Output folders that a command writes whole: one run at a time, replaced atomically, left clean after a crash.

    with FolderLock(output, flag="--output_dir"):          # a second run exits 2 naming this one's pid
        recover_replacement(output, is_complete)           # mend what a crashed run left beside the folder
        build = sibling(output, PARTIAL)                    # build the new folder beside the old one...
        ...
        replace_folder(build, output)                       # ...and swap it in with renames

- The lock is a file beside the folder (`.<name>.lock`: it must survive the folder's own replacement)
  holding the pid, host and command of its run. It is created with its content in one `link`, and held
  with a POSIX record lock (`lockf`) for the run's life. The kernel drops the record lock of a process
  that dies, and forked workers do not inherit it (datasets' pool workers can outlive a killed run, and
  an inherited `flock` would stay held by them): a lock whose record lock is free and whose process is
  gone on this host is stale and is taken over with one warning.
- Siblings `.<name>.partial` (the folder being built) and `.<name>.old` (the folder being replaced) belong
  to the run that holds the lock; whatever of them a dead run left is mended or removed by the next one.

Light: no datasets, torch or transformers.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, WriteError

logger = logging.getLogger(__name__)

PARTIAL, OLD = "partial", "old"
# errno of a write that failed for want of room (or of a working disk): the run stops, resumably.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


_HELD_HERE: set[Path] = set()  # the lock files this process holds


def sibling(folder: Path, role: str) -> Path:
    """The hidden sibling `.<name>.<role>` of `folder` (same filesystem, so renames between them are atomic)."""
    return folder.parent / f".{folder.name}.{role}"


class FolderLocked(InputError):
    """Another run holds the folder's lock (exit status 2)."""


class FolderLock:
    """One run at a time on `folder`; see the module docstring. A context manager."""

    def __init__(self, folder: str | os.PathLike, flag: str = "--output_dir"):
        self.folder = Path(folder).resolve()
        self.flag = flag
        self.path = sibling(self.folder, "lock")
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        if self.path in _HELD_HERE:  # a record lock does not keep out its own process (and closing any
            raise FolderLocked(self._held_message(own_record()))  # descriptor of the file would drop it)
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            mine = self.path.with_name(f"{self.path.name}.{os.getpid()}")
            fd = os.open(mine, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as error:
            raise InputError(f"cannot write to {self.flag} {str(self.folder)!r}: {error}") from error
        try:
            os.write(fd, json.dumps(own_record()).encode())
            fcntl.lockf(fd, fcntl.LOCK_EX)  # nobody else knows this file yet: it is held the moment it appears
            for _ in range(10):  # another run may release or replace the lock between our steps: look again
                try:
                    os.link(mine, self.path)
                    break
                except FileExistsError:
                    if self._take_over_if_stale(mine):
                        break
            else:
                raise InputError(f"cannot take the lock {self.path}: it keeps changing; is another run starting?")
        except BaseException:
            os.close(fd)
            raise
        finally:
            mine.unlink(missing_ok=True)
        self._fd = fd
        _HELD_HERE.add(self.path)

    def _take_over_if_stale(self, mine: Path) -> bool:
        """True if the lock at `self.path` was a dead run's and is now ours; raises `FolderLocked` if it lives."""
        try:
            other = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False  # released meanwhile
        try:
            holder = read_record(other)
            if not try_lock(other):
                raise FolderLocked(self._held_message(holder))
            if not same_file(other, self.path):
                return False  # replaced meanwhile by a run that took it over
            if holder.get("host") != socket.gethostname() or process_alive(holder.get("pid")):
                raise FolderLocked(self._held_message(holder) + f"; if that run is gone, delete {self.path}")
            os.replace(mine, self.path)
            logger.warning(
                "%s %s: took over the lock of process %s, which is no longer running (killed?)",
                self.flag, self.folder, holder.get("pid"),
            )
            return True
        finally:
            os.close(other)

    def _held_message(self, holder: dict) -> str:
        since = holder.get("since")
        started = f", started {since}" if since else ""
        return (
            f"{self.flag} {str(self.folder)!r} is in use by another run: process {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}{started} ({holder.get('command', 'command unknown')}); "
            "wait for it to finish or stop it, or choose another folder"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        if same_file(self._fd, self.path):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        _HELD_HERE.discard(self.path)


def try_lock(fd: int) -> bool:
    """Take an exclusive record lock on the open file `fd` if it is free (True), without waiting."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


@contextmanager
def locked(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a file made for it, removed after), waiting for a run that holds it.

    `on_wait` is called once before waiting. A record lock like `FolderLock`'s: a dead holder holds nothing.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not try_lock(fd):
            if on_wait is not None:
                on_wait()
                on_wait = None
            fcntl.lockf(fd, fcntl.LOCK_EX)
        if same_file(fd, path):
            break
        os.close(fd)  # its holder removed it while we waited: lock the file now at `path`
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def own_record() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join(sys.argv),
    }


def read_record(fd: int) -> dict:
    try:
        record = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def process_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


# --- building beside and swapping in ----------------------------------------------------------


def replace_folder(new: Path, folder: Path) -> None:
    """Put the finished `new` at `folder` with renames; an earlier `folder` is removed after.

    A crash between the two renames leaves both beside the folder: `recover_replacement` finishes the swap.
    """
    old = sibling(folder, OLD)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def swapped_in(build: Path, folder: Path) -> Iterator[None]:
    """What the block writes into `build` is put in place of `folder` when it completes (`replace_folder`), and
    removed when it fails: the old `folder` stays as it was until then. Neither when `build` is `folder` itself
    (a run writing into its output)."""
    if build == folder:
        yield
        return
    try:
        yield
        replace_folder(build, folder)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def recover_replacement(folder: Path, is_complete: Callable[[Path], bool]) -> None:
    """Under the folder's lock: mend a replacement a dead run left half done, and remove its leftovers.

    Missing `folder` with an `.old` beside it means a crash between the renames of `replace_folder`: the new
    folder goes into place if it is complete, else the old one goes back. The rest is scratch of dead runs.
    """
    old, partial = sibling(folder, OLD), sibling(folder, PARTIAL)
    if not folder.exists() and old.is_dir():
        restored = partial if partial.is_dir() and is_complete(partial) else old
        os.replace(restored, folder)
        logger.warning("%s: an interrupted replacement is finished (%s put in place)", folder, restored.name)
    legacy = [*folder.parent.glob(f".{folder.name}.{PARTIAL}-*"), *folder.parent.glob(f".{folder.name}.{OLD}-*")]
    for leftover in [old, partial, *legacy]:
        if leftover.exists():
            logger.warning("removing %s, left by an interrupted run", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


# --- a disk that fills up ---------------------------------------------------------------------


@contextmanager
def write_errors(*folders: str | os.PathLike | None) -> Iterator[None]:
    """An `OSError` of a full disk (or one that cannot be written) becomes a `WriteError` naming the folders."""
    try:
        yield
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        where = " and ".join(repr(str(folder)) for folder in folders if folder)
        raise WriteError(
            f"stopped: {os.strerror(error.errno)} while writing to {where} ({error}); what is finished is kept: "
            "free some space"
        ) from error
