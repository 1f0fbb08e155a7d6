"""Command-line pieces every script shares. Light: importing this costs no datasets, torch or transformers.

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_corpus_arguments(parser)
    ...
    sys.exit(run(lambda: work(arguments), continue_with=command_line(__file__, argv)))
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from .errors import CommandError, ExitCode, InputError
from .settings import HELP, CorpusSettings


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows defaults, except meaningless (None, off flags) or already given ones."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_corpus_arguments(parser, sampling_rate: bool = True) -> None:
    """One flag per `CorpusSettings` field, on `parser` or an argument group (defaults from the dataclass)."""
    for field in fields(CorpusSettings):
        if field.name == "target_sampling_rate" and not sampling_rate:
            continue
        parser.add_argument(
            f"--{field.name}", type=type(field.default), default=field.default,
            help=HELP[field.name],
        )


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say where the turns come from: exactly one of a corpus folder, a manifest, a dataset."""
    group = parser.add_argument_group("input (exactly one of --input_dir, --input_manifest, --input_dataset)")
    sources = group.add_mutually_exclusive_group(required=True)
    sources.add_argument("--input_dir", help="a corpus root in the layout of CORPUS.md (language folders inside)")
    sources.add_argument(
        "--input_manifest",
        help="a JSONL or CSV file, one row per turn: conversation_id, turn_index, speaker, text, audio (path relative "
        "to the manifest), optional start/end (seconds into the file), language",
    )
    sources.add_argument(
        "--input_dataset", help="a datasets dataset of turns with the manifest's columns: a Hub id or a local folder"
    )
    group.add_argument("--input_config", help="the config of --input_dataset")
    group.add_argument(
        "--columns",
        help="--input_dataset's names for our columns, e.g. conversation_id=episode,turn_index=idx,audio=clip",
    )


def input_arguments(arguments: argparse.Namespace) -> dict:
    """The values of `add_input_arguments`' flags, by name (for `csm_synthetic.sources.input_source`)."""
    names = ("input_dir", "input_manifest", "input_dataset", "input_config", "columns")
    return {name: getattr(arguments, name) for name in names}


def corpus_settings(arguments: argparse.Namespace) -> CorpusSettings:
    """The `CorpusSettings` of parsed arguments (fields without a flag keep their defaults)."""
    return CorpusSettings(**{name: getattr(arguments, name) for name in CorpusSettings.names() if hasattr(arguments, name)})


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the command (a `KeyboardInterrupt`, so every cleanup that handles Ctrl-C runs)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = {
    signal.SIGINT: ("Ctrl-C (SIGINT)", ExitCode.INTERRUPTED),
    signal.SIGTERM: ("SIGTERM", ExitCode.TERMINATED),
}
FORCE_AFTER_SECONDS = 5  # a cleanup that hangs (a worker pool whose worker died holding its queue lock) is cut short


@contextmanager
def stop_on_signals(stopped_line: Callable[[int], str]) -> Iterator[None]:
    """SIGINT and SIGTERM raise `Stopped` in this process, so that every cleanup runs.

    If the cleanup has not ended `FORCE_AFTER_SECONDS` later, or a second signal comes, the process
    prints `stopped_line(signal)` and exits at once. Forked workers (datasets' `num_proc` pool) ignore
    SIGINT, which Ctrl-C sends them too: the main process stops them. SIGTERM (which a scheduler may send
    to every process, and the pool sends its workers to stop them) ends a worker with `end_worker`.
    """
    main_pid, stopping, timers = os.getpid(), False, []

    def force(signum: int) -> None:
        print(stopped_line(signum), file=sys.stderr, flush=True)
        os._exit(STOP_SIGNALS[signum][1])

    def stop(signum, frame):
        nonlocal stopping
        if os.getpid() != main_pid:
            if signum == signal.SIGTERM:
                end_worker(frame, STOP_SIGNALS[signum][1])
            return
        if stopping:
            force(signum)
        stopping = True
        timer = threading.Timer(FORCE_AFTER_SECONDS, force, (signum,))
        timer.daemon = True
        timer.start()
        timers.append(timer)
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for timer in timers:
            timer.cancel()


def end_worker(frame, status: int) -> None:
    """End a forked worker without taking its pool's queue locks with it.

    A pool worker waiting for work holds its task queue's read lock: killed there, it keeps the lock for
    ever and the pool can never be shut down. There `SystemExit` leaves the queue's `with lock:` block
    first; anywhere else (the work itself, fork handlers that would swallow an exception) the worker ends
    at once.
    """
    while frame is not None:
        code = frame.f_code
        if code.co_name in ("get", "put") and Path(code.co_filename).parent.name in ("multiprocess", "multiprocessing"):
            raise SystemExit(status)
        frame = frame.f_back
    os._exit(status)


def command_line(script: str, argv: list[str] | None = None) -> list[str]:
    """The command the user ran, as words: the interpreter and `script` as invoked, then `argv` (default: its own)."""
    argv = sys.argv[1:] if argv is None else argv
    if sys.argv and Path(sys.argv[0]).resolve() == Path(script).resolve():
        interpreter = sys.orig_argv[: len(sys.orig_argv) - len(sys.argv)]
        return [*interpreter, sys.argv[0], *argv]
    return [Path(sys.executable).name, os.path.relpath(script), *argv]  # called as a function (tests)


def run(work: Callable[[], int | None], continue_with: list[str] | None = None) -> int:
    """Run a command's `work` and return its exit status.

    A `CommandError` becomes its message on stderr and its `exit_code`. SIGINT (Ctrl-C) and SIGTERM become
    one line saying so and status 130 or 143, never a traceback. After a signal, and after an error that
    leaves a run to finish (`resumable`), the line ends with `continue_with`: the command that goes on.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    how_to_continue = f"; continue with: {shlex.join(continue_with)}" if continue_with else ""

    def stopped_line(signum: int) -> str:
        kept = f": what is finished is kept{how_to_continue}" if continue_with else ""
        return f"\nstopped by {STOP_SIGNALS[signum][0]}{kept}"

    try:
        with stop_on_signals(stopped_line):
            return int(work() or ExitCode.OK)
    except BaseException as error:
        signum = stop_signal(error)
        if signum is not None:
            print(stopped_line(signum), file=sys.stderr)
            return int(STOP_SIGNALS[signum][1])
        if not isinstance(error, CommandError):
            raise
        print(f"error: {error}{how_to_continue if error.resumable else ''}", file=sys.stderr)
        return int(error.exit_code)


def stop_signal(error: BaseException) -> int | None:
    """The signal that stopped the command, if `error` is (or was raised while handling) an interrupt.

    Cleanup code may raise while an interrupt unwinds it (datasets' worker pool does): the interrupt is
    still what happened.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return getattr(error, "signum", signal.SIGINT)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def claim_output_dir(
    folder: str | Path,
    *,
    overwrite: bool,
    is_ours: Callable[[Path], bool],
    marker: str,
    flag: str = "--output_dir",
    other_ways: str = "",
) -> bool:
    """Check that a command may write into `folder`; True when it holds an earlier output of ours to replace.

    An absent or empty folder may be written. A non-empty one only with `overwrite`, and only when
    `is_ours(folder)` (this tool wrote it, as `marker` in the messages says): a typo in a path must never
    wipe unrelated data. `other_ways` names what else the user may do with an existing folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{flag} {str(folder)!r} exists and is not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return False
    if not overwrite:
        raise InputError(
            f"{flag} {str(folder)!r} already holds files: pass --overwrite to replace it{other_ways}, "
            "or choose another folder"
        )
    if not is_ours(folder):
        raise InputError(
            f"refusing to replace {flag} {str(folder)!r}: it was not written by this tool ({marker}); "
            "remove it yourself or choose another folder"
        )
    return True
