#!/usr/bin/env python
"""Codes format against processor format: disk bytes per audio hour, training step time, encoding speed.

    uv run python scripts/benchmark_codes.py --hours 0.1 --work_dir /tmp/benchmark_codes

Everything is offline: a benchmark corpus (`create_benchmark_corpus`), the offline CSM processor, and a
CSM with a real-size Mimi codec (`MimiConfig()` defaults: 32 codebooks of 2048, random weights with random
codebook centroids) and a small backbone. Both formats are made from the same turns with the same
window rule; the training steps use the same rows in both formats and check that the losses agree.
Prints a JSON report and writes it to `<work_dir>/benchmark_codes.json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import MimiConfig

from csm_synthetic import load_turns
from csm_synthetic.testing.demo import create_benchmark_corpus
from transforms import CodesSamples, ContextualSamples, build_samples, encode_turns, load_processor, measure_turns
from transforms import group_conversations, plan_conversations
from transforms.testing.offline import build_tiny_model, save_offline_processor
from transforms.training.codes_training import TARGET_AUDIO, CodesCollator, CsmForCodesTraining
from transforms.training.collator import CsmDataCollator

WARMUP_STEPS = 2  # the first CPU steps pay for memory allocation: several times slower


def build_benchmark_model(processor, hidden_size: int, num_layers: int) -> CsmForCodesTraining:
    """A small CSM backbone and depth decoder over a real-size Mimi (32 codebooks of 2048, random weights)."""
    return build_tiny_model(
        processor, model_class=CsmForCodesTraining, hidden_size=hidden_size, num_layers=num_layers, codec_config=MimiConfig()
    )


def arrow_bytes(dataset: datasets.Dataset) -> int:
    return sum(Path(cache["filename"]).stat().st_size for cache in dataset.cache_files)


def map_samples(conversations: datasets.Dataset, transform) -> datasets.Dataset:
    return build_samples(plan_conversations(conversations, transform.plan), transform)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def training_step(model, optimizer, batch: dict) -> tuple[float, float]:
    """Seconds of one forward + backward + optimizer step, and its loss."""
    started = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - started, loss.item()


def interleaved_step_seconds(model, batches: dict[str, dict], steps: int) -> tuple[dict, dict]:
    """Median step seconds of each batch, the batches taking turns (a noisy CPU slows all alike), and first losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step sees the same weights
    durations = {name: [] for name in batches}
    losses = {}
    for step in range(WARMUP_STEPS + steps):
        for name, batch in batches.items():
            seconds, loss = training_step(model, optimizer, batch)
            losses.setdefault(name, loss)
            if step >= WARMUP_STEPS:
                durations[name].append(seconds)
    return {name: float(np.median(values)) for name, values in durations.items()}, losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="/tmp/benchmark_codes", help="replaced on every run")
    parser.add_argument("--hours", type=float, default=0.1, help="audio in the benchmark corpus (default 0.1)")
    parser.add_argument(
        "--max_history", type=int, default=None, help="context of the size samples (default: all that fit)"
    )
    parser.add_argument(
        "--encode_batch_sizes", type=int, nargs="+", default=[1, 8], help="turns per codec call to time"
    )
    parser.add_argument("--train_history", type=int, default=2, help="context turns of the training-step samples")
    parser.add_argument("--train_batch_size", type=int, default=2)
    parser.add_argument("--train_steps", type=int, default=5, help="timed steps per path (after 2 warm-up steps)")
    parser.add_argument("--hidden_size", type=int, default=256, help="backbone width of the small CSM")
    parser.add_argument("--num_layers", type=int, default=4, help="backbone layers of the small CSM")
    arguments = parser.parse_args(argv)
    datasets.disable_progress_bars()
    datasets.disable_caching()  # every measurement computes; nothing is served from an earlier run's cache

    work = Path(arguments.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    create_benchmark_corpus(work / "corpus", hours=arguments.hours)
    processor_dir = str(save_offline_processor(work / "processor"))
    processor = load_processor(processor_dir)
    model = build_benchmark_model(processor, arguments.hidden_size, arguments.num_layers)
    codec_dir = str(work / "codec")
    model.codec_model.save_pretrained(codec_dir)
    turns = load_turns(work / "corpus", cache_dir=str(work / "cache"), validation_fraction=0, test_fraction=0)["train"]
    audio_seconds = float(np.sum(turns["duration"]))
    report = {
        "corpus": {"turns": turns.num_rows, "audio_hours": round(audio_seconds / 3600, 4)},
        "torch_threads": torch.get_num_threads(),
    }

    # encoding throughput (reading the WAV files included): each batch size encodes every turn
    encoding, codes_by_batch_size = {}, []
    for batch_size in arguments.encode_batch_sizes:
        encoded, seconds = timed(encode_turns, turns, codec_dir, device="cpu", batch_size=batch_size)
        codes_by_batch_size.append(encoded["audio_codes"])
        encoding[f"batch_size_{batch_size}"] = {
            "seconds": round(seconds, 1),
            "audio_seconds_per_second": round(audio_seconds / seconds, 2),
        }
    encoding["same_codes_for_every_batch_size"] = all(codes == codes_by_batch_size[0] for codes in codes_by_batch_size)
    report["encoding_cpu"] = encoding

    # bytes on disk per audio hour, same windows in both formats
    codes_conversations = group_conversations(encoded)
    processor_conversations = group_conversations(measure_turns(turns))
    window = dict(model_id=processor_dir, max_history=arguments.max_history)
    codes_samples, codes_seconds = timed(map_samples, codes_conversations, CodesSamples(**window))
    processor_samples, processor_seconds = timed(map_samples, processor_conversations, ContextualSamples(**window))
    hours = audio_seconds / 3600
    report["disk"] = {
        "samples": codes_samples.num_rows,
        "mean_sample_audio_seconds": round(float(np.mean(codes_samples["audio_seconds"])), 1),
        "processor_format_bytes_per_audio_hour": round(arrow_bytes(processor_samples) / hours),
        "codes_format_bytes_per_audio_hour": round(arrow_bytes(codes_samples) / hours),
        "encoded_turns_bytes_per_audio_hour": round(arrow_bytes(encoded) / hours),
        "ratio": round(arrow_bytes(processor_samples) / arrow_bytes(codes_samples), 1),
        "processor_format_build_seconds": round(processor_seconds, 1),
        "codes_format_build_seconds": round(codes_seconds, 1),
    }

    # one training step, same rows, both paths
    train_window = dict(model_id=processor_dir, max_history=arguments.train_history)
    first = codes_conversations.select([0])
    codes_rows = map_samples(first, CodesSamples(**train_window))
    processor_rows = map_samples(processor_conversations.select([0]), ContextualSamples(**train_window))
    positions = list(range(codes_rows.num_rows - arguments.train_batch_size, codes_rows.num_rows))  # full context
    pad_token_id = processor.tokenizer.pad_token_id
    processor_batch = CsmDataCollator(pad_token_id)([processor_rows[i] for i in positions])
    codes_batch = CodesCollator.for_model(model.config, pad_token_id)([codes_rows[i] for i in positions])
    target_batch = CodesCollator.for_model(model.config, pad_token_id, loss_on=TARGET_AUDIO)(
        [codes_rows[i] for i in positions]
    )
    seconds, losses = interleaved_step_seconds(
        model, {"processor": processor_batch, "codes": codes_batch, "target": target_batch}, arguments.train_steps
    )
    processor_step, codes_step, target_step = seconds["processor"], seconds["codes"], seconds["target"]
    report["training_step_cpu"] = {
        "batch": {
            "rows": len(positions),
            "tokens": int(processor_batch["attention_mask"].sum()),
            "audio_seconds": round(float(sum(processor_rows[i]["audio_seconds"] for i in positions)), 1),
        },
        "model": {
            "backbone_hidden": arguments.hidden_size,
            "backbone_layers": arguments.num_layers,
            "codec": "MimiConfig() defaults",
        },
        "processor_path_seconds": round(processor_step, 3),
        "codes_path_seconds": round(codes_step, 3),
        "codes_path_target_only_seconds": round(target_step, 3),
        "speedup": round(processor_step / codes_step, 1),
        "speedup_target_only": round(processor_step / target_step, 1),
        "loss_difference_all_audio": abs(losses["processor"] - losses["codes"]),
    }
    text = json.dumps(report, indent=2)
    (work / "benchmark_codes.json").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
