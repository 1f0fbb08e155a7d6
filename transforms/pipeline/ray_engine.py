"""`--engine ray`: the local engine's steps as Ray tasks on a cluster, Parquet output in push_to_hub's layout.

    report = prepare_on_ray(PrepareOptions(..., engine="ray", ray_address="auto"))

The driver (this process) does what is cheap and global, exactly as the local engine: the argument checks,
the corpus index (scripts and audio headers, `checked_builder`), the splits, the reader's faults and the
shard plan (`batch_size` conversations per shard, in corpus order). Ray does the audio and the tokens, one
row per conversation, with the steps of `ray_steps` (the local engine's functions), in passes as locally:

1. measure: every turn decoded, checked, measured and its preparation decided (`TurnAudio`, no codec) in CPU
   tasks; only these columns come back to the driver (no audio: some hundred bytes a turn), which makes the
   corpus decisions of the quality checks from them (`corpus_decisions`, the local engine's);
2. codes format only, encode: every fine turn decoded again and prepared as decided (CPU tasks), then encoded
   in an actor pool (one actor per GPU, `num_gpus=1`; CPU actors on a cluster without GPUs) - the one decode
   more than the local engine, which encodes in its measuring pass; only the codes come back (some kB a
   conversation);
3. build: a CPU task per planned shard plans its conversations with the checks and those decisions, builds
   their samples (the processor format decodes the turns its windows hold again, as locally) and writes them
   into the shard's file on the shared filesystem (`parquet_shards`: temp file + rename, bytes that depend only
   on the rows); only the shard's plans and sizes come back. No sample passes through the driver or the
   object store.

Then the driver writes the report (`build_report`, as locally) and the dataset card (`export.card`, as
`push_to_hub --to_dir` writes it), so `datasets.load_dataset(output_dir)` loads it and `push_to_hub.py
--staged_dir output_dir` publishes it. `--resume` measures and builds only the shards without a file, with
the corpus decisions the finished shards carry in their footers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pyarrow as pa
from tqdm.auto import tqdm

from csm_synthetic.errors import InputError

from ..core.quality import CorpusQuality
from ..encoders import AUTO, parse_devices
from ..export.card import SAMPLE_FORMATS, ConfigLayout, PreparedDescription, SplitFiles
from ..export.content import PREPARED_CONFIG, ordered_splits, training_model_id
from ..export.repository import CARD_NAME
from ..features import (
    codes_sample_features,
    conversation_features,
    planned_features,
    sample_features,
    turn_audio_features,
)
from ..maps import group_conversations, quiet_datasets_progress
from .options import ARGUMENTS_NAME, CODES_FORMAT, PROCESSOR_FORMAT, REPORT_NAME, PrepareOptions
from .parquet_shards import FinishedShard, ShardName, read_finished_shard
from .checksums import file_checksum
from .prepare import (
    DECISION_COLUMNS,
    FORMATS,
    checked_builder,
    corpus_decisions,
    in_output_folder,
    plan_step,
    turn_audio,
)
from .ray_steps import (
    REPORT_COLUMNS,
    WHERE_COLUMNS,
    CodecEncoder,
    MeasureTurns,
    ReadTurns,
    ShardRow,
    WriteShards,
    run_step,
    turn_table,
    warm_worker,
)
from .report import SplitResult, build_report
from .writer import write_json

RAY_EXTRA = "uv sync --extra ray"
CONVERSATIONS_PER_BLOCK = 2  # a CPU task's work: a conversation takes about a second or more
TASKS_PER_CPU = 2  # submitted at a time: each CPU has its next task queued when one ends
ASR_WORKERS_PER_GPU = 4  # --asr_model on Ray: models one GPU holds at most (a large Whisper is some GB each)
CONVERSATIONS_PER_CODEC_CALL = 16  # conversations a codec actor gets at once: their turns fill its calls
ROWS_PER_GROUP = {PROCESSOR_FORMAT: 16, CODES_FORMAT: 256}  # Parquet row groups: multi-MB audio rows, small codes rows
ACTOR_START_TIMEOUT_S = 600  # a codec actor the cluster cannot place is an error after this, not a hang
PROBE_TIMEOUT_S = 5.0
SAMPLE_FEATURES = {PROCESSOR_FORMAT: sample_features, CODES_FORMAT: codes_sample_features}
logger = logging.getLogger(__name__)


# --- the cluster ---------------------------------------------------------------------------------


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise InputError(
            f"--engine ray needs Ray, which is not installed here ({error}): install the extra with `{RAY_EXTRA}` "
            "(pip: pip install 'csm-synthetic[ray]')"
        ) from None
    return ray


def probe_address(address: str) -> None:
    """A host:port that nothing answers on is refused in seconds (ray.init would retry for a minute)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray_address {address!r} is not auto or host:port (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as error:
        raise InputError(
            f"cannot reach the Ray cluster at --ray_address {address!r}: {error}; start its head there with "
            "`ray start --head`, or leave --ray_address out to start a local cluster"
        ) from None


@contextmanager
def ray_cluster(address: str | None) -> Iterator[object]:
    """Ray, connected: to `address` (`auto`: the cluster `ray start` runs on this machine), to the cluster this
    process joined already (left running), or to a local cluster started here and stopped at the end."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # else workers build a venv from the working dir
    ray = import_ray()
    if address not in (None, AUTO, "local") and not address.startswith("ray://"):
        probe_address(address)
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise InputError(f"cannot join the Ray cluster at --ray_address {address!r}: {error}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def warm_workers(ray, model_id: str, count: int) -> list:
    """Start `count` workers loading what the tasks need (about 5 s a worker: torch, transformers, the processor)
    while this driver does its own set-up; returns what to wait for. Part of the set-up: the local engine's
    workers are forked from a process that loaded it all."""
    warm = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(warm_worker)
    return [warm.remote(model_id) for _ in range(max(count, 1))]


@dataclass(frozen=True)
class CodecActors:
    count: int
    on_gpu: bool
    num_cpus: float


def codec_actors(options: PrepareOptions, resources: dict) -> CodecActors:
    """The codec's actor pool from --devices / --device and what the cluster has: `auto` = one actor per GPU,
    else one CPU actor; `cuda` = one per GPU; `cuda:N` / `cpu` entries = one actor each. GPUs asked for on a
    cluster without them are an error now, before any work (such actors would wait for ever)."""
    spec, single = options.encoding_devices()
    names = parse_devices(spec, "--device" if single else "--devices")
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    num_cpus = 1.0 if cpus >= 4 else 0.5  # on a small node a whole CPU per actor starves the other stages
    if names == [AUTO]:
        return CodecActors(1 if single else max(gpus, 1), gpus > 0, num_cpus)
    if names[0] == "cpu":
        return CodecActors(1 if single else len(names), False, num_cpus)
    wanted = 1 if single else sum(gpus if name == "cuda" else 1 for name in names)
    if not gpus or wanted > gpus:
        raise InputError(
            f"{'--device' if single else '--devices'} {spec!r} asks for GPUs, but the Ray cluster has "
            f"{gpus} (its resources: {resources}); use cpu, or join a cluster with GPUs (--ray_address)"
        )
    return CodecActors(wanted, True, num_cpus)


# --- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitPlan:
    split: str
    conversations: pa.Table  # one row per conversation, in corpus order
    shards: list[ShardName]
    batch_size: int

    def rows(self, shard: ShardName) -> pa.Table:
        return self.conversations.slice(shard.index * self.batch_size, self.batch_size)


def plan_split(split: str, turns: datasets.Dataset, batch_size: int) -> SplitPlan:
    """Shards of `batch_size` whole conversations, as the local engine cuts them."""
    conversations = group_conversations(turns).data.table
    count = max(1, math.ceil(conversations.num_rows / batch_size))
    return SplitPlan(split, conversations, [ShardName(split, index, count) for index in range(count)], batch_size)


def work_rows(plan: SplitPlan, shard: ShardName) -> pa.Table:
    """A shard's conversations with where their samples go."""
    rows = plan.rows(shard)
    return (
        rows.append_column("split", pa.array([plan.split] * rows.num_rows, pa.string()))
        .append_column("shard", pa.array([shard.index] * rows.num_rows, pa.int32()))
        .append_column("shards", pa.array([shard.count] * rows.num_rows, pa.int32()))
        .append_column("position", pa.array(range(rows.num_rows), pa.int32()))
    )


def report_schema(turn_features: datasets.Features, with_codes: bool) -> pa.Schema:
    features = planned_features(conversation_features(turn_audio_features(turn_features, with_codes)))
    return datasets.Features({name: features[name] for name in REPORT_COLUMNS}).arrow_schema


def measured_schema(turn_features: datasets.Features) -> pa.Schema:
    """The Arrow types of the columns the per-turn step adds to a turn (`TurnAudio`'s, without codes)."""
    features = turn_audio_features(turn_features, with_codes=False)
    return datasets.Features({name: feature for name, feature in features.items() if name not in turn_features}).arrow_schema


def encode_decisions(corpus: CorpusQuality) -> str:
    return json.dumps(asdict(corpus), sort_keys=True)


def decode_decisions(text: str) -> CorpusQuality:
    values = json.loads(text)
    return CorpusQuality(*(tuple(map(tuple, values[name])) for name in ("rate_medians", "duplicates")))


def saved_decisions(finished: list[FinishedShard]) -> CorpusQuality | None:
    """The corpus decisions the shards of an earlier run were planned with (None when none was finished)."""
    saved = {shard.corpus for shard in finished}
    if len(saved) > 1:
        raise RuntimeError(f"the finished shards were planned with {len(saved)} different corpus decisions")
    return decode_decisions(saved.pop()) if saved else None


# --- the run -------------------------------------------------------------------------------------


def prepare_on_ray(options: PrepareOptions, resume: bool = False, overwrite: bool = False) -> dict:
    """Run the whole preparation on Ray; returns the report (also written to `output_dir/prepare_report.json`)."""
    started = time.perf_counter()
    with ray_cluster(options.ray_address) as ray:
        resources = {name: value for name, value in ray.cluster_resources().items() if name in ("CPU", "GPU")}
        startup_seconds = round(time.perf_counter() - started, 2)
        cluster = {"address": options.ray_address or "local", "startup_seconds": startup_seconds, "cluster": resources}
        warming = warm_workers(ray, options.model_id, int(resources.get("CPU", 1)))
        actors = codec_actors(options, resources) if options.format == CODES_FORMAT else None
        builder = checked_builder(options, FORMATS[options.format])
        return in_output_folder(
            options, resume, overwrite,
            lambda build_dir: write_on_ray(ray, build_dir, options, builder, actors, started, cluster, warming),
        )


def write_on_ray(ray, build_dir: Path, options: PrepareOptions, builder, actors: CodecActors | None,
                 started: float, cluster: dict, warming: list) -> dict:
    """The shards not written yet, through Ray; then the card and the report, which marks a finished run."""
    arguments_checksum = write_json(build_dir / ARGUMENTS_NAME, options.output_defining(), sort_keys=False)
    (build_dir / REPORT_NAME).unlink(missing_ok=True)
    builder.download_and_prepare()
    with quiet_datasets_progress():
        plans = [plan_split(split, turns, options.batch_size) for split, turns in builder.as_dataset().items()]
    turn_features = builder.info.features
    finished = {shard: read_finished_shard(build_dir, shard) for plan in plans for shard in plan.shards}
    todo = [(plan, shard) for plan in plans for shard in plan.shards if finished[shard] is None]
    if todo:
        warn_of_idle_cpus(len(todo), int(cluster["cluster"].get("CPU", 1)), options.batch_size)
        ray.get(warming)  # the workers ready, as this process is
    setup_seconds = time.perf_counter() - started
    decisions = saved_decisions([shard for shard in finished.values() if shard is not None])
    if todo:
        rows = pa.concat_tables([work_rows(plan, shard) for plan, shard in todo])
        rows = with_columns(rows, measure_on_ray(ray, options, rows, measured_schema(turn_features)))
        if decisions is None:  # no shard finished yet: every conversation was measured just now
            decisions = corpus_decisions([turn_table(rows, DECISION_COLUMNS)], options.quality)
        if options.format == CODES_FORMAT:
            rows = with_columns(rows, encode_on_ray(ray, options, rows, actors))
        schema = report_schema(turn_features, options.format == CODES_FORMAT)
        finished.update(write_on_ray_workers(ray, options, build_dir, rows, schema, decisions))
    results = split_results(plans, finished, build_dir, options.format)
    report = build_report(
        options, builder.corpus, results, time.perf_counter() - started, setup_seconds, corpus_quality=decisions
    )
    report["ray"] = {
        **cluster,
        "codec_actors": None if actors is None else {"count": actors.count, "gpu": actors.on_gpu},
        "shards_written": len(todo),
        "shards_resumed": len(finished) - len(todo),
    }
    write_card(build_dir, options, report, plans, finished, results)
    files = {ARGUMENTS_NAME: arguments_checksum}
    files.update(
        (path.relative_to(build_dir).as_posix(), file_checksum(path))
        for path in sorted(build_dir.rglob("*"))
        if path.is_file() and path.name not in (ARGUMENTS_NAME, REPORT_NAME) and not path.name.startswith(".")
    )
    report["files"] = dict(sorted(files.items()))
    report["elapsed_seconds"] = round(time.perf_counter() - started, 2)
    write_json(build_dir / REPORT_NAME, report, sort_keys=False)
    return report


def warn_of_idle_cpus(shards: int, cpus: int, batch_size: int) -> None:
    """A shard is built and written by one task: fewer shards than CPUs leave CPUs idle for the whole pass."""
    if shards < cpus:
        logger.warning(
            "%d CPUs but %d shards to write: a shard is one task, so %d CPUs stay idle; a lower --batch_size (now %d "
            "conversations per shard) gives more shards", cpus, shards, cpus - shards, batch_size,
        )


def configure(ray) -> None:
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # measures and codes come back in plan order
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S


def conversation_blocks(rows: pa.Table) -> list[pa.Table]:
    """Conversation rows in blocks of `CONVERSATIONS_PER_BLOCK`, a CPU task's work each."""
    return [rows.slice(start, CONVERSATIONS_PER_BLOCK) for start in range(0, rows.num_rows, CONVERSATIONS_PER_BLOCK)]


def collect(dataset, total: int, unit: str, description: str) -> pa.Table:
    """The rows a Ray dataset returns, in order, with a progress bar."""
    tables = []
    with tqdm(total=total, unit=unit, desc=description) as progress:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            tables.append(batch)
            progress.update(batch.num_rows)
    return pa.concat_tables(tables)


def measure_on_ray(ray, options: PrepareOptions, rows: pa.Table, turn_types: pa.Schema) -> pa.Table:
    """The first pass: every turn of `rows` through the per-turn step; its columns (no audio) back here, in order.
    With `--asr_model`, each task transcribes its turns too, with the model loaded once per worker: on a cluster
    with GPUs each task takes an equal share of them (GPUs / CPUs, at most `ASR_WORKERS_PER_GPU` on one GPU), so
    every worker's model sits on a GPU."""
    transform = turn_audio(options, FORMATS[PROCESSOR_FORMAT])  # the per-turn step without a codec: both formats
    steps = MeasureTurns(transform, turn_types)
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), max(resources.get("CPU", 1), 1)
    gpu_share = min(1.0, max(gpus / cpus, 1 / ASR_WORKERS_PER_GPU)) if options.asr_model and gpus else 0.0
    return pa.concat_tables(
        run_tasks(ray, steps, conversation_blocks(rows), "conversation", "Ray: measuring turns", num_gpus=gpu_share)
    )


def run_tasks(
    ray, step, blocks: list[pa.Table], unit: str, description: str, num_gpus: float = 0.0
) -> list[pa.Table]:
    """`step` on each block in a CPU task of its own; the results in the order of `blocks`, with a progress bar
    counting their rows. Plain Ray tasks, not Ray Data: a pass of one stage needs none of its streaming, and its
    executor, actors and per-stage reservations took a third of a 2-CPU node and ran one task at a time there.
    Tasks are submitted in the order of `blocks`, `TASKS_PER_CPU` per CPU of the cluster at a time: a large
    corpus's hundred thousand blocks are never all pending in the driver and the object store at once."""
    # max_calls=0: a worker keeps its models for the next task (Ray's default ends a GPU task's worker after it)
    task = ray.remote(num_cpus=1, num_gpus=num_gpus, max_calls=0)(run_step)
    shared = ray.put(step)
    in_flight = TASKS_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", 1)))
    results: list[pa.Table | None] = [None] * len(blocks)
    pending: dict = {}  # task -> its block's position
    submitted = 0
    with tqdm(total=sum(block.num_rows for block in blocks), unit=unit, desc=description) as progress:
        while submitted < len(blocks) or pending:
            while submitted < len(blocks) and len(pending) < in_flight:
                pending[task.remote(shared, blocks[submitted])] = submitted
                submitted += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for finished in done:
                position = pending.pop(finished)
                results[position] = ray.get(finished)
                progress.update(blocks[position].num_rows)
    return results


def with_columns(rows: pa.Table, returned: pa.Table) -> pa.Table:
    """Conversation rows with the columns a pass returned for the same conversations (in the same order)."""
    if not returned.column("conversation_id").equals(rows.column("conversation_id")):
        raise RuntimeError("Ray returned the conversations out of order")
    for name in returned.column_names:
        if name not in ("conversation_id", "turn_index", *WHERE_COLUMNS):
            rows = rows.append_column(name, returned.column(name))
    return rows


def encode_on_ray(ray, options: PrepareOptions, rows: pa.Table, actors: CodecActors) -> pa.Table:
    """Codes format: every fine turn decoded again and prepared as decided (CPU tasks), encoded in the codec's
    actor pool; only the codes come back here (some kB a conversation), in order."""
    rate = options.corpus.target_sampling_rate
    encoder_args = (
        options.codec_model_id, rate, actors.on_gpu, options.encode_budget_seconds, options.encode_batch_size,
        options.allow_tf32,
    )
    configure(ray)
    dataset = ray.data.from_arrow(conversation_blocks(rows)).map_batches(
        ReadTurns(rate), batch_format="pyarrow", batch_size=None, num_cpus=1
    ).map_batches(
        CodecEncoder,
        fn_constructor_args=encoder_args,
        batch_format="pyarrow",
        batch_size=CONVERSATIONS_PER_CODEC_CALL,
        compute=ray.data.ActorPoolStrategy(size=actors.count),
        num_gpus=1 if actors.on_gpu else 0,
        num_cpus=actors.num_cpus,
    )
    return collect(dataset, rows.num_rows, "conversation", "Ray: encoding turns")


def write_on_ray_workers(
    ray, options: PrepareOptions, output_dir: Path, rows: pa.Table, schema: pa.Schema, decisions: CorpusQuality
) -> dict[ShardName, FinishedShard]:
    """The last pass: a task per shard (its measured conversations, a block) plans and builds its samples and
    writes them into the shard's file (the corpus decisions into its footer); only its plans come back."""
    fmt = FORMATS[options.format]
    corpus = encode_decisions(decisions)
    write = WriteShards(
        plan_step(options, fmt, decisions), fmt.samples(options), schema, str(output_dir.resolve()),
        SAMPLE_FEATURES[options.format](), ROWS_PER_GROUP[options.format], corpus,
    )
    blocks = sorted(shard_blocks(rows), key=lambda block: -block.num_rows)  # the longest tasks first
    returned = pa.concat_tables(run_tasks(ray, write, blocks, "conversation", "Ray: writing shards"))
    finished = [ShardRow(**row).finished(corpus) for row in returned.to_pylist()]
    return {shard.name: shard for shard in finished}


def shard_blocks(rows: pa.Table) -> list[pa.Table]:
    """Conversation rows (in plan order) cut into one table per shard."""
    keys = list(zip(rows.column("split").to_pylist(), rows.column("shard").to_pylist()))
    starts = [row for row in range(len(keys)) if row == 0 or keys[row] != keys[row - 1]]
    return [rows.slice(start, end - start) for start, end in zip(starts, [*starts[1:], len(keys)])]


def split_results(
    plans: list[SplitPlan], finished: dict[ShardName, FinishedShard], output_dir: Path, sample_format: str
) -> dict[str, SplitResult]:
    """Each split's plans and samples as the local engine has them for the report; of the samples, the
    columns the card reads (`CARD_COLUMNS` and the format's segments), read back from the shards."""
    import pyarrow.parquet as pq

    features = SAMPLE_FEATURES[sample_format]()
    segments = next(known for known in SAMPLE_FORMATS if known.name == sample_format).segments_column
    columns = datasets.Features({name: features[name] for name in (*CARD_COLUMNS, segments)})
    results = {}
    for plan in plans:
        shards = [finished[shard] for shard in plan.shards]
        planned = datasets.Dataset(pa.concat_tables([shard.plans for shard in shards]))
        files = [output_dir / shard.name.path for shard in shards]
        samples = datasets.Dataset(pq.read_table(files, columns=list(columns)).cast(columns.arrow_schema))
        results[plan.split] = SplitResult.checked(planned, samples)
    return results


CARD_COLUMNS = ("conversation_id", "language", "speaker", "num_tokens", "audio_seconds")


def write_card(
    output_dir: Path,
    options: PrepareOptions,
    report: dict,
    plans: list[SplitPlan],
    finished: dict[ShardName, FinishedShard],
    results: dict[str, SplitResult],
) -> None:
    """The dataset card (YAML configs and features for `load_dataset`, statistics, figures) as push_to_hub writes
    it; a split without samples is left out and its shards removed (the report says why it is empty). Without a
    sample in any split there is nothing to load or describe: no card, as the local engine writes no split."""
    files, splits = {}, {}
    for plan in plans:
        shards = [finished[shard] for shard in plan.shards]
        if not len(results[plan.split].samples):
            for shard in shards:
                (output_dir / shard.name.path).unlink(missing_ok=True)
            continue
        splits[plan.split] = results[plan.split].samples
        files[plan.split] = SplitFiles(
            plan.split,
            (plan.shards[0].pattern,),
            sum(shard.num_rows for shard in shards),
            sum(shard.num_bytes for shard in shards),
            sum(shard.file_bytes for shard in shards),
        )
    if not splits:
        return
    splits = ordered_splits(splits)
    layout = ConfigLayout(
        PREPARED_CONFIG, SAMPLE_FEATURES[options.format](), tuple(files[split] for split in splits), True
    )
    sample_format = next(known for known in SAMPLE_FORMATS if known.name == options.format)
    description = PreparedDescription(report, sample_format, training_model_id(options.model_id))
    card = description.render([layout], {PREPARED_CONFIG: splits}, None)
    for path, png in card.figures.items():
        (output_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (output_dir / path).write_bytes(png)
    (output_dir / CARD_NAME).write_text(card.text, encoding="utf-8")
