"""Command-line pieces the scripts share. Light: importing this costs no datasets, torch or transformers."""

from __future__ import annotations

import argparse

from .audio import DEFAULT_SAMPLING_RATE
from .corpus import DEFAULT_MAX_TURN_SECONDS
from .splits import DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows defaults, except meaningless (None, off flags) or already given ones."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_corpus_arguments(parser, sampling_rate: bool = True) -> None:
    """The options of reading a raw corpus (they shape the builder's rows and splits), on `parser` or a group."""
    parser.add_argument(
        "--validation_fraction",
        type=float,
        default=DEFAULT_VALIDATION_FRACTION,
        help=f"share of conversations in validation, by a hash of their id (default {DEFAULT_VALIDATION_FRACTION})",
    )
    parser.add_argument(
        "--test_fraction",
        type=float,
        default=DEFAULT_TEST_FRACTION,
        help=f"share of conversations in test, by a hash of their id (default {DEFAULT_TEST_FRACTION})",
    )
    parser.add_argument(
        "--max_turn_seconds",
        type=float,
        default=DEFAULT_MAX_TURN_SECONDS,
        help=f"a turn longer than this is a fault (default {DEFAULT_MAX_TURN_SECONDS:g})",
    )
    if sampling_rate:
        parser.add_argument(
            "--target_sampling_rate",
            type=int,
            default=DEFAULT_SAMPLING_RATE,
            help=f"audio rate of the rows (default {DEFAULT_SAMPLING_RATE}, Mimi's); files of other rates are resampled",
        )
