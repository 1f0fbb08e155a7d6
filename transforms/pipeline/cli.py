"""Command-line pieces shared by the scripts: arguments, error handling, the end summary."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from csm_synthetic.cli import add_corpus_arguments
from csm_synthetic.corpus import ALL_LANGUAGES

from ..core.csm import DEFAULT_CODEC_MODEL_ID, DEFAULT_MODEL_ID
from .options import CODES_FORMAT, PROCESSOR_FORMAT, REPORT_NAME, PrepareError, PrepareOptions
from ..core.windows import DEFAULT_MAX_TOKENS


def optional_int(value: str) -> int | None:
    """'None' (or 'all') means no limit."""
    if value.lower() in ("none", "all"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or None, got {value!r}") from None


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input_dir", required=True, help="the corpus root (language folders inside)")
    parser.add_argument("--output_dir", required=True, help="where the splits and prepare_report.json go")
    parser.add_argument("--batch_size", type=int, default=100, help="conversations per output shard (default 100)")
    parser.add_argument(
        "--max_history",
        type=optional_int,
        default=None,
        help="previous turns of context per sample; None = all that fit --max_tokens (default None)",
    )
    parser.add_argument("--resume", action="store_true", help="finish an interrupted run into the same --output_dir")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output_dir")
    parser.add_argument("--model_id", default=DEFAULT_MODEL_ID, help=f"CSM processor: Hub id or local folder (default {DEFAULT_MODEL_ID})")
    parser.add_argument(
        "--max_tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"token budget of a sample; oldest context turns are dropped to fit (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument("--language", default=ALL_LANGUAGES, help="one language folder, or 'all' (default)")
    parser.add_argument(
        "--num_proc", type=int, default=None, help="worker processes per shard (default: all CPU cores)"
    )
    parser.add_argument(
        "--depth_decoder_labels_ratio",
        type=float,
        default=1.0,
        help="share of audio frames that train the depth decoder too; the rest get label -101 (default 1.0)",
    )
    add_corpus_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the -101 label draws (default 0)")
    parser.add_argument("--cache_dir", default=None, help="datasets cache (default: the datasets default cache)")
    codes = parser.add_argument_group("Mimi codes format (--format codes)")
    codes.add_argument(
        "--format",
        choices=(PROCESSOR_FORMAT, CODES_FORMAT),
        default=PROCESSOR_FORMAT,
        help="processor: audio + labels as CsmProcessor makes them (default); codes: each turn's Mimi codes, "
        "encoded once, for codec-free training",
    )
    codes.add_argument(
        "--codec_model_id", default=DEFAULT_CODEC_MODEL_ID, help=f"MimiModel Hub id or folder (default {DEFAULT_CODEC_MODEL_ID})"
    )
    codes.add_argument("--device", default="auto", help="where the codec runs: auto (GPU when present), cpu, cuda")
    codes.add_argument(
        "--encode_batch_size", type=int, default=None, help="turns per codec call (default: 16 on GPU, 1 on CPU)"
    )


def options_from_arguments(arguments: argparse.Namespace) -> PrepareOptions:
    values = {name: getattr(arguments, name) for name in PrepareOptions.__dataclass_fields__}
    if values["num_proc"] is None:
        values["num_proc"] = os.cpu_count() or 1
    return PrepareOptions(**values)


def run_cli(work: Callable[[], None]) -> int:
    """Run `work`; a `PrepareError` (bad input or arguments) becomes a message and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        work()
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def print_summary(report: dict) -> None:
    counts, audio = report["counts"], report["audio"]
    print()
    print(f"Prepared {counts['samples']} samples from {counts['conversations']} conversations "
          f"({counts['turns']} turns, {audio['hours']:.2f} audio hours) in {report['elapsed_seconds']:.1f} s")
    for split, numbers in counts["by_split"].items():
        print(f"  {split:<10} {numbers['conversations']:>6} conversations {numbers['samples']:>8} samples")
    tokens = report["tokens"]["sample_tokens"]
    if tokens.get("count"):
        print(f"  tokens per sample: mean {tokens['mean_tokens']:.0f}, max {tokens['max_tokens']:.0f}")
    print(f"  skipped samples: {counts['skipped_samples']}   corpus problems: {counts['problems']}")
    kinds: dict[str, int] = {}
    for problem in report["problems"]:
        kinds[problem["kind"]] = kinds.get(problem["kind"], 0) + 1
    for kind, count in sorted(kinds.items()):
        print(f"    {kind}: {count}")
    print(f"  report: {report['arguments']['output_dir']}/{REPORT_NAME}")
