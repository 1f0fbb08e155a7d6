#!/usr/bin/env python
"""Publish the raw corpus or prepared training samples as a Hugging Face Hub dataset repository.

The repository holds Parquet shards with the audio embedded (data/<config>/<split>-NNNNN-of-MMMMM.parquet),
histogram figures and a README.md dataset card whose YAML declares configs, splits and features, so
`datasets.load_dataset("<repo_id>", "<config>")` works. The raw corpus gets one config per language plus
`all` (the default); prepared samples get one default config.

With --to_dir the repository is written to a local folder instead (exactly what would be uploaded;
`load_dataset("<to_dir>", "<config>")` reads it offline). An upload builds that same folder in a
temporary place first, then uploads it; an interrupted upload continues when re-run.

The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from csm_synthetic.cli import HelpFormatter, add_corpus_arguments, command_line, corpus_settings, run
from csm_synthetic.errors import ExitCode
from transforms.core.csm import DEFAULT_MODEL_ID
from transforms.export.hub import DEFAULT_MAX_SHARD_SIZE, PublishOptions, print_summary, publish

EPILOG = f"""\
examples:
  push_to_hub.py --input_dir synthetic-dataset --repo_id me/csm-podcasts --private
  push_to_hub.py --prepared_dir prepared --repo_id me/csm-podcasts-samples --model_id sesame/csm-1b
  push_to_hub.py --input_dir synthetic-dataset --to_dir repo && push_to_hub.py --staged_dir repo --repo_id me/x

exit status: 0 done, {ExitCode.USAGE} bad arguments or input (or a full disk), {ExitCode.AUTH} no token / token
rejected / permission denied, {ExitCode.NETWORK} Hub unreachable, {ExitCode.REMOTE} repository has another layout,
Hub refused, or upload incomplete, {ExitCode.INTERRUPTED} Ctrl-C, {ExitCode.TERMINATED} SIGTERM (re-run the same
command to continue)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    source = parser.add_argument_group("what to publish (one of)")
    source.add_argument("--input_dir", help="the raw corpus root (language folders inside), read through the builder")
    source.add_argument("--prepared_dir", help="an --output_dir of prepare_dataset_for_training.py")
    source.add_argument("--staged_dir", help="a folder written earlier with --to_dir: upload it as it is")
    target = parser.add_argument_group(
        "where to (--repo_id, --to_dir, or both: a local folder whose card names the repo)"
    )
    target.add_argument("--repo_id", help="Hub dataset repository, e.g. me/csm-podcasts (created if missing)")
    target.add_argument("--to_dir", help="write the repository to this folder instead of uploading it")
    target.add_argument("--private", action="store_true", help="create the repository as private")
    target.add_argument(
        "--max_shard_size",
        default=DEFAULT_MAX_SHARD_SIZE,
        help="size of a Parquet shard before compression (rows split evenly; also bounds memory while writing)",
    )
    target.add_argument(
        "--force", action="store_true", help="replace the content of an existing repository that has another layout"
    )
    target.add_argument(
        "--overwrite", action="store_true", help="replace a --to_dir folder written earlier by this script"
    )
    target.add_argument("--staging_dir", help="where an upload builds its repository folder (default: the system temp)")
    prepared = parser.add_argument_group("publishing prepared samples (--prepared_dir)")
    prepared.add_argument(
        "--model_id",
        help="Hub id of the CSM model the card's training snippet fine-tunes (default: the prepare run's "
        f"--model_id when it is a Hub id, else {DEFAULT_MODEL_ID})",
    )
    raw = parser.add_argument_group("reading the raw corpus (--input_dir)")
    raw.add_argument("--cache_dir", help="datasets cache for the corpus builder (default: the datasets default)")
    add_corpus_arguments(raw)
    return parser


def options_from_arguments(arguments: argparse.Namespace) -> PublishOptions:
    names = [field.name for field in fields(PublishOptions) if field.name != "settings"]
    return PublishOptions(**{name: getattr(arguments, name) for name in names}, settings=corpus_settings(arguments))


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    logging.getLogger("transforms.export").setLevel(logging.INFO)

    def work() -> None:
        print_summary(publish(options_from_arguments(arguments)))

    # nothing half-written is left looking complete, and a rebuilt repository is byte for byte the same (an
    # upload skips what is committed): the same command continues
    return run(work, continue_with=command_line(__file__, argv))


if __name__ == "__main__":
    sys.exit(main())
