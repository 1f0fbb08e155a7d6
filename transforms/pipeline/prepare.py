"""Prepare a whole corpus: builder -> per shard of conversations: turn audio -> plan -> samples -> output.

    report = prepare(PrepareOptions(input_dir="corpus", output_dir="prepared", model_id="unsloth/csm-1b"))

Each shard of `batch_size` conversations goes through the steps of `transforms.maps`, every one a
`datasets` `.map` cached by fingerprint, so a killed run resumes from the shards already finished (a
shard is only ever taken from a file that `datasets` moved into place when complete, and whose checksum
still matches: see `cache.py`). The output folder gets hard links to the cached sample shards, so the
sample data is written to disk once. The report is made from what the steps returned: the plans' skips,
the samples written, and the checksum of every output file.

One run at a time writes an output (`csm_synthetic.folders.FolderLock`); `--overwrite` builds the new
output beside the old one and swaps it in when complete, so a crash leaves the old output or the new one.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import datasets
import pyarrow as pa
from tqdm.auto import tqdm

from csm_synthetic.builder import CsmSynthetic
from csm_synthetic.cli import claim_output_dir
from csm_synthetic.errors import InputError
from csm_synthetic.folders import PARTIAL, FolderLock, recover_replacement, sibling, swapped_in, write_errors

from ..core.audio_prep import AudioPreparation
from ..core.csm import load_processor
from ..core.quality import CorpusQuality, QualityChecks, corpus_quality
from ..encoders import EncoderPool, close_encoder_pool, start_encoder_pool
from ..maps import (
    CodesSamples,
    ContextualSamples,
    PlanWindows,
    TurnAudio,
    build_samples,
    group_conversations,
    map_turn_audio,
    plan_conversations,
    quiet_datasets_progress,
)
from .cache import MapCache
from .info import LOADED_FORMATS, samples_info
from .options import ARGUMENTS_NAME, CODES_FORMAT, PROCESSOR_FORMAT, REPORT_NAME, PrepareOptions
from .report import SplitResult, build_report
from .writer import publish_dataset_dict, remove_partials, write_json


# --- the two formats -----------------------------------------------------------------------------


@contextmanager
def running_encoders(options: PrepareOptions) -> Iterator[EncoderPool]:
    """Codes format: one encoder per device, started first (their start-up overlaps the checks and the corpus
    read; the script starts them before its heavy imports), stopped at the end whatever happens."""
    pool = start_encoder_pool(options.encoder_settings())
    try:
        yield pool
    finally:
        close_encoder_pool(pool)


def codes_turn_audio(options: PrepareOptions) -> TurnAudio:
    settings = options.encoder_settings()
    return TurnAudio(
        settings.sampling_rate,
        settings.codec_model_id,
        ",".join(settings.devices),
        options.encode_budget_seconds,
        options.encode_batch_size,
        settings.allow_tf32,
    )


def check_codec(options: PrepareOptions, processor) -> None:
    """Codes format: the codec must load, take audio at the samples' rate and agree with the processor on
    frames per audio length (checked on the CPU: this process never initialises CUDA, the encoder processes do)."""
    from ..core.codec import check_codec, load_codec

    check_codec(load_codec(options.codec_model_id, "cpu"), processor, options.corpus.target_sampling_rate)


@dataclass(frozen=True)
class Format:
    turn_audio: Callable[[PrepareOptions], TurnAudio]  # what each turn's audio gives: its length, or its codes too
    samples: Callable[[PrepareOptions], ContextualSamples | CodesSamples]
    check: Callable[[PrepareOptions, object], None] = lambda options, processor: None  # before any work
    encoders: Callable[[PrepareOptions], AbstractContextManager] = lambda options: nullcontext()  # for the whole run


FORMATS = {
    PROCESSOR_FORMAT: Format(
        turn_audio=lambda o: TurnAudio(o.corpus.target_sampling_rate),
        samples=lambda o: ContextualSamples(
            model_id=o.model_id,
            max_history=o.max_history,
            max_tokens=o.max_tokens,
            depth_decoder_labels_ratio=o.depth_decoder_labels_ratio,
            sampling_rate=o.corpus.target_sampling_rate,
            seed=o.seed,
        ),
    ),
    CODES_FORMAT: Format(
        turn_audio=codes_turn_audio,
        samples=lambda o: CodesSamples(
            model_id=o.model_id,
            max_history=o.max_history,
            max_tokens=o.max_tokens,
            sampling_rate=o.corpus.target_sampling_rate,
        ),
        check=check_codec,
        encoders=running_encoders,
    ),
}


# --- checks before any work ----------------------------------------------------------------------


def claim_output(options: PrepareOptions, resume: bool, overwrite: bool) -> Path:
    """Refuse to clobber an existing output; on resume, refuse different arguments. Under the output's lock.

    Returns the folder to write: the output itself, or with `overwrite` its hidden sibling, which
    `replace_folder` swaps in when complete (the old output stays whole until then).
    """
    output_dir = Path(options.output_dir).resolve()
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other")
    recover_replacement(output_dir, is_complete=lambda folder: (folder / REPORT_NAME).is_file())
    if output_dir.is_dir():
        remove_partials(output_dir)  # a killed run's (we hold the lock): a folder holding only those is empty
    build_dir = output_dir
    if resume and output_dir.is_dir() and any(output_dir.iterdir()):
        check_resume_arguments(options)
    elif claim_output_dir(
        output_dir,
        overwrite=overwrite,
        is_ours=lambda folder: (folder / ARGUMENTS_NAME).is_file(),
        marker=f"no {ARGUMENTS_NAME}",
        other_ways=", --resume to finish the run that wrote it",
    ):
        build_dir = sibling(output_dir, PARTIAL)
    # a .partial probe: remove_partials clears one that a run killed here left
    check_writable(build_dir, ".write_probe.partial", f"--output_dir {options.output_dir!r}")
    return build_dir


def check_writable(folder: Path, probe_name: str, what: str) -> None:
    """Make `folder` if needed and write (then remove) a probe file in it; an `InputError` naming `what` if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / probe_name
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(f"cannot write to {what}: {error}") from error


def check_resume_arguments(options: PrepareOptions) -> None:
    saved_path = Path(options.output_dir) / ARGUMENTS_NAME
    if not saved_path.is_file():
        raise InputError(
            f"--output_dir {options.output_dir!r} was not written by this tool ({ARGUMENTS_NAME} missing): "
            "cannot resume it; use --overwrite to replace it"
        )
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    current = json.loads(json.dumps(options.output_defining()))
    differences = [
        f"--{name}: was {saved.get(name)!r}, now {value!r}" for name, value in current.items() if saved.get(name) != value
    ]
    if differences:
        raise InputError("cannot resume with different arguments: " + "; ".join(differences))


def check_arguments(options: PrepareOptions, processor) -> None:
    """Arguments that contradict the processor or each other, refused before any work (exit status 2)."""
    processor_rate = processor.feature_extractor.sampling_rate
    if options.corpus.target_sampling_rate != processor_rate:
        raise InputError(
            f"--target_sampling_rate {options.corpus.target_sampling_rate} differs from the {processor_rate} Hz "
            f"that the processor of --model_id {options.model_id!r} takes: the samples would hold audio at the "
            f"wrong rate; leave --target_sampling_rate at {processor_rate}"
        )
    check_cache_dir(options)


def check_cache_dir(options: PrepareOptions) -> None:
    """The cache must lie outside the output (which is replaced as a whole) and be writable."""
    flag = "--cache_dir" if options.cache_dir else "the datasets cache (HF_DATASETS_CACHE, no --cache_dir given)"
    cache_dir = Path(options.cache_dir or datasets.config.HF_DATASETS_CACHE).resolve()
    output_dir = Path(options.output_dir).resolve()
    if cache_dir == output_dir or output_dir in cache_dir.parents:
        raise InputError(
            f"{flag} {str(cache_dir)!r} lies inside --output_dir {str(output_dir)!r}: the output folder must hold "
            "only the output; choose a cache folder outside it"
        )
    check_writable(cache_dir, f".write_probe_{os.getpid()}", f"{flag} {str(cache_dir)!r}")


def make_builder(options: PrepareOptions) -> CsmSynthetic:
    return CsmSynthetic(
        source=options.source, config_name=options.language, cache_dir=options.cache_dir, settings=options.corpus
    )


def checked_builder(options: PrepareOptions, fmt: Format) -> CsmSynthetic:
    """Every check before any work (arguments against the processor and codec, a corpus with a usable
    conversation), and the corpus' builder (scripts and audio headers read, no audio)."""
    processor = load_processor(options.model_id)
    check_arguments(options, processor)
    fmt.check(options, processor)
    builder = make_builder(options)
    corpus = builder.corpus
    if not corpus.conversations:
        found = f" ({len(corpus.problems)} problems, e.g. {corpus.problems[0]})" if corpus.problems else ""
        raise InputError(f"no usable conversation found in {options.source}{found}")
    return builder


# --- the work ------------------------------------------------------------------------------------


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
_DEATH_SIGNAL_REGISTERED = False
_forking_pid = 0  # set just before each fork: the child's parent


def forked_workers_die_with_their_parent() -> None:
    """Ask Linux to kill every process forked from now on when its parent dies (a no-op elsewhere).

    datasets' `num_proc` pool workers wait for work for ever once their run is killed (SIGKILL, the OOM
    killer): they would hold their memory, and could even finish and write a shard of a dead run.
    """
    global _DEATH_SIGNAL_REGISTERED
    if _DEATH_SIGNAL_REGISTERED or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)

    def before_fork() -> None:
        global _forking_pid
        _forking_pid = os.getpid()

    def in_child() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != _forking_pid:  # the parent died before the request took effect
            os._exit(1)

    os.register_at_fork(before=before_fork, after_in_child=in_child)
    _DEATH_SIGNAL_REGISTERED = True


def conversation_shards(turns: datasets.Dataset, conversations_per_shard: int) -> list[range]:
    """Rows of `turns` (ordered by conversation) cut into shards of whole conversations."""
    ids = turns.data.column("conversation_id").to_pylist()
    starts = [row for row, conversation_id in enumerate(ids) if row == 0 or conversation_id != ids[row - 1]]
    bounds = starts[::conversations_per_shard] + [len(ids)]
    return [range(start, end) for start, end in zip(bounds, bounds[1:])]


def turn_audio(options: PrepareOptions, fmt: Format) -> TurnAudio:
    """The per-turn step of the format, with the audio preparation and the ASR model of the options."""
    preparation = AudioPreparation(trim_to=options.quality.trim_to, loudness=options.normalize_loudness)
    return replace(
        fmt.turn_audio(options),
        preparation=preparation,
        asr_model_id=options.asr_model,
        asr_batch_size=options.asr_batch_size,
    )


def measure_split(
    turns: datasets.Dataset, split: str, options: PrepareOptions, fmt: Format, cache: MapCache
) -> list[datasets.Dataset]:
    """Each shard of whole conversations through the per-turn step (decoded once, measured; cached)."""
    transform = turn_audio(options, fmt)
    shards = conversation_shards(turns, options.batch_size)
    with tqdm(shards, unit="shard", desc=f"{split}: reading turns") as bar:  # closed (a newline) on any error too
        return [measure_shard(turns.select(rows), transform, cache) for rows in bar]


def measure_shard(turns: datasets.Dataset, transform: TurnAudio, cache: MapCache) -> datasets.Dataset:
    with cache.shard_lock(turns._fingerprint):
        return cache.checked(
            turns, transform.fingerprint(turns), lambda: map_turn_audio(turns, transform, desc="Reading turns")
        )


DECISION_COLUMNS = ["conversation_id", "turn_index", "language", "text", "speaking_rate", "audio_hash"]


def corpus_decisions(turn_tables: Iterable[pa.Table], checks: QualityChecks) -> CorpusQuality:
    """The corpus-level decisions of the checks, from the measured columns (`DECISION_COLUMNS`, a row per turn)
    of every turn of the corpus, in tables (a pass over Arrow columns, no audio)."""
    if not (checks.speaking_rate_flag or checks.speaking_rate_drop or checks.duplicate_audio):
        return CorpusQuality()
    columns: dict[str, list] = {name: [] for name in DECISION_COLUMNS}
    for table in turn_tables:
        for name in DECISION_COLUMNS:
            columns[name] += table.column(name).to_pylist()
    return corpus_quality(*(columns[name] for name in DECISION_COLUMNS))


def prepare_shard(
    with_audio: datasets.Dataset, plan: PlanWindows, transform, options: PrepareOptions, cache: MapCache
) -> SplitResult:
    """One measured shard of whole conversations planned and built; each step's result is cached, and checked
    before reuse."""
    with cache.shard_lock(with_audio._fingerprint):
        conversations = cache.checked(with_audio, "conversations", lambda: group_conversations(with_audio))
        planned = cache.checked(conversations, plan, lambda: plan_conversations(conversations, plan))
        samples = cache.checked(planned, transform, lambda: build_samples(planned, transform, options.num_proc))
    return SplitResult.checked(planned, samples)


def plan_step(options: PrepareOptions, fmt: Format, corpus: CorpusQuality) -> PlanWindows:
    """The plan of the format's samples, with the quality checks of the options and the corpus decisions."""
    return replace(fmt.samples(options).plan, checks=options.quality, corpus=corpus)


def prepare_split(
    measured: list[datasets.Dataset],
    split: str,
    options: PrepareOptions,
    fmt: Format,
    corpus: CorpusQuality,
    cache: MapCache,
) -> SplitResult:
    transform = fmt.samples(options)
    plan = plan_step(options, fmt, corpus)
    with tqdm(measured, unit="shard", desc=f"{split}: building samples") as bar:
        results = [prepare_shard(with_audio, plan, transform, options, cache) for with_audio in bar]
    return SplitResult.concatenate(results)


def prepare(options: PrepareOptions, resume: bool = False, overwrite: bool = False) -> dict:
    """Run the whole preparation; returns the report (also written to `output_dir/prepare_report.json`)."""
    forked_workers_die_with_their_parent()
    fmt = FORMATS[options.format]
    with fmt.encoders(options) as encoders:
        return prepare_with(options, fmt, encoders, resume, overwrite)


def prepare_with(
    options: PrepareOptions, fmt: Format, encoders: EncoderPool | None, resume: bool, overwrite: bool
) -> dict:
    started = time.perf_counter()
    builder = checked_builder(options, fmt)
    return in_output_folder(options, resume, overwrite, lambda build_dir: write_output(
        build_dir, options, fmt, builder, encoders, started
    ))


def in_output_folder(options: PrepareOptions, resume: bool, overwrite: bool, write: Callable[[Path], dict]) -> dict:
    """`write(build_dir)` under the output's lock: into the output itself, or with `overwrite` into a hidden
    sibling swapped in when complete (the old output stays as it was until then); returns what it returns."""
    output_dir = Path(options.output_dir).resolve()
    cache_dir = options.cache_dir or datasets.config.HF_DATASETS_CACHE
    with FolderLock(output_dir, "--output_dir"), write_errors(output_dir, cache_dir):
        build_dir = claim_output(options, resume, overwrite)
        with swapped_in(build_dir, output_dir):  # a failed --overwrite leaves the old output; the cache keeps shards
            report = write(build_dir)
    return report


def write_output(
    build_dir: Path, options: PrepareOptions, fmt: Format, builder: CsmSynthetic, encoders: EncoderPool | None,
    started: float
) -> dict:
    """Every step into the cache, the samples into `build_dir`, then the report, which marks a finished run."""
    arguments_checksum = write_json(build_dir / ARGUMENTS_NAME, options.output_defining(), sort_keys=False)
    (build_dir / REPORT_NAME).unlink(missing_ok=True)

    builder.download_and_prepare()
    if encoders is not None:
        encoders.wait_ready()  # the encoder processes' start-up (loading the codec) is set-up too
    setup_seconds = time.perf_counter() - started  # models loaded, corpus read: what every run pays before any audio
    splits = builder.as_dataset()
    with quiet_datasets_progress(), MapCache.of(next(iter(splits.values()))) as cache:
        measured = {split: measure_split(turns, split, options, fmt, cache) for split, turns in splits.items()}
        decisions = corpus_decisions(
            (shard.data.table for shards in measured.values() for shard in shards), options.quality
        )
        results = {
            split: prepare_split(shards, split, options, fmt, decisions, cache) for split, shards in measured.items()
        }
    samples = {split: result.samples for split, result in results.items()}
    info, loaded_format = samples_info(options, samples), LOADED_FORMATS[options.format]
    files = {ARGUMENTS_NAME: arguments_checksum,
             **publish_dataset_dict(samples, build_dir, info, loaded_format, cache.checksum)}

    report = build_report(
        options, builder.corpus, results, time.perf_counter() - started, setup_seconds, files, decisions
    )
    if encoders is not None:
        report["encoding"] = encoders.stats.to_dict(encoders.settings)
    write_json(build_dir / REPORT_NAME, report, sort_keys=False)
    return report
