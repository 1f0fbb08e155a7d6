"""Command-line pieces every script shares. Light: importing this costs no datasets, torch or transformers.

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_corpus_arguments(parser)
    ...
    sys.exit(run(lambda: work(parser.parse_args())))
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
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


def run(work: Callable[[], int | None], interrupted: str = "interrupted") -> int:
    """Run a command's `work` and return its exit status.

    A `CommandError` becomes its message on stderr and its `exit_code`; Ctrl-C becomes one line
    (`interrupted`: what the user does next) and status 130, never a traceback.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(work() or ExitCode.OK)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return int(error.exit_code)
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


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
