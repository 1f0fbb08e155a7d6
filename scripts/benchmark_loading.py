#!/usr/bin/env python
"""DataLoader rows/s of a prepared output, as the README loads it and in every other row format.

    uv run python scripts/benchmark_loading.py --work_dir bench/loading --hours 0.3 --max_rows 160

Everything is offline: a benchmark corpus (`create_benchmark_corpus`: 20-turn conversations of 2-12 s turns),
the offline CSM processor and, for the codes format, a small random Mimi with the real codec's 32 codebooks
of 2048 (the encoder's size does not change the rows). Both formats are prepared with `--max_history 5`.
Each way of loading is timed over the same shuffled rows through a `torch.utils.data.DataLoader` with the
format's collator (`CsmDataCollator` / `CodesCollator`), each timing in a fresh process (after reading the
files into the page cache and an untimed warm-up), the ways taking turns over `--repeats` rounds (a noisy
machine slows all alike); the median is reported. "as saved" is `load_from_disk(output)[split]` as it is,
what the README and the card do; the others set a format first. Prints a JSON report and a Markdown table and
writes the JSON to `<work_dir>/benchmark_loading.json`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import MimiModel

from csm_synthetic.settings import CorpusSettings
from csm_synthetic.testing.demo import create_benchmark_corpus
from transforms.core.csm import load_processor
from transforms.pipeline.options import CODES_FORMAT, PROCESSOR_FORMAT, PrepareOptions
from transforms.pipeline.prepare import prepare
from transforms.testing.offline import randomize_codebooks, save_offline_processor, tiny_codec_config, tiny_model_config
from transforms.training.codes_training import CodesCollator
from transforms.training.collator import CsmDataCollator

WAYS = {  # name -> how the rows are read from the loaded split
    "as saved": lambda split: split,
    "python lists": lambda split: split.with_format(None),
    "numpy": lambda split: split.with_format("numpy"),
    "torch": lambda split: split.with_format("torch"),
}
REAL_CODEBOOKS, REAL_CODEBOOK_SIZE = 32, 2048  # Mimi in csm-1b


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", required=True, help="corpus, outputs and caches go here (reused if present)")
    parser.add_argument("--hours", type=float, default=0.1, help="audio hours of the benchmark corpus")
    parser.add_argument("--batch_size", type=int, default=8, help="rows per DataLoader batch")
    parser.add_argument("--max_rows", type=int, default=400, help="rows read per timing (from the train split)")
    parser.add_argument("--num_workers", type=int, nargs="+", default=[0], help="DataLoader worker counts to time")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each way (the median is reported)")
    return parser


def codec_config():
    return tiny_codec_config(num_codebooks=REAL_CODEBOOKS, codebook_size=REAL_CODEBOOK_SIZE)


def prepared_output(work: Path, processor_dir: Path, sample_format: str, hours: float) -> Path:
    output = work / f"prepared_{sample_format}"
    if (output / "prepare_report.json").is_file():
        return output
    corpus = work / "corpus"
    if not corpus.is_dir():
        create_benchmark_corpus(corpus, hours=hours)
    extra = {}
    if sample_format == CODES_FORMAT:
        codec_dir = work / "codec"
        codec = MimiModel(codec_config())
        randomize_codebooks(codec, torch.Generator().manual_seed(0))
        codec.save_pretrained(codec_dir)
        extra = {"codec_model_id": str(codec_dir), "device": "cpu"}
    prepare(
        PrepareOptions(
            input_dir=str(corpus),
            output_dir=str(output),
            model_id=str(processor_dir),
            max_history=5,
            format=sample_format,
            cache_dir=str(work / "cache"),
            corpus=CorpusSettings(validation_fraction=0.0, test_fraction=0.0),
            **extra,
        ),
        overwrite=True,
    )
    return output


def read_files(split: datasets.Dataset, chunk_bytes: int = 64 << 20) -> None:
    for cache in split.cache_files:
        with open(cache["filename"], "rb") as file:
            while file.read(chunk_bytes):
                pass


def rows_per_second(split: datasets.Dataset, collator, rows: list[int], batch_size: int, num_workers: int) -> float:
    loader = torch.utils.data.DataLoader(
        split, batch_size=batch_size, sampler=rows, collate_fn=collator, num_workers=num_workers
    )
    started = time.perf_counter()
    for _ in loader:
        pass
    return len(rows) / (time.perf_counter() - started)


def time_one_way(output: str, way: str, collator, rows: list[int], batch_size: int, num_workers: int) -> float:
    """Rows/s of one way in a fresh process: no way inherits another's heap, caches or warmed-up code."""
    datasets.disable_progress_bars()
    split = WAYS[way](datasets.load_from_disk(output)["train"])
    read_files(split)  # from the page cache, not the disk
    rows_per_second(split, collator, rows[: batch_size * 2], batch_size, 0)  # warm up
    return rows_per_second(split, collator, rows, batch_size, num_workers)


def time_format(output: Path, collator, args: argparse.Namespace) -> dict:
    split = datasets.load_from_disk(str(output))["train"]
    rows = np.random.default_rng(0).permutation(len(split))[: args.max_rows].tolist()
    results = {}
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn, max_tasks_per_child=1) as pool:
        for num_workers in args.num_workers:
            timings: dict[str, list[float]] = {way: [] for way in WAYS}
            for _ in range(args.repeats):  # the ways take turns: a noisy machine slows all alike
                for way in WAYS:
                    task = pool.submit(time_one_way, str(output), way, collator, rows, args.batch_size, num_workers)
                    timings[way].append(task.result())
            results[f"num_workers={num_workers}"] = {way: round(float(np.median(t)), 1) for way, t in timings.items()}
    mean_tokens = float(np.mean(split.with_format(None).select(rows)["num_tokens"]))
    return {
        "saved_format": split.format["type"],
        "rows_timed": len(rows),
        "mean_tokens": round(mean_tokens, 1),
        "rows_per_second": results,
    }


def markdown(report: dict) -> str:
    lines = ["| format | DataLoader | " + " | ".join(WAYS) + " |", "|---|---|" + "---|" * len(WAYS)]
    for sample_format, result in report["formats"].items():
        for workers, speeds in result["rows_per_second"].items():
            fastest = max(speeds.values())
            cells = [f"**{speed}**" if speed == fastest else str(speed) for speed in speeds.values()]
            lines.append(f"| {sample_format} | {workers} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    processor_dir = work / "processor"
    if not processor_dir.is_dir():
        save_offline_processor(processor_dir)
    processor = load_processor(str(processor_dir))
    collators = {
        PROCESSOR_FORMAT: CsmDataCollator.for_processor(processor),
        CODES_FORMAT: CodesCollator.for_model(
            tiny_model_config(processor, codec_config=codec_config()), pad_token_id=processor.tokenizer.pad_token_id
        ),
    }
    datasets.disable_progress_bars()
    report = {
        "hours": args.hours,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "formats": {
            sample_format: time_format(prepared_output(work, processor_dir, sample_format, args.hours), collator, args)
            for sample_format, collator in collators.items()
        },
    }
    print(json.dumps(report, indent=2))
    print(markdown(report))
    (work / "benchmark_loading.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
