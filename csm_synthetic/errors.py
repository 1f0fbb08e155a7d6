"""How a command says it cannot go on: an error carrying a message for the user and an exit status.

Every layer raises `InputError` for bad arguments or input (exit status 2); `csm_synthetic.cli.run`
turns any `CommandError` into its message and status, so the mapping lives in this one place.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the work ran and found faults (verify_shard.py)
    USAGE = 2  # bad arguments or input, refused before any work; or the disk filled up (`WriteError`)
    AUTH = 3  # no token, token rejected, permission denied
    NETWORK = 4  # the Hub cannot be reached (or answered 5xx)
    REMOTE = 5  # the repository has another layout, the Hub refused, or the upload is incomplete
    INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it
    TERMINATED = 143  # SIGTERM (what a job scheduler sends): 128 + SIGTERM


class CommandError(Exception):
    """A failure with a message for the user; `exit_code` is the command's exit status."""

    exit_code = ExitCode.USAGE
    resumable = False  # True: `csm_synthetic.cli.run` adds the command that continues the run


class InputError(CommandError, ValueError):
    """Bad arguments or input, named in the message (a `ValueError` too, for library callers)."""

    exit_code = ExitCode.USAGE


class WriteError(CommandError):
    """The disk filled up (or another write failed) part way: what is finished is kept, the run can continue."""

    exit_code = ExitCode.USAGE
    resumable = True
