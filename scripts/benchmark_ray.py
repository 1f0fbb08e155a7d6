#!/usr/bin/env python
"""Benchmark --engine ray against --engine local on the benchmark corpus (processor format).

Generates the benchmark corpus (20 turns of 2-12 s per conversation, 24 kHz mono) and an offline processor
under --work_dir, then runs prepare_dataset_for_training.py on it with each engine, each run with a fresh
cache and output, sampling the proportional memory (PSS) of the whole process tree every 50 ms: for Ray the
cluster this run starts (GCS, raylet, every worker) is part of the tree. Ray's cluster start-up (`ray.init`)
is reported apart; "work" is what follows the set-up (the processor loaded, the corpus read) in both engines.
--ray_cpus runs Ray once per CPU count of its local cluster (the tasks that run at once), which shows how it
scales with workers on this machine. Prints a Markdown table (the README's figures).

    uv run python scripts/benchmark_ray.py --work_dir bench --hours 0.5 --ray_cpus 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from benchmark_prepare import QUALITY_FLAGS, ensure_corpus, run_measured  # scripts/ is this script's path

from transforms.pipeline.options import PrepareOptions

SCRIPT = Path(__file__).with_name("prepare_dataset_for_training.py")
RAY_ENV = {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def run_on_local_cluster(num_cpus: int, startup_file: str, arguments: list[str]) -> int:
    """In the measured process: a local Ray cluster of `num_cpus` CPUs (its start-up seconds into
    `startup_file`), then the script on it (it joins it)."""
    import ray

    import prepare_dataset_for_training

    started = time.perf_counter()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    Path(startup_file).write_text(str(time.perf_counter() - started))
    try:
        return prepare_dataset_for_training.main(arguments)
    finally:
        ray.shutdown()


def prepare_arguments(corpus: Path, output: Path, cache: Path, processor: Path, args: argparse.Namespace) -> list[str]:
    arguments = ["--input_dir", str(corpus), "--output_dir", str(output), "--model_id", str(processor)]
    arguments += ["--max_history", str(args.max_history), "--cache_dir", str(cache), "--batch_size", str(args.batch_size)]
    return arguments + QUALITY_FLAGS[args.quality]


def measure(engine: str, num_cpus: int | None, work: Path, processor: Path, args: argparse.Namespace) -> dict:
    corpus = work / "corpus"
    name = engine if num_cpus is None else f"{engine}_{num_cpus}cpu"
    output, cache = work / f"prepared_{name}", work / f"cache_{name}"
    shutil.rmtree(output, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    arguments = prepare_arguments(corpus, output, cache, processor, args)
    startup_file = work / f"{name}_startup_seconds"
    if engine == "local":
        command = [sys.executable, str(SCRIPT), *arguments]
    else:
        command = [sys.executable, __file__, "--_cluster_cpus", str(num_cpus), str(startup_file), *arguments,
                   "--engine", "ray"]
    result = run_measured(command, interval=args.memory_interval)
    report = json.loads((output / "prepare_report.json").read_text())
    startup = float(startup_file.read_text()) if engine == "ray" else 0.0
    result.update(
        engine=engine,
        cpus=num_cpus if num_cpus is not None else f"num_proc {os.cpu_count()}",
        batch_size=args.batch_size,
        hours=report["audio"]["hours"],
        samples=report["counts"]["samples"],
        setup_seconds=report["setup_seconds"],
        work_seconds=report["elapsed_seconds"] - report["setup_seconds"],
    )
    result["cluster_startup_seconds"] = startup
    result["output_gb"] = sum(path.stat().st_size for path in output.rglob("*") if path.is_file()) / 1e9
    return result


def median_run(runs: list[dict]) -> dict:
    """The run of median work time, with the spread of all runs' work times."""
    ordered = sorted(runs, key=lambda run: run["work_seconds"])
    return {**ordered[len(ordered) // 2], "runs": len(runs),
            "work_range": (ordered[0]["work_seconds"], ordered[-1]["work_seconds"])}


def markdown(results: list[dict]) -> str:
    local = next(r for r in results if r["engine"] == "local")
    lines = [
        "| engine | CPUs | conversations per shard | audio h | samples | wall s (end to end) | Ray cluster start-up s | set-up s | work s "
        "| work range s (runs) | work / local work | peak memory GB (PSS, process tree) | output GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        low, high = r["work_range"]
        lines.append(
            f"| {r['engine']} | {r['cpus']} | {r['batch_size']} | {r['hours']:.2f} | {r['samples']} | {r['wall_seconds']:.1f} "
            f"| {r['cluster_startup_seconds']:.1f} | {r['setup_seconds']:.1f} | {r['work_seconds']:.1f} "
            f"| {low:.1f}-{high:.1f} ({r['runs']}) | {r['work_seconds'] / local['work_seconds']:.2f} "
            f"| {r['peak_memory_gb']:.2f} | {r['output_gb']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for name, value in RAY_ENV.items():
        os.environ.setdefault(name, value)
    if argv[:1] == ["--_cluster_cpus"]:  # the measured process of a Ray run
        return run_on_local_cluster(int(argv[1]), argv[2], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="bench_ray", help="corpus, outputs and caches go here (default bench_ray/)")
    parser.add_argument("--hours", type=float, default=0.5, help="audio hours of the corpus (default 0.5)")
    parser.add_argument("--ray_cpus", type=int, nargs="+", default=[os.cpu_count() or 1],
                        help="CPU counts of the local Ray cluster, one run each (default: this machine's)")
    parser.add_argument("--max_history", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=PrepareOptions.batch_size,
                        help="conversations per shard, both engines (default: prepare's, %(default)s); --engine ray "
                        "builds and writes each shard in one task, so fewer shards than CPUs leave CPUs idle")
    parser.add_argument("--memory_interval", type=float, default=0.5,
                        help="seconds between samples of the process tree's memory (default 0.5): reading the PSS of "
                        "a Ray cluster's dozen processes every 50 ms slowed the Ray run's work by a third on 2 cores")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each engine, alternating; the table gives the run of median work (default 1)")
    parser.add_argument("--quality", choices=QUALITY_FLAGS, default="flag",
                        help="quality checks: off, flag (all measured and decided, none drops: the default), on")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ensure_corpus(work / "corpus", args.hours)
    from transforms.testing.offline import save_offline_processor  # torch, transformers: not in the measured process

    processor = save_offline_processor(work / "processor")
    engines = [("local", None), *(("ray", cpus) for cpus in args.ray_cpus)]
    runs = {engine: [] for engine in engines}
    for _ in range(args.repeats):  # alternating, so a slow spell of a shared machine hits every engine alike
        for engine in engines:
            runs[engine].append(measure(*engine, work, processor, args))
    results = [median_run(runs[engine]) for engine in engines]
    print(json.dumps([run for engine_runs in runs.values() for run in engine_runs], indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
