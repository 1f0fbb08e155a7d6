#!/usr/bin/env python
"""Prepare a synthetic conversational corpus as contextual CSM training samples.

Reads the corpus under --input_dir (see CORPUS.md), builds one training sample per turn with up to
--max_history previous turns as context, tokenizes it with the CSM processor of --model_id (with labels)
and writes the train/validation/test splits to --output_dir, loadable with `datasets.load_from_disk`.
A killed run is finished by rerunning with --resume; output_dir/prepare_report.json says what was done.
"""

from __future__ import annotations

import argparse
import sys

from csm_synthetic.cli import HelpFormatter, command_line, run
from csm_synthetic.errors import ExitCode
from transforms.pipeline.cli import add_prepare_arguments, options_from_arguments
from transforms.pipeline.options import RAY_ENGINE

EPILOG = f"""\
exit status: 0 done, {ExitCode.USAGE} bad arguments or input (before any work), another run holding --output_dir, or
a full disk; {ExitCode.INTERRUPTED} Ctrl-C, {ExitCode.TERMINATED} SIGTERM. After a full disk or a signal the last line
gives the command that continues: the same one with --resume (what is finished is kept).
"""


def prepare(arguments: argparse.Namespace) -> None:
    options = options_from_arguments(arguments)  # argument errors answer before the heavy imports
    if options.engine == RAY_ENGINE:  # transformers, datasets (and ray): after the arguments are checked
        from transforms.pipeline.ray_engine import prepare_on_ray as prepare
    else:
        options.start_encoders()  # codes format: their start-up overlaps the imports below
        from transforms.pipeline.prepare import prepare
    from transforms.pipeline.report import format_summary

    print(format_summary(prepare(options, resume=arguments.resume, overwrite=arguments.overwrite)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    add_prepare_arguments(parser)
    arguments = parser.parse_args(argv)
    return run(lambda: prepare(arguments), continue_with=continue_command(arguments, argv))


def continue_command(arguments: argparse.Namespace, argv: list[str] | None) -> list[str]:
    """The user's command with --resume; an --overwrite run continues as it is (the old output stays until
    the new one is complete, and the cache keeps every finished shard)."""
    command = command_line(__file__, argv)
    return command if arguments.resume or arguments.overwrite else [*command, "--resume"]


if __name__ == "__main__":
    sys.exit(main())
