#!/usr/bin/env python
"""Summarise a raw corpus before preparing it: conversations, turns and hours per language and split,
speakers, audio formats, the longest turns, and every problem by conversation and turn.

Reads only scripts and audio headers (fast). With --json, writes the whole summary, including the list
of problems, as JSON.

Example:
    uv run python scripts/inspect_corpus.py --input_dir synthetic-dataset --json corpus_summary.json
"""

from __future__ import annotations

import argparse
import sys

from csm_synthetic.cli import HelpFormatter, add_corpus_arguments, corpus_settings, run
from csm_synthetic.inspect import format_summary, inspect_corpus, write_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--input_dir", required=True, help="the corpus root (language folders inside)")
    parser.add_argument("--json", default=None, help="also write the whole summary, with every problem, to this file")
    add_corpus_arguments(parser, sampling_rate=False)
    return parser


def inspect(arguments: argparse.Namespace) -> None:
    summary = inspect_corpus(arguments.input_dir, corpus_settings(arguments))
    print(format_summary(summary))
    if arguments.json:
        print(f"\nsummary written to {write_summary(summary, arguments.json)}")


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    return run(lambda: inspect(arguments))


if __name__ == "__main__":
    sys.exit(main())
