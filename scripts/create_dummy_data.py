"""Write a synthetic podcast corpus in the raw on-disk layout, for demos, tests and benchmarks.

Examples:
    uv run python scripts/create_dummy_data.py --output_dir /tmp/demo --with_faults
    uv run python scripts/create_dummy_data.py --output_dir /tmp/bench --hours 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from csm_synthetic.cli import HelpFormatter, claim_output_dir, run
from csm_synthetic.errors import InputError
from csm_synthetic.testing.demo import FAULT_KINDS, META_FILE, DemoCorpus, create_benchmark_corpus, create_demo_corpus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Write a synthetic two-speaker podcast corpus in the raw layout "
            "(<lang>/<categories>/<conversation>/segments/ with vibevoice-podcast-script.txt and one WAV "
            "per line). The demo corpus mixes file-name spellings, non-padded turn numbers, sample rates "
            "(16/24/44.1 kHz), stereo and float files, BOM/CRLF/blank lines in scripts, and leftover "
            "files. With --hours, a clean benchmark corpus (24 kHz mono PCM_16) is written instead."
        ),
        epilog=(
            "The same --seed always gives the same file names and the same bytes.\n\n"
            "examples:\n"
            "  create_dummy_data.py --output_dir /tmp/demo --with_faults\n"
            "  create_dummy_data.py --output_dir /tmp/bench --hours 1"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--output_dir", type=Path, required=True, help="corpus root to create")
    parser.add_argument("--languages", nargs="+", default=["en", "de", "fr"],
                        help="language folders to write (built-in texts for en, de, fr; others get English)")
    parser.add_argument("--conversations_per_language", type=int, default=4,
                        help="healthy conversations per language (demo corpus)")
    parser.add_argument("--min_turns", type=int, default=6, help="fewest script lines per conversation (demo corpus)")
    parser.add_argument("--max_turns", type=int, default=12, help="most script lines per conversation (demo corpus)")
    parser.add_argument("--min_seconds", type=float, default=2.0, help="shortest turn, in seconds")
    parser.add_argument("--max_seconds", type=float, default=12.0, help="longest turn, in seconds")
    parser.add_argument("--with_faults", action="store_true",
                        help=f"add one faulty conversation under en/Faulty/ per known fault: {', '.join(FAULT_KINDS)}")
    parser.add_argument("--hours", type=float, default=None,
                        help="write a healthy benchmark corpus of about this many audio hours "
                             "(20-turn conversations) instead of the demo corpus")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing corpus made by this script in --output_dir")
    return parser


def summary(corpus: DemoCorpus) -> str:
    return (f"Wrote {len(corpus.conversations)} conversations, {corpus.total_turns} turns, "
            f"{corpus.total_seconds / 3600:.2f} audio hours, {len(corpus.faults)} faults injected "
            f"to {corpus.root}")


def write_corpus(args: argparse.Namespace) -> None:
    if claim_output_dir(args.output_dir, overwrite=args.overwrite, marker=f"no {META_FILE}",
                        is_ours=lambda folder: (folder / META_FILE).is_file()):
        shutil.rmtree(args.output_dir)
    seconds = (args.min_seconds, args.max_seconds)
    try:
        if args.hours is not None:
            corpus = create_benchmark_corpus(args.output_dir, hours=args.hours, seconds=seconds,
                                             languages=args.languages, seed=args.seed)
        else:
            corpus = create_demo_corpus(
                args.output_dir, languages=args.languages,
                conversations_per_language=args.conversations_per_language,
                turns=(args.min_turns, args.max_turns), seconds=seconds,
                with_faults=args.with_faults, seed=args.seed,
            )
    except ValueError as error:
        raise InputError(str(error)) from error
    print(summary(corpus))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.hours is not None and args.with_faults:
        parser.error("--with_faults applies to the demo corpus only; the --hours benchmark corpus is healthy")
    return run(lambda: write_corpus(args))

if __name__ == "__main__":
    sys.exit(main())
