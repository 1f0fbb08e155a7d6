"""The flags of `prepare_dataset_for_training.py` and the `PrepareOptions` they make. Light: no heavy imports."""

from __future__ import annotations

import argparse
import os

from csm_synthetic.cli import add_corpus_arguments, add_input_arguments, corpus_settings

from .options import FORMATS, PrepareOptions


def optional_int(value: str) -> int | None:
    """'None' (or 'all') means no limit."""
    if value.lower() in ("none", "all"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or None, got {value!r}") from None


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
        "--device", default=default("device"), help="where the codec runs: auto (GPU when present), cpu, cuda"
    )
    codes.add_argument(
        "--encode_batch_size", type=int, default=None, help="turns per codec call (default: 16 on GPU, 1 on CPU)"
    )


def options_from_arguments(arguments: argparse.Namespace) -> PrepareOptions:
    """The options of parsed flags (`PrepareOptions` checks them: an `InputError` names the bad one)."""
    values = {name: getattr(arguments, name) for name in PrepareOptions.__dataclass_fields__ if name != "corpus"}
    if values["num_proc"] is None:
        values["num_proc"] = os.cpu_count() or 1
    return PrepareOptions(**values, corpus=corpus_settings(arguments))
