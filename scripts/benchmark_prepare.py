#!/usr/bin/env python
"""Benchmark prepare_dataset_for_training.py: speed, peak memory and output size at 1x and 4x corpus size.

Generates realistic corpora (20 turns of 2-12 s per conversation, 24 kHz mono) and an offline processor
under --work_dir, runs the real script on each with a fresh cache, and samples the resident memory of the
whole process tree (workers included). Start-up (everything before the first conversation: interpreter,
imports, loading the processor, reading the corpus) is reported apart from the work. Then profiles one
single-process run to split the time between reading audio, the CSM processor and writing Arrow. Also
times the checksums on their own (hashing every cache file a run wrote, as the run does once after each
map and again before reusing it) and a rerun with --resume (everything cached, every cache file checked).
Prints a Markdown table (the README's figures).

    uv run python scripts/benchmark_prepare.py --work_dir bench --hours 1.5 --scales 1 4
    uv run python scripts/benchmark_prepare.py --work_dir bench --scales 1 --quality off flag --repeats 3

--quality runs each scale with the quality checks off (--no_quality_checks), measured and decided but only
flagging (--flag_only all: the same samples, so the difference is what the checks cost), or at their
defaults (which drop turns of this corpus: its texts are unrelated to its audio).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from csm_synthetic.testing.demo import create_benchmark_corpus

SCRIPT = Path(__file__).with_name("prepare_dataset_for_training.py")


def pss_kb(pid: str) -> int:
    """Proportional set size: resident memory with pages shared between forked workers counted once."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def tree_memory_kb(root_pid: int) -> int:
    """Memory (PSS) of a process and all its descendants (Linux /proc), in KiB. Only the tree's own
    `smaps_rollup` is read (a costly read; every process's would take a core's third on a shared machine)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        try:
            total += pss_kb(str(pid))
        except OSError:  # it ended meanwhile
            pass
        stack.extend(children.get(pid, []))
    return total


def run_measured(command: list[str], interval: float = 0.05) -> dict:
    """Run `command`, sampling its process tree's memory every `interval` seconds (or less often, see `sample`)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():  # every `interval`, or less often where a sample is slow: at most a tenth of a core for sampling
        while process.poll() is None:
            sampled = time.perf_counter()
            peak[0] = max(peak[0], tree_memory_kb(process.pid))
            time.sleep(max(interval, 9 * (time.perf_counter() - sampled)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"benchmark run failed ({process.returncode}):\n{output[-3000:]}")
    return {"wall_seconds": time.perf_counter() - started, "peak_memory_gb": peak[0] / 1024**2}


def arrow_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.arrow"))


def ensure_corpus(folder: Path, hours: float) -> None:
    if not folder.is_dir():
        create_benchmark_corpus(folder, hours=hours)


QUALITY_FLAGS = {"off": ["--no_quality_checks"], "flag": ["--flag_only", "all"], "on": []}


def prepare_command(
    corpus: Path, output: Path, cache: Path, processor: Path, args: argparse.Namespace, quality: str
) -> list[str]:
    command = [sys.executable, str(SCRIPT), "--input_dir", str(corpus), "--output_dir", str(output)]
    command += ["--model_id", str(processor), "--max_history", str(args.max_history), "--cache_dir", str(cache)]
    command += QUALITY_FLAGS[quality]
    return command + (["--num_proc", str(args.num_proc)] if args.num_proc else [])


def measure_scale(scale: int, work: Path, processor: Path, args: argparse.Namespace, quality: str) -> dict:
    """The fastest of `args.repeats` runs, each with a fresh cache."""
    runs = [measure_run(scale, work, processor, args, quality) for _ in range(args.repeats)]
    return min(runs, key=lambda run: run["wall_seconds"])


def measure_run(scale: int, work: Path, processor: Path, args: argparse.Namespace, quality: str) -> dict:
    corpus, output, cache = work / f"corpus_{scale}x", work / f"prepared_{scale}x", work / f"cache_{scale}x"
    ensure_corpus(corpus, args.hours * scale)
    shutil.rmtree(output, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    result = run_measured(prepare_command(corpus, output, cache, processor, args, quality))
    report = json.loads((output / "prepare_report.json").read_text())
    result.update(checksum_cost(cache))
    result["rerun_seconds"] = run_measured([*prepare_command(corpus, output, cache, processor, args, quality), "--resume"])[
        "wall_seconds"
    ]
    hours = report["audio"]["hours"]
    result.update(
        scale=scale,
        quality=quality,
        audio_hours=hours,
        samples=report["counts"]["samples"],
        prepare_seconds=report["elapsed_seconds"],
        startup_seconds=result["wall_seconds"] - report["elapsed_seconds"] + report["setup_seconds"],
        work_seconds=report["elapsed_seconds"] - report["setup_seconds"],
        output_gb=arrow_bytes(output) / 1e9,
        cache_gb_beyond_output=(arrow_bytes(cache) - arrow_bytes(output)) / 1e9,
        hours_per_minute_end_to_end=hours / result["wall_seconds"] * 60,
        hours_per_minute_work=hours / (report["elapsed_seconds"] - report["setup_seconds"]) * 60,
    )
    return result


def checksum_cost(cache: Path) -> dict:
    """Seconds to hash every cache file of a run (its maps' results), as the run does after each map."""
    from transforms.pipeline.checksums import file_checksum

    files = sorted(cache.rglob("cache-*.arrow"))
    started = time.perf_counter()
    for path in files:
        file_checksum(path)
    seconds = time.perf_counter() - started
    return {"checksum_seconds": seconds, "checksum_gb": sum(path.stat().st_size for path in files) / 1e9}


def time_split(work: Path, processor: Path, args: argparse.Namespace) -> dict:
    """Single-process profile of the 1x run: seconds in reading, the processor and writing."""
    from transforms.core.quality import CHECKS, QualityChecks
    from transforms.pipeline.options import PrepareOptions
    from transforms.pipeline.prepare import prepare

    ensure_corpus(work / "corpus_1x", args.hours)
    output, cache = work / "prepared_profile", work / "cache_profile"
    shutil.rmtree(output, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    options = PrepareOptions(
        input_dir=str(work / "corpus_1x"), output_dir=str(output), model_id=str(processor),
        max_history=args.max_history, cache_dir=str(cache), num_proc=1,
        quality=QualityChecks(flag_only=CHECKS),  # every check measured and decided, the samples of no checks
    )
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(prepare, options)
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats
    cumulative = {}
    for (filename, _, function), (_, _, _, cumtime, _) in stats.items():
        cumulative[(Path(filename).name, function)] = max(cumulative.get((Path(filename).name, function), 0), cumtime)
    parts = {
        "reading audio": cumulative.get(("audio.py", "load_audio"), 0.0),
        "CSM processor": cumulative.get(("processing_csm.py", "__call__"), 0.0)
        + cumulative.get(("csm.py", "render_messages"), 0.0)
        + cumulative.get(("csm.py", "message_token_counts"), 0.0),
        "building + writing Arrow": cumulative.get(("arrow.py", "samples_table"), 0.0)
        + cumulative.get(("arrow_writer.py", "write_table"), 0.0)
        + cumulative.get(("arrow_writer.py", "finalize"), 0.0),
    }
    parts["quality: measures + corpus decisions"] = cumulative.get(("measures.py", "measure_turn"), 0.0) + cumulative.get(
        ("prepare.py", "corpus_decisions"), 0.0
    )
    parts["other (builder, planning, datasets)"] = total - sum(parts.values())
    return {"total_seconds_under_profiler": total, **parts}


def markdown(results: list[dict], split: dict) -> str:
    lines = [
        "| corpus | quality checks | audio h | samples | wall s (end to end) | start-up s | work s | h/min end to end "
        "| h/min of work | peak memory GB (PSS, all processes) | output GB | checksums s (GB) | rerun --resume s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['scale']}x | {r['quality']} | {r['audio_hours']:.2f} | {r['samples']} | {r['wall_seconds']:.1f} "
            f"| {r['startup_seconds']:.1f} | {r['work_seconds']:.1f} "
            f"| {r['hours_per_minute_end_to_end']:.1f} | {r['hours_per_minute_work']:.1f} | {r['peak_memory_gb']:.2f} "
            f"| {r['output_gb']:.2f} | {r['checksum_seconds']:.2f} ({r['checksum_gb']:.2f}) | {r['rerun_seconds']:.1f} |"
        )
    lines += ["", "| time split (1x, one process, under cProfile) | seconds | share |", "|---|---|---|"]
    total = split["total_seconds_under_profiler"]
    for name, seconds in split.items():
        if name != "total_seconds_under_profiler":
            lines.append(f"| {name} | {seconds:.1f} | {seconds / total:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="bench", help="corpora, outputs and caches go here (default bench/)")
    parser.add_argument("--hours", type=float, default=1.5, help="audio hours of the 1x corpus (default 1.5)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4], help="corpus sizes to run (default 1 4)")
    parser.add_argument("--max_history", type=int, default=5)
    parser.add_argument("--num_proc", type=int, default=None, help="passed to the script (default: its own)")
    parser.add_argument("--skip_profile", action="store_true", help="skip the single-process time split")
    parser.add_argument("--quality", nargs="+", choices=QUALITY_FLAGS, default=["off", "flag"],
                        help="quality checks of the runs: off, flag (all measured, none drop), on (default off flag)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per scale and quality; the fastest counts")
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    from transforms.testing.offline import save_offline_processor  # torch, transformers: not in measured processes

    processor = save_offline_processor(work / "processor")
    results = [measure_scale(scale, work, processor, args, quality) for scale in args.scales for quality in args.quality]
    split = {} if args.skip_profile else time_split(work, processor, args)
    (work / "benchmark.json").write_text(json.dumps({"runs": results, "time_split": split}, indent=2))
    print(markdown(results, split) if split else json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
