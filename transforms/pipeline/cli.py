"""The flags of `prepare_dataset_for_training.py` and the `PrepareOptions` they make. Light: no heavy imports."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from csm_synthetic.cli import add_corpus_arguments, add_input_arguments, corpus_settings

from ..core.quality import CHECKS, HELP as QUALITY_HELP, QualityChecks
from ..encoders import DEFAULT_BUDGET_SECONDS
from .options import ENGINES, FORMATS, PrepareOptions


def optional(convert, none_words: tuple[str, ...], expected: str):
    """An argparse type: `convert(value)`, or None for any of `none_words`."""

    def parse(value: str):
        if value.lower() in none_words:
            return None
        try:
            return convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}") from None

    return parse


optional_int = optional(int, ("none", "all"), "an integer or None")  # no limit
optional_float = optional(float, ("none", "off"), "a number or none")  # a check turned off


def check_names(value: str) -> tuple[str, ...]:
    """A comma-separated list of quality checks, or 'all'."""
    return CHECKS if value.strip() == "all" else tuple(name.strip() for name in value.split(",") if name.strip())


def default(name: str):
    """The default of a `PrepareOptions` field: flags show it, and it is declared there only."""
    return PrepareOptions.__dataclass_fields__[name].default


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of prepare_dataset_for_training.py, on `parser` (defaults shown by `HelpFormatter`)."""
    add_input_arguments(parser)
    parser.add_argument("--output_dir", required=True, help="where the splits and prepare_report.json go")
    parser.add_argument("--batch_size", type=int, default=default("batch_size"), help="conversations per output shard")
    parser.add_argument(
        "--max_history",
        type=optional_int,
        default=default("max_history"),
        help="previous turns of context per sample; None = all that fit --max_tokens (default None)",
    )
    parser.add_argument("--resume", action="store_true", help="finish an interrupted run into the same --output_dir")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this tool in --output_dir")
    parser.add_argument("--model_id", default=default("model_id"), help="CSM processor: Hub id or local folder")
    parser.add_argument(
        "--max_tokens",
        type=int,
        default=default("max_tokens"),
        help="token budget of a sample; oldest context turns are dropped to fit",
    )
    parser.add_argument(
        "--language", default=default("language"), help="one language (folder, or value of the rows), or 'all'"
    )
    parser.add_argument(
        "--num_proc", type=int, default=default("num_proc"), help="worker processes per shard (default: all CPU cores)"
    )
    parser.add_argument(
        "--depth_decoder_labels_ratio",
        type=float,
        default=default("depth_decoder_labels_ratio"),
        help="share of audio frames that train the depth decoder too; the rest get label -101",
    )
    add_corpus_arguments(parser)
    parser.add_argument("--seed", type=int, default=default("seed"), help="seed of the -101 label draws")
    parser.add_argument("--cache_dir", default=None, help="datasets cache (default: the datasets default cache)")
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--engine",
        choices=ENGINES,
        default=default("engine"),
        help="local: this machine, each step a cached datasets map, output for load_from_disk; ray: Ray on a "
        "cluster (uv sync --extra ray), output in push_to_hub --to_dir's Parquet layout for load_dataset",
    )
    engine.add_argument(
        "--ray_address",
        default=None,
        help="--engine ray: the cluster to join (auto = the one `ray start` runs here, or host:port of its head); "
        "default: start a local cluster on this machine",
    )
    codes = parser.add_argument_group("Mimi codes format (--format codes)")
    codes.add_argument(
        "--format",
        choices=FORMATS,
        default=default("format"),
        help="processor: audio + labels as CsmProcessor makes them; codes: each turn's Mimi codes, "
        "encoded once, for codec-free training",
    )
    codes.add_argument("--codec_model_id", default=default("codec_model_id"), help="MimiModel Hub id or folder")
    codes.add_argument(
        "--devices",
        default=None,
        help="where the codec runs, one encoder process per device: auto = every visible GPU, else cpu; or a comma "
        "list of cpu, cuda (every visible GPU), cuda:N, all of one type; cpu,cpu runs two CPU processes "
        "(default: auto)",
    )
    codes.add_argument(
        "--device",
        default=None,
        help="the one-device form of --devices: auto (the first GPU, else cpu), cpu, cuda, cuda:N",
    )
    budgets = ", ".join(f"{seconds:g} on {kind}" for kind, seconds in DEFAULT_BUDGET_SECONDS.items())
    codes.add_argument(
        "--encode_budget_seconds",
        type=float,
        default=None,
        help="padded audio per codec call: turns sorted by length fill each call up to it; device memory grows with "
        f"it, and a GPU that runs out halves it and retries, with a warning (default: {budgets})",
    )
    codes.add_argument(
        "--encode_batch_size", type=int, default=None, help="at most this many turns per codec call (default: no limit)"
    )
    codes.add_argument(
        "--allow_tf32",
        action="store_true",
        help="let GPUs encode with TF32 matmuls and convolutions (Ampere and later; 10 mantissa bits instead of 23): "
        "about 1.5x faster on an H100, but more frames whose nearest codes nearly tie get another code; "
        "off: full float32",
    )
    add_quality_arguments(parser)


def add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `QualityChecks` field (defaults from the dataclass), the ASR check and loudness."""
    group = parser.add_argument_group(
        "quality checks (each failed check is counted in the report by reason, with every turn and its measured "
        "value; a dropped turn cuts its conversation just before it)"
    )
    group.add_argument("--no_quality_checks", action="store_true", help="run none of the checks below")
    for field in fields(QualityChecks):
        if field.type == "bool" or isinstance(field.default, bool):
            flag = field.name if not field.default else f"no_{field.name}"
            group.add_argument(f"--{flag}", dest=field.name, action="store_false" if field.default else "store_true",
                               help=("turn off the check: " if field.default else "") + QUALITY_HELP[field.name])
        elif field.name == "flag_only":
            group.add_argument("--flag_only", type=check_names, default=(), help=QUALITY_HELP[field.name] + " (default: none)")
        else:
            group.add_argument(f"--{field.name}", type=optional_float, default=field.default,
                               help=QUALITY_HELP[field.name])
    group.add_argument(
        "--asr_model", default=None,
        help="a transformers speech-recognition model (Hub id or folder): transcribe every turn (on the GPU when "
        "present) and check its character error rate against the text (--max_cer)",
    )
    group.add_argument("--asr_batch_size", type=int, default=default("asr_batch_size"), help="turns per ASR call")
    group.add_argument(
        "--normalize_loudness", type=float, default=None, metavar="LUFS",
        help="bring every turn to this integrated loudness (e.g. -23; pyloudnorm, the 'quality' extra)",
    )


def quality_checks(arguments: argparse.Namespace) -> QualityChecks:
    """The `QualityChecks` of parsed flags (`--no_quality_checks`: none)."""
    if arguments.no_quality_checks:
        return QualityChecks.off()
    return QualityChecks(**{field.name: getattr(arguments, field.name) for field in fields(QualityChecks)})


def options_from_arguments(arguments: argparse.Namespace) -> PrepareOptions:
    """The options of parsed flags (`PrepareOptions` checks them: an `InputError` names the bad one)."""
    values = {
        name: getattr(arguments, name) for name in PrepareOptions.__dataclass_fields__ if name not in ("corpus", "quality")
    }
    if values["num_proc"] is None:
        values["num_proc"] = os.cpu_count() or 1
    return PrepareOptions(**values, corpus=corpus_settings(arguments), quality=quality_checks(arguments))
