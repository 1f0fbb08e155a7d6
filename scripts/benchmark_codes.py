#!/usr/bin/env python
"""Mimi codes: the encoder against the codec's own ceiling, agreement, the whole command, disk and training step.

    uv run python scripts/benchmark_codes.py --devices cpu --hours 0.05 --json bench/codes.json
    uv run python scripts/benchmark_codes.py --devices cuda --hours 10 --parts encoder command   # on a GPU node

Everything is offline: a benchmark corpus (`create_benchmark_corpus`), the offline CSM processor and a
real-size Mimi codec (`MimiConfig()`: 32 codebooks of 2048, random weights with random codebook
centroids). Parts (`--parts`, all by default):

- encoder: on the first device, over `--encoder_audio_seconds` of the corpus' turns, cut into codec calls
  by `codec_batches` with the budget. The project's encoder (`encode_padded`: right-padding hooks, one
  quantizer call) and plain padded `codec.encode` run the same calls, interleaved call by call; both in
  audio-seconds per second, their ratio, peak device memory, and for each the share of frames whose codes
  differ from per-item encoding on the same device (codebook 0, any codebook). Then reading audio with 1
  and with several threads, and the encoder pool (reading included) on one device and on all of them.
- command: `prepare_dataset_for_training.py --format codes` on the whole corpus as a user runs it: wall
  time and real-time factor, start-up (interpreter, imports, processor, codec, corpus read, encoder
  processes) apart from the work, peak memory of the process tree.
- disk, training: bytes per audio hour of both formats; one CPU training step of each format with the
  same rows and a small CSM backbone, and the difference of their losses.

Prints the figures as JSON and writes them to `--json` (default `<work_dir>/benchmark_codes.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import MimiConfig

from benchmark_prepare import run_measured
from csm_synthetic import load_turns
from csm_synthetic.audio import load_audio
from csm_synthetic.testing.demo import create_benchmark_corpus
from transforms import CodesSamples, ContextualSamples, build_samples, encode_turns, load_processor, measure_turns
from transforms import group_conversations, plan_conversations
from transforms.core.codec import (
    codec_batches,
    codes_agreement,
    encode_one,
    encode_padded,
    load_codec,
    pad_batch,
    set_fp32_precision,
)
from transforms.encoders import (
    ENCODER_ALLOCATOR,
    EncoderSettings,
    close_encoder_pool,
    default_budget_seconds,
    device_type,
    encoder_pool,
    resolve_devices,
)
from transforms.testing.offline import build_tiny_model, save_offline_processor
from transforms.training.codes_training import TARGET_AUDIO, CodesCollator, CsmForCodesTraining
from transforms.training.collator import CsmDataCollator

SCRIPT = Path(__file__).with_name("prepare_dataset_for_training.py")
RATE = 24_000
WARMUP_STEPS = 2  # the first CPU steps pay for memory allocation: several times slower
PARTS = ("encoder", "command", "disk", "training")


def build_benchmark_model(processor, hidden_size: int, num_layers: int) -> CsmForCodesTraining:
    """A small CSM backbone and depth decoder over a real-size Mimi (32 codebooks of 2048, random weights)."""
    sizes = dict(hidden_size=hidden_size, num_layers=num_layers, codec_config=MimiConfig())
    return build_tiny_model(processor, model_class=CsmForCodesTraining, **sizes)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def synchronize(device: str) -> None:
    if device_type(device) == "cuda":
        torch.cuda.synchronize(device)


def rounded(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


# --- encoder: the project's encoder against the codec's ceiling, on the same calls -------------------


def plain_encode(codec, batch: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """The ceiling: `codec.encode` on the padded batch as it is, each item's frames cut out after."""
    with torch.inference_mode():
        samples = torch.from_numpy(batch).to(codec.device)[:, None]
        codes = codec.encode(samples).audio_codes.to(torch.int16).cpu()
    frames = codec.get_encoded_length(torch.as_tensor(lengths)).tolist()
    return [codes[row, :, :count].T.numpy() for row, count in enumerate(frames)]


def measure_encoder(codec_dir: str, audios: list[np.ndarray], device: str, budget_seconds: float, tf32: bool) -> dict:
    if device_type(device) == "cuda":
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ENCODER_ALLOCATOR)  # as in the encoder processes
        torch.cuda.set_device(device)
        set_fp32_precision(tf32)
    codec = load_codec(codec_dir, device)
    calls = codec_batches([len(audio) for audio in audios], round(budget_seconds * RATE))
    batches = [pad_batch([audios[item] for item in call]) for call in calls]
    for encode in (encode_padded, plain_encode):  # warm-up: kernels chosen, memory allocated
        encode(codec, *batches[0])
    synchronize(device)
    if device_type(device) == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = {"project": 0.0, "plain": 0.0}
    codes = {"project": [None] * len(audios), "plain": [None] * len(audios)}
    encoders = (("project", encode_padded), ("plain", plain_encode))
    for index, (call, batch) in enumerate(zip(calls, batches)):
        # Interleaved, so noise hits both, and each goes first on every other call: the second on a shape
        # finds the allocator's blocks of the first already sized for it.
        for name, encode in encoders if index % 2 == 0 else encoders[::-1]:
            started = time.perf_counter()
            result = encode(codec, *batch)
            synchronize(device)
            seconds[name] += time.perf_counter() - started
            for item, item_codes in zip(call, result):
                codes[name][item] = item_codes
    alone, alone_seconds = timed(lambda: [encode_one(codec, audio) for audio in audios])
    audio_seconds = sum(len(audio) for audio in audios) / RATE
    figures = {
        "device": device,
        "allow_tf32": tf32,
        "audio_seconds": rounded(audio_seconds, 1),
        "budget_seconds": budget_seconds,
        "codec_calls": len(calls),
        "padded_share": rounded(1 - audio_seconds * RATE / sum(batch.size for batch, _ in batches), 3),
        "project_audio_seconds_per_second": rounded(audio_seconds / seconds["project"]),
        "plain_codec_encode_audio_seconds_per_second": rounded(audio_seconds / seconds["plain"]),
        "ratio_to_plain": rounded(seconds["plain"] / seconds["project"], 3),
        "per_item_audio_seconds_per_second": rounded(audio_seconds / alone_seconds),
        "agreement_with_per_item": codes_agreement(codes["project"], alone).to_dict(),
        "plain_agreement_with_per_item": codes_agreement(codes["plain"], alone).to_dict(),
    }
    if device_type(device) == "cuda":
        figures["peak_device_memory_gb"] = rounded(torch.cuda.max_memory_allocated(device) / 1e9)
    return figures


def measure_reading(paths: list[str], audio_seconds: float, threads: int) -> float:
    """Audio-seconds per second that `threads` threads read and resample (files already in the page cache)."""
    with ThreadPoolExecutor(threads) as executor:
        _, seconds = timed(lambda: list(executor.map(load_audio, paths)))
    return rounded(audio_seconds / seconds)


def measure_pool(codec_dir: str, turns: datasets.Dataset, devices: tuple[str, ...], budget: float, tf32: bool) -> dict:
    """The encoder pool as prepare runs it: audio read ahead in threads, codec calls dealt to every device."""
    paths = [audio["path"] for audio in turns.cast_column("audio", datasets.Audio(decode=False))["audio"]]
    planned = np.rint(np.asarray(turns["duration"]) * RATE)
    pool, start_seconds = timed(encoder_pool, EncoderSettings(codec_dir, devices, RATE, tf32))
    try:
        (num_samples, _), seconds = timed(pool.encode, lambda item: load_audio(paths[item]), planned, budget)
        stats = pool.stats
    finally:
        close_encoder_pool()
    return {
        "devices": list(devices),
        "start_seconds": rounded(start_seconds),
        "audio_seconds_per_second": rounded(num_samples.sum() / RATE / seconds),
        "read_wait_seconds": rounded(stats.read_wait_seconds),
        "codec_calls_by_device": dict(stats.calls),
    }


def encoder_figures(codec_dir: str, turns: datasets.Dataset, devices: tuple[str, ...], arguments) -> dict:
    durations = np.asarray(turns["duration"])
    count = int(np.searchsorted(np.cumsum(durations), arguments.encoder_audio_seconds)) + 1  # the first turns
    subset = turns.select(range(min(count, len(turns))))
    paths = [audio["path"] for audio in subset.cast_column("audio", datasets.Audio(decode=False))["audio"]]
    audios = [load_audio(path) for path in paths]  # (also brings the files into the page cache)
    budget = arguments.encode_budget_seconds or default_budget_seconds(devices)
    audio_seconds = sum(len(audio) for audio in audios) / RATE
    threads = max(2, min(16, os.cpu_count() or 1))
    figures = {
        "side_by_side": measure_encoder(codec_dir, audios, devices[0], budget, arguments.allow_tf32),
        "reading_audio_seconds_per_second": {
            "1_thread": measure_reading(paths, audio_seconds, 1),
            f"{threads}_threads": measure_reading(paths, audio_seconds, threads),
        },
        "pool": [measure_pool(codec_dir, subset, devices[:1], budget, arguments.allow_tf32)],
    }
    if len(devices) > 1:
        figures["pool"].append(measure_pool(codec_dir, subset, devices, budget, arguments.allow_tf32))
        one, all_devices = figures["pool"][0], figures["pool"][-1]
        figures["scaling"] = rounded(all_devices["audio_seconds_per_second"] / one["audio_seconds_per_second"])
    return figures


# --- command: the whole prepare run --------------------------------------------------------------


def command_figures(
    corpus: Path, audio_seconds: float, processor_dir: str, codec_dir: str, work: Path, arguments
) -> dict:
    """The whole command on the corpus of `audio_seconds` (all of it read and encoded, whatever the checks keep)."""
    output, cache = work / "prepared_codes", work / "cache_codes"
    shutil.rmtree(output, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    command = [sys.executable, str(SCRIPT), "--input_dir", str(corpus), "--output_dir", str(output),
               "--model_id", processor_dir, "--codec_model_id", codec_dir, "--cache_dir", str(cache),
               "--format", "codes", "--devices", arguments.devices]
    if arguments.encode_budget_seconds:
        command += ["--encode_budget_seconds", str(arguments.encode_budget_seconds)]
    command += ["--allow_tf32"] if arguments.allow_tf32 else []
    measured = run_measured(command)
    report = json.loads((output / "prepare_report.json").read_text(encoding="utf-8"))
    wall = measured["wall_seconds"]
    work_seconds = report["elapsed_seconds"] - report["setup_seconds"]
    return {
        "audio_hours": rounded(audio_seconds / 3600, 4),
        "kept_audio_hours": report["audio"]["hours"],  # after the quality checks
        "samples": report["counts"]["samples"],
        "wall_seconds": rounded(wall, 1),
        "startup_seconds": rounded(wall - work_seconds, 1),  # interpreter, imports, models, corpus read, encoders
        "work_seconds": rounded(work_seconds, 1),
        "real_time_factor": rounded(audio_seconds / wall, 1),
        "real_time_factor_of_work": rounded(audio_seconds / work_seconds, 1),
        "peak_memory_gb": rounded(measured["peak_memory_gb"]),
        "encoding": report["encoding"],
    }


# --- disk and training step ----------------------------------------------------------------------


def arrow_bytes(dataset: datasets.Dataset) -> int:
    return sum(Path(cache["filename"]).stat().st_size for cache in dataset.cache_files)


def map_samples(conversations: datasets.Dataset, transform) -> datasets.Dataset:
    return build_samples(plan_conversations(conversations, transform.plan), transform)


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


def disk_figures(encoded: datasets.Dataset, turns: datasets.Dataset, processor_dir: str, arguments) -> dict:
    audio_hours = float(np.sum(turns["duration"])) / 3600
    window = dict(model_id=processor_dir, max_history=arguments.max_history)
    codes_samples, codes_seconds = timed(map_samples, group_conversations(encoded), CodesSamples(**window))
    processor_samples, processor_seconds = timed(
        map_samples, group_conversations(measure_turns(turns)), ContextualSamples(**window)
    )
    return {
        "samples": codes_samples.num_rows,
        "mean_sample_audio_seconds": rounded(np.mean(codes_samples["audio_seconds"]), 1),
        "processor_format_bytes_per_audio_hour": round(arrow_bytes(processor_samples) / audio_hours),
        "codes_format_bytes_per_audio_hour": round(arrow_bytes(codes_samples) / audio_hours),
        "encoded_turns_bytes_per_audio_hour": round(arrow_bytes(encoded) / audio_hours),
        "ratio": rounded(arrow_bytes(processor_samples) / arrow_bytes(codes_samples), 1),
        "processor_format_build_seconds": rounded(processor_seconds, 1),
        "codes_format_build_seconds": rounded(codes_seconds, 1),
    }


def training_figures(model, processor, encoded, turns, processor_dir: str, arguments) -> dict:
    """One CPU training step of each format, the same rows (the first conversation's last, with full context)."""
    window = dict(model_id=processor_dir, max_history=arguments.train_history)
    codes_rows = map_samples(group_conversations(encoded).select([0]), CodesSamples(**window))
    processor_rows = map_samples(group_conversations(measure_turns(turns)).select([0]), ContextualSamples(**window))
    positions = list(range(codes_rows.num_rows - arguments.train_batch_size, codes_rows.num_rows))
    pad_token_id = processor.tokenizer.pad_token_id
    processor_batch = CsmDataCollator(pad_token_id)([processor_rows[i] for i in positions])
    codes_batch = CodesCollator.for_model(model.config, pad_token_id)([codes_rows[i] for i in positions])
    target_batch = CodesCollator.for_model(model.config, pad_token_id, loss_on=TARGET_AUDIO)(
        [codes_rows[i] for i in positions]
    )
    seconds, losses = interleaved_step_seconds(
        model, {"processor": processor_batch, "codes": codes_batch, "target": target_batch}, arguments.train_steps
    )
    return {
        "batch": {
            "rows": len(positions),
            "tokens": int(processor_batch["attention_mask"].sum()),
            "audio_seconds": rounded(sum(processor_rows[i]["audio_seconds"] for i in positions), 1),
        },
        "model": {"backbone_hidden": arguments.hidden_size, "backbone_layers": arguments.num_layers,
                  "codec": "MimiConfig() defaults"},
        "processor_path_seconds": rounded(seconds["processor"], 3),
        "codes_path_seconds": rounded(seconds["codes"], 3),
        "codes_path_target_only_seconds": rounded(seconds["target"], 3),
        "speedup": rounded(seconds["processor"] / seconds["codes"], 1),
        "speedup_target_only": rounded(seconds["processor"] / seconds["target"], 1),
        "loss_difference_all_audio": abs(losses["processor"] - losses["codes"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="/tmp/benchmark_codes", help="replaced on every run")
    parser.add_argument("--json", default=None, help="where the figures go (default <work_dir>/benchmark_codes.json)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    parser.add_argument("--hours", type=float, default=0.05, help="audio in the benchmark corpus (default 0.05)")
    parser.add_argument("--devices", default="auto", help="as prepare's --devices (default auto)")
    parser.add_argument("--encode_budget_seconds", type=float, default=None, help="(default: by device type)")
    parser.add_argument("--allow_tf32", action="store_true", help="as prepare's --allow_tf32")
    parser.add_argument(
        "--encoder_audio_seconds", type=float, default=60.0, help="audio of the side-by-side encoder measurement"
    )
    parser.add_argument("--max_history", type=int, default=None, help="context of the disk samples (default: all)")
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
    devices = resolve_devices(arguments.devices)
    report = {
        "corpus": {"turns": turns.num_rows, "audio_hours": rounded(np.sum(turns["duration"]) / 3600, 4)},
        "devices": list(devices),
        "torch_threads": torch.get_num_threads(),
    }
    if "command" in arguments.parts:  # first: a fresh process, before this one loads codecs onto devices
        corpus_seconds = float(np.sum(turns["duration"]))
        report["command"] = command_figures(work / "corpus", corpus_seconds, processor_dir, codec_dir, work, arguments)
    if "encoder" in arguments.parts:
        report["encoder"] = encoder_figures(codec_dir, turns, devices, arguments)
    if {"disk", "training"} & set(arguments.parts):
        encoded = encode_turns(turns, codec_dir, ",".join(devices), arguments.encode_budget_seconds,
                               allow_tf32=arguments.allow_tf32)
        close_encoder_pool()
        if "disk" in arguments.parts:
            report["disk"] = disk_figures(encoded, turns, processor_dir, arguments)
        if "training" in arguments.parts:
            report["training_step_cpu"] = training_figures(model, processor, encoded, turns, processor_dir, arguments)
    text = json.dumps(report, indent=2)
    destination = Path(arguments.json or work / "benchmark_codes.json")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
