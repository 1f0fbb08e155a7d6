#!/usr/bin/env python
"""Summarise a raw corpus before preparing it: conversations, turns and hours per language and split,
speakers, audio formats, the longest turns, and every problem by conversation and turn.

Reads a corpus folder, a manifest of turns or a datasets dataset of turns; only scripts (or rows) and audio
headers are read (fast). With --measures, every turn is decoded and measured as the quality checks of
prepare_dataset_for_training.py measure it: per language, the distributions of duration, speaking rate
(letters per second of speech), leading and trailing silence, clipping and level, to choose thresholds
before preparing; --plots DIR draws them (matplotlib: uv sync --extra hub). With --json, writes the whole summary, including the list
of problems, as JSON.

Example:
    uv run python scripts/inspect_corpus.py --input_dir synthetic-dataset --json corpus_summary.json
    uv run python scripts/inspect_corpus.py --input_manifest turns.jsonl --measures --plots plots
"""

from __future__ import annotations

import argparse
import sys

from csm_synthetic.cli import HelpFormatter, add_corpus_arguments, add_input_arguments, corpus_settings, input_arguments, run
from csm_synthetic.inspect import format_summary, inspect_corpus, write_summary
from csm_synthetic.sources import input_source


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_input_arguments(parser)
    parser.add_argument("--cache_dir", default=None, help="--input_dataset: the datasets cache (default: its default)")
    parser.add_argument("--json", default=None, help="also write the whole summary, with every problem, to this file")
    parser.add_argument("--measures", action="store_true", help="decode every turn and show the quality measures")
    parser.add_argument("--plots", default=None, metavar="DIR", help="draw the measures' histograms here (implies --measures)")
    add_corpus_arguments(parser, sampling_rate=False)
    return parser


def inspect(arguments: argparse.Namespace) -> None:
    source = input_source(**input_arguments(arguments), cache_dir=arguments.cache_dir)
    summary = inspect_corpus(source, corpus_settings(arguments), measures=arguments.measures or bool(arguments.plots))
    print(format_summary(summary))
    if arguments.plots:
        from transforms.export.measure_figures import write_measure_figures  # matplotlib: only to draw

        print(f"\n{len(write_measure_figures(summary['measures'], arguments.plots))} figures written to {arguments.plots}")
    if arguments.json:
        print(f"\nsummary written to {write_summary(summary, arguments.json)}")


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    return run(lambda: inspect(arguments))


if __name__ == "__main__":
    sys.exit(main())
