#!/usr/bin/env python
"""Verify a prepare_dataset_for_training.py output (either engine's), file by file and row by row.

Checks first that every file has the size and checksum the report recorded when it was written (naming
each missing, truncated or damaged one; --resume of the same prepare command repairs them), then that the
token columns agree in length and fit --max_tokens, that each audio segment's <|AUDIO|> run matches its
audio length by the processor's rule, that labels sit only on audio positions, and that no sample holds
more than max_history + 1 turns. Exits 1 and lists the reasons when a file or a row fails.
"""

from __future__ import annotations

import argparse
import sys

from csm_synthetic.cli import HelpFormatter, run
from csm_synthetic.errors import ExitCode


def verify(arguments: argparse.Namespace) -> int:
    from transforms.pipeline.verify import verify_output  # heavy (datasets, transformers): after the arguments

    result = verify_output(arguments.output_dir, arguments.model_id)
    if result.files is None:
        print("files: not checked, the report records no checksums (an older version wrote it)")
    else:
        print(f"{'files':<10} {result.files:>8} checked against the report's checksums")
    for split, rows in result.rows.items():
        print(f"{split:<10} {rows:>8} rows checked")
    if result.ok:
        print(f"OK: all {sum(result.rows.values())} rows are sound")
        return ExitCode.OK
    for error in result.errors:
        print(f"FAIL {error}")
    if result.error_count > len(result.errors):
        print(f"... and {result.error_count - len(result.errors)} more")
    print(f"{result.error_count} problems found", file=sys.stderr)
    return ExitCode.FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", required=True, help="the folder prepare_dataset_for_training.py wrote")
    parser.add_argument("--model_id", default=None, help="processor to check against (default: the one in the report)")
    arguments = parser.parse_args(argv)
    return run(lambda: verify(arguments))


if __name__ == "__main__":
    sys.exit(main())
