"""Prepare a whole corpus: builder -> conversations -> contextual samples -> sharded `save_to_disk` output.

Every heavy step is a `datasets` operation cached by fingerprint, and each shard is its own `.map`, so a
killed run resumes from the shards already finished (a shard is only ever taken from a file that
`datasets` moved into place when complete). The output folder gets hard links to the cached shards, so
the sample data is written to disk once.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from csm_synthetic.audio import resampled_length
from csm_synthetic.builder import CsmSynthetic
from csm_synthetic.corpus import Corpus
from csm_synthetic.environment import package_versions
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.splits import split_of

from ..codes import (
    CodesSamples,
    check_codec,
    codes_sample_features,
    encode_turns,
    load_codec,
    resolve_device,
)
from ..core.csm import load_processor, message_token_counts, render_messages
from ..samples import ContextualSamples, group_conversations, sample_features
from .options import ARGUMENTS_NAME, CODES_FORMAT, PROCESSOR_FORMAT, REPORT_NAME, PrepareError, PrepareOptions
from ..core.windows import Skip, Window, plan_windows
from .writer import publish_dataset_dict

WRITER_BATCH_SIZE = 16  # rows of multi-MB audio per Arrow record batch: bounds memory while writing


def sample_transform(options: PrepareOptions) -> ContextualSamples | CodesSamples:
    if options.format == CODES_FORMAT:
        return CodesSamples(
            model_id=options.model_id,
            max_history=options.max_history,
            max_tokens=options.max_tokens,
            sampling_rate=options.target_sampling_rate,
        )
    return ContextualSamples(
        model_id=options.model_id,
        max_history=options.max_history,
        max_tokens=options.max_tokens,
        depth_decoder_labels_ratio=options.depth_decoder_labels_ratio,
        sampling_rate=options.target_sampling_rate,
        seed=options.seed,
    )


def output_features(options: PrepareOptions) -> datasets.Features:
    return codes_sample_features() if options.format == CODES_FORMAT else sample_features()


def codec_batch_size(options: PrepareOptions) -> int:
    if options.encode_batch_size is not None:
        return options.encode_batch_size
    return 16 if resolve_device(options.device) == "cuda" else 1  # batching does not pay on a CPU


@dataclass
class Plan:
    """What the samples will be, worked out from scripts and audio headers before decoding audio."""

    samples_per_conversation: dict[str, int] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    sample_tokens: list[int] = field(default_factory=list)
    sample_seconds: list[float] = field(default_factory=list)


# --- checks before any work ----------------------------------------------------------------------


def check_options(options: PrepareOptions) -> None:
    if options.batch_size < 1:
        raise PrepareError(f"--batch_size must be at least 1 (got {options.batch_size})")
    if options.max_history is not None and options.max_history < 0:
        raise PrepareError(f"--max_history must be >= 0 or None (got {options.max_history})")
    if options.max_tokens < 1:
        raise PrepareError(f"--max_tokens must be at least 1 (got {options.max_tokens})")
    if not 0.0 <= options.depth_decoder_labels_ratio <= 1.0:
        raise PrepareError(f"--depth_decoder_labels_ratio must be in [0, 1] (got {options.depth_decoder_labels_ratio})")
    if options.format not in (PROCESSOR_FORMAT, CODES_FORMAT):
        raise PrepareError(f"--format must be {PROCESSOR_FORMAT!r} or {CODES_FORMAT!r} (got {options.format!r})")
    if options.format == CODES_FORMAT and options.depth_decoder_labels_ratio != 1.0:
        raise PrepareError(
            "--depth_decoder_labels_ratio is drawn per batch by the codes collator, not stored: leave it at 1.0 "
            "with --format codes"
        )
    if options.encode_batch_size is not None and options.encode_batch_size < 1:
        raise PrepareError(f"--encode_batch_size must be at least 1 (got {options.encode_batch_size})")
    if not Path(options.input_dir).is_dir():
        raise PrepareError(f"--input_dir {options.input_dir!r} does not exist or is not a folder")


def check_output_dir(options: PrepareOptions, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing output; on resume, refuse different arguments."""
    output_dir = Path(options.output_dir)
    if resume and overwrite:
        raise PrepareError("--resume and --overwrite exclude each other")
    if output_dir.exists() and not output_dir.is_dir():
        raise PrepareError(f"--output_dir {str(output_dir)!r} exists and is not a folder")
    exists = output_dir.is_dir() and any(output_dir.iterdir())
    if exists and not (resume or overwrite):
        raise PrepareError(
            f"--output_dir {str(output_dir)!r} already holds data: pass --resume to finish that run "
            "or --overwrite to replace it"
        )
    if exists and resume:
        check_resume_arguments(options)
    if exists and overwrite:
        if not (output_dir / ARGUMENTS_NAME).is_file():
            raise PrepareError(
                f"--output_dir {str(output_dir)!r} holds data this tool did not write ({ARGUMENTS_NAME} missing): "
                "--overwrite only replaces an earlier output; choose an empty or new folder"
            )
        shutil.rmtree(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PrepareError(f"cannot write to --output_dir {str(output_dir)!r}: {error}") from error


def check_resume_arguments(options: PrepareOptions) -> None:
    saved_path = Path(options.output_dir) / ARGUMENTS_NAME
    if not saved_path.is_file():
        raise PrepareError(
            f"--output_dir {options.output_dir!r} was not written by this tool ({ARGUMENTS_NAME} missing): "
            "cannot resume it; use --overwrite to replace it"
        )
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    current = json.loads(json.dumps(options.output_defining()))
    differences = [
        f"--{name}: was {saved.get(name)!r}, now {value!r}" for name, value in current.items() if saved.get(name) != value
    ]
    if differences:
        raise PrepareError("cannot resume with different arguments: " + "; ".join(differences))


def load_checked_processor(model_id: str):
    try:
        return load_processor(model_id)
    except RuntimeError as error:
        raise PrepareError(str(error)) from error


def check_codec_loads(options: PrepareOptions, processor) -> None:
    """Codes format: the codec must load and agree with the processor on frames per audio length."""
    try:
        codec = load_codec(options.codec_model_id, resolve_device(options.device))
        check_codec(codec, processor, options.target_sampling_rate)
    except (RuntimeError, ValueError) as error:
        raise PrepareError(str(error)) from error


def make_builder(options: PrepareOptions) -> CsmSynthetic:
    try:
        return CsmSynthetic(
            data_dir=options.input_dir,
            config_name=options.language,
            cache_dir=options.cache_dir,
            settings=CorpusSettings(
                target_sampling_rate=options.target_sampling_rate,
                validation_fraction=options.validation_fraction,
                test_fraction=options.test_fraction,
                max_turn_seconds=options.max_turn_seconds,
            ),
        )
    except (ValueError, FileNotFoundError) as error:
        raise PrepareError(str(error)) from error


# --- planning from headers -----------------------------------------------------------------------


def plan_samples(corpus: Corpus, processor, options: PrepareOptions) -> Plan:
    """Token counts, windows and skips of every turn, from scripts and headers (no audio decoded)."""
    plan = Plan()
    rate = options.target_sampling_rate
    for conversation in corpus.conversations:
        turns = conversation.turns
        lengths = [resampled_length(turn.frames, turn.sampling_rate, rate) for turn in turns]
        rendered = render_messages(processor, [t.speaker for t in turns], [t.text for t in turns])
        counts = message_token_counts(processor, rendered, lengths)
        windows = plan_windows(counts, options.max_history, options.max_tokens)
        plan.samples_per_conversation[conversation.conversation_id] = sum(isinstance(w, Window) for w in windows)
        for window in windows:
            if isinstance(window, Skip):
                plan.skipped.append(
                    {
                        "conversation_id": conversation.conversation_id,
                        "turn_index": turns[window.turn_index].index,
                        "reason": window.reason,
                        "detail": f"{window.num_tokens} tokens alone, more than --max_tokens {options.max_tokens}",
                    }
                )
            else:
                plan.sample_tokens.append(window.num_tokens)
                plan.sample_seconds.append(sum(lengths[window.start : window.target + 1]) / rate)
    return plan


# --- the work ------------------------------------------------------------------------------------


def shard_ranges(num_rows: int, batch_size: int) -> list[range]:
    return [range(start, min(start + batch_size, num_rows)) for start in range(0, num_rows, batch_size)]


def prepare_split(
    conversations: datasets.Dataset, split: str, options: PrepareOptions, plan: Plan
) -> datasets.Dataset:
    """Map each shard of `batch_size` conversations (cached per shard) and return them concatenated."""
    transform = sample_transform(options)
    shards = []
    ranges = shard_ranges(len(conversations), options.batch_size)
    for number, rows in enumerate(ranges, start=1):
        shard = conversations.select(rows)
        samples = shard.map(
            transform,
            batched=True,
            batch_size=1,
            remove_columns=shard.column_names,
            features=output_features(options),
            writer_batch_size=WRITER_BATCH_SIZE,
            num_proc=options.num_proc if options.num_proc and options.num_proc > 1 and len(rows) > 1 else None,
            desc=f"{split}: shard {number}/{len(ranges)}",
        )
        expected = sum(plan.samples_per_conversation[cid] for cid in shard["conversation_id"])
        if len(samples) != expected:
            raise RuntimeError(f"{split} shard {number}: {len(samples)} samples written, {expected} planned")
        shards.append(samples)
    return datasets.concatenate_datasets(shards)


def prepare(options: PrepareOptions, resume: bool = False, overwrite: bool = False) -> dict:
    """Run the whole preparation; returns the report (also written to `output_dir/prepare_report.json`)."""
    started = time.perf_counter()
    check_options(options)
    processor = load_checked_processor(options.model_id)
    if options.format == CODES_FORMAT:
        check_codec_loads(options, processor)
    builder = make_builder(options)
    corpus = builder.corpus
    if not corpus.conversations:
        found = f" ({len(corpus.problems)} problems, e.g. {corpus.problems[0]})" if corpus.problems else ""
        raise PrepareError(f"no usable conversation found under {options.input_dir!r}{found}")
    check_output_dir(options, resume, overwrite)
    output_dir = Path(options.output_dir)
    (output_dir / ARGUMENTS_NAME).write_text(json.dumps(options.output_defining(), indent=2), encoding="utf-8")
    (output_dir / REPORT_NAME).unlink(missing_ok=True)  # the report marks a finished run

    plan = plan_samples(corpus, processor, options)
    builder.download_and_prepare()
    turns = builder.as_dataset()
    splits = {}
    for split, split_turns in turns.items():
        if options.format == CODES_FORMAT:
            split_turns = encode_turns(
                split_turns,
                options.codec_model_id,
                options.device,
                codec_batch_size(options),
                options.target_sampling_rate,
                desc=f"{split}: encoding turns",
            )
        conversations = group_conversations(split_turns)
        splits[split] = prepare_split(conversations, split, options, plan)
    publish_dataset_dict(splits, output_dir)

    report = build_report(options, corpus, plan, splits, time.perf_counter() - started)
    (output_dir / REPORT_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report


# --- the report ----------------------------------------------------------------------------------


def distribution(values, unit: str) -> dict:
    if not len(values):
        return {"count": 0}
    array = np.asarray(values, dtype=np.float64)
    return {
        "count": int(array.size),
        f"min_{unit}": round(float(array.min()), 3),
        f"mean_{unit}": round(float(array.mean()), 3),
        f"p50_{unit}": round(float(np.percentile(array, 50)), 3),
        f"p95_{unit}": round(float(np.percentile(array, 95)), 3),
        f"max_{unit}": round(float(array.max()), 3),
        f"total_{unit}": round(float(array.sum()), 3),
    }


def build_report(options: PrepareOptions, corpus: Corpus, plan: Plan, splits: dict, seconds: float) -> dict:
    conversations_by_split: dict[str, int] = {}
    for conversation in corpus.conversations:
        split = split_of(conversation.conversation_id, options.validation_fraction, options.test_fraction)
        conversations_by_split[split] = conversations_by_split.get(split, 0) + 1
    turn_seconds = [turn.duration for conversation in corpus.conversations for turn in conversation.turns]
    return {
        "arguments": {**options.output_defining(), "output_dir": options.output_dir, "num_proc": options.num_proc},
        "versions": package_versions(),
        "counts": {
            "conversations": len(corpus.conversations),
            "turns": len(turn_seconds),
            "samples": sum(len(dataset) for dataset in splits.values()),
            "skipped_samples": len(plan.skipped),
            "problems": len(corpus.problems),
            "by_split": {
                split: {"conversations": conversations_by_split.get(split, 0), "samples": len(dataset)}
                for split, dataset in splits.items()
            },
        },
        "audio": {
            "turn_seconds": distribution(turn_seconds, "seconds"),
            "sample_seconds": distribution(plan.sample_seconds, "seconds"),
            "hours": round(sum(turn_seconds) / 3600, 4),
        },
        "tokens": {"sample_tokens": distribution(plan.sample_tokens, "tokens")},
        "elapsed_seconds": round(seconds, 2),
        "problems": [problem.to_dict() for problem in corpus.problems],
        "skipped": plan.skipped,
    }
