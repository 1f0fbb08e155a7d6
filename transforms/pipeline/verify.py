"""Check every file and every row of a prepared output against what was written and the rules it was made by.

Both engines' outputs: the local engine's `save_to_disk` folders, `--engine ray`'s Parquet shards (`data/`).
Files first: each file the report lists must have the size and checksum it was written with (a missing,
truncated or damaged file is named, and the rows are then not read), the output's folders must be the
splits the report declares (Ray: `data/` and `figures/`), and no data file may be one the report does not
list. Then the rows.
Per row: the token columns have one length, equal to `num_tokens` and within `max_tokens`; the audio is
cut into as many segments as there are `<|AUDIO|>` runs, each run as long as the processor's rule says for
its segment (codes format: as the segment's frames of codes); labels sit only on audio positions; the
sample holds at most `max_history + 1` turns; its audio is finite and within ±`MAX_ABS_SAMPLE` (codes
format: its codes lie in [0, codebook size)). Lengths come from Arrow offsets; the audio and code values
are read once per batch, straight from the Arrow buffer, vectorised.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from csm_synthetic.audio_checks import MAX_ABS_SAMPLE
from csm_synthetic.errors import InputError

from ..core.csm import audio_token_count, load_processor
from ..core.labels import BACKBONE_ONLY_LABEL, IGNORE_INDEX
from ..export.card import DATA_DIR, FIGURES_DIR, split_pattern
from ..export.content import PREPARED_CONFIG
from .checksums import file_problem
from .options import RAY_ENGINE, REPORT_NAME

ROWS_PER_BATCH = 256
MAX_LISTED_ERRORS = 50


@dataclass
class Verification:
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    files: int | None = None  # files checked against the report's checksums (None: the report has none)

    def fail(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(message)

    @property
    def ok(self) -> bool:
        return self.error_count == 0


@dataclass(frozen=True)
class Rules:
    audio_token_id: int
    audio_eos_token_id: int
    max_tokens: int
    max_history: int | None
    frames_for_samples: object  # callable: samples -> number of <|AUDIO|> tokens
    codebook_size: int | None = None  # codes format: codes lie in [0, codebook_size)


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a 1-D boolean array."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def check_tokens(row: dict, segment_frames: list[int], rules: Rules) -> list[str]:
    """Checks of both formats: lengths, budget, one `<|AUDIO|>` run of the right length per audio segment."""
    problems = []
    ids, mask = row["input_ids"], row["attention_mask"]
    lengths = {name: len(row[name]) for name in ("input_ids", "attention_mask", "labels") if name in row}
    if set(lengths.values()) != {row["num_tokens"]}:
        return ["lengths differ: " + ", ".join(f"{name} {length}" for name, length in lengths.items())
                + f", num_tokens {row['num_tokens']}"]
    if len(ids) > rules.max_tokens:
        problems.append(f"{len(ids)} tokens, more than max_tokens {rules.max_tokens}")
    if not np.all(mask == 1):
        problems.append("attention_mask is not all ones (samples are stored unpadded)")
    runs = runs_of(ids == rules.audio_token_id)
    eos_positions = set(np.flatnonzero(ids == rules.audio_eos_token_id).tolist())
    if len(runs) != len(segment_frames) or len(eos_positions) != len(segment_frames):
        problems.append(
            f"{len(segment_frames)} audio segments but {len(runs)} <|AUDIO|> runs and {len(eos_positions)} <|audio_eos|>"
        )
        return problems
    for number, ((start, length), expected) in enumerate(zip(runs, segment_frames)):
        if length != expected:
            problems.append(f"audio segment {number}: {length} <|AUDIO|> tokens, expected {expected}")
        if start + length not in eos_positions:
            problems.append(f"audio segment {number}: its <|AUDIO|> run is not followed by <|audio_eos|>")
    if len(segment_frames) != row["num_context_turns"] + 1:
        problems.append(f"{len(segment_frames)} audio segments for {row['num_context_turns']} context turns + the target")
    if rules.max_history is not None and row["num_context_turns"] > rules.max_history:
        problems.append(f"{row['num_context_turns']} context turns, more than max_history {rules.max_history}")
    return problems


def check_processor_row(row: dict, audio_length: int, rules: Rules) -> list[str]:
    """Everything wrong with one processor-format sample (empty when it is sound)."""
    ids, labels = row["input_ids"], row["labels"]
    cutoffs = np.asarray(row["input_values_cutoffs"])
    if len(cutoffs) == 0 or np.any(np.diff(np.r_[0, cutoffs]) <= 0) or cutoffs[-1] != audio_length:
        return [f"input_values_cutoffs {cutoffs.tolist()} do not cut {audio_length} audio samples"]
    frames = [rules.frames_for_samples(int(samples)) for samples in np.diff(np.r_[0, cutoffs])]
    problems = check_tokens(row, frames, rules)
    if problems and problems[0].startswith("lengths differ"):
        return problems
    audio_positions = (ids == rules.audio_token_id) | (ids == rules.audio_eos_token_id)
    labelled = labels != IGNORE_INDEX
    if np.any(labelled & ~audio_positions):
        problems.append(f"labels on {int(np.sum(labelled & ~audio_positions))} non-audio positions")
    valid = (labels == ids) | ((labels == BACKBONE_ONLY_LABEL) & (ids == rules.audio_token_id))
    if np.any(audio_positions & ~valid):
        problems.append("audio positions whose label is neither the token id nor -101")
    return problems


def check_codes_row(row: dict, segment_frames: list[int], codebooks: set[int], rules: Rules) -> list[str]:
    """Everything wrong with one codes-format sample: its codes have one frame per `<|AUDIO|>` token."""
    problems = check_tokens(row, segment_frames, rules)
    if len(codebooks) > 1:
        problems.append(f"audio_codes frames with different numbers of codebooks: {sorted(codebooks)}")
    return problems


def rules_from_report(output_dir: Path, model_id: str | None) -> tuple[Rules, dict]:
    report_path = output_dir / REPORT_NAME
    if not report_path.is_file():
        raise InputError(f"{report_path} is missing: the output is not a finished prepare run")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InputError(
            f"{report_path} is unreadable ({error}): rerun prepare with --resume to write it again"
        ) from error
    arguments = report["arguments"]
    processor = load_processor(model_id or arguments["model_id"])
    rules = Rules(
        audio_token_id=processor.audio_token_id,
        audio_eos_token_id=processor.audio_eos_token_id,
        max_tokens=arguments["max_tokens"],
        max_history=arguments["max_history"],
        frames_for_samples=lambda samples: audio_token_count(processor, samples),
        codebook_size=codebook_size(arguments["codec_model_id"]) if arguments.get("format") == "codes" else None,
    )
    return rules, report


def codebook_size(codec_model_id: str) -> int:
    """Codes per codebook of the codec that encoded a codes-format output (its config only, no weights)."""
    from transformers import MimiConfig

    try:
        return MimiConfig.from_pretrained(codec_model_id).codebook_size
    except Exception as error:  # transformers raises OSError, ValueError, HF errors... for the same cause
        raise InputError(f"cannot read the codec config of {codec_model_id!r} (the output's codec): {error}") from error


def list_values(column) -> tuple[np.ndarray, np.ndarray]:
    """The leaf values of a (nested) Arrow list column of a batch, and each row's bounds in them (rows + 1)."""
    bounds = column.offsets.to_numpy()
    while pa.types.is_list(column.type.value_type):
        column = column.values
        bounds = column.offsets.to_numpy()[bounds]
    leaf = column.values
    return leaf.slice(bounds[0], bounds[-1] - bounds[0]).to_numpy(), bounds - bounds[0]


def rows_of_positions(bounds: np.ndarray, positions: np.ndarray, num_rows: int) -> np.ndarray:
    """How many of `positions` (into a column's leaf values) fall in each row."""
    return np.bincount(np.searchsorted(bounds, positions, side="right") - 1, minlength=num_rows)


def stored_value_problems(batch, rules: Rules) -> dict[int, list[str]]:
    """Per row (position in the batch) of a batch: audio samples not finite or beyond the bound, codes outside
    the codebook. A sound batch costs a minimum and a maximum over each column's values; only a batch with a
    bad value is searched for its rows."""
    problems: dict[int, list[str]] = {}
    if "input_values" in batch.schema.names:
        values, bounds = list_values(batch.column("input_values"))
        if len(values) and not -MAX_ABS_SAMPLE <= values.min() <= values.max() <= MAX_ABS_SAMPLE:  # NaN: False
            beyond = np.flatnonzero(~(np.abs(values) <= MAX_ABS_SAMPLE))
            non_finite = rows_of_positions(bounds, beyond[~np.isfinite(values[beyond])], batch.num_rows)
            for row, count in enumerate(rows_of_positions(bounds, beyond, batch.num_rows)):
                if count:
                    problems.setdefault(row, []).append(
                        f"input_values: {count} samples are NaN, infinite or beyond ±{MAX_ABS_SAMPLE:g} "
                        f"({non_finite[row]} not finite)"
                    )
    if "audio_codes" in batch.schema.names and rules.codebook_size is not None:
        values, bounds = list_values(batch.column("audio_codes"))
        if len(values) and not 0 <= values.min() <= values.max() < rules.codebook_size:
            outside = np.flatnonzero((values < 0) | (values >= rules.codebook_size))
            for row, count in enumerate(rows_of_positions(bounds, outside, batch.num_rows)):
                if count:
                    message = f"audio_codes: {count} codes outside [0, {rules.codebook_size})"
                    problems.setdefault(row, []).append(message)
    return problems


TOKEN_COLUMNS = ("conversation_id", "turn_index", "num_tokens", "num_context_turns", "input_ids", "attention_mask")
PROCESSOR_COLUMNS = (*TOKEN_COLUMNS, "labels", "input_values_cutoffs")


def verify_split(batches: Iterator[pa.RecordBatch], split: str, rules: Rules, result: Verification) -> None:
    result.rows[split] = 0
    for batch in batches:
        codes_format = "audio_codes" in batch.schema.names
        names = TOKEN_COLUMNS if codes_format else PROCESSOR_COLUMNS
        columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in names}
        per_row = codes_checks(batch, rules) if codes_format else processor_checks(batch, rules)
        stored = stored_value_problems(batch, rules)
        for position, check in enumerate(per_row):
            row = {name: values[position] for name, values in columns.items()}
            for problem in check(row) + stored.get(position, []):
                result.fail(f"{split}: {row['conversation_id']} turn {row['turn_index']}: {problem}")
        result.rows[split] += batch.num_rows


def processor_checks(batch, rules: Rules):
    """One check per row; audio shapes come from Arrow offsets, the audio itself is never read."""
    audio = batch.column("input_values")  # (1, samples) a row
    channels = audio.value_lengths().to_numpy()
    _, samples = list_values(audio)  # each row's bounds in the samples
    return [
        lambda row, length=int(length), count=int(count): (
            check_processor_row(row, length, rules) if count == 1 else [f"input_values has {count} channels, not 1"]
        )
        for length, count in zip(np.diff(samples), channels)
    ]


def codes_checks(batch, rules: Rules):
    """One check per row, with each segment's frame count and the codebook counts from Arrow offsets."""
    samples = batch.column("audio_codes")
    segments = samples.flatten()
    frames_per_segment = segments.value_lengths().to_numpy()
    codebooks_per_frame = segments.flatten().value_lengths().to_numpy()
    segment_offsets = samples.offsets.to_numpy()
    frame_offsets = segments.offsets.to_numpy()
    checks = []
    for row in range(len(samples)):
        first, last = segment_offsets[row] - segment_offsets[0], segment_offsets[row + 1] - segment_offsets[0]
        frames = frames_per_segment[first:last].tolist()
        codebooks = set(codebooks_per_frame[frame_offsets[first] - frame_offsets[0] : frame_offsets[last] - frame_offsets[0]].tolist())
        checks.append(lambda row_values, frames=frames, codebooks=codebooks: check_codes_row(row_values, frames, codebooks, rules))
    return checks


def verify_files(output_dir: Path, report: dict, result: Verification) -> None:
    """Each file as the report recorded it; no folder but the report's splits; no data file it does not list."""
    recorded = report.get("files")
    if recorded is None:
        return  # an output of a version that recorded no checksums
    result.files = len(recorded)
    for path, expected in recorded.items():
        problem = file_problem(output_dir / path, expected)
        if problem is not None:
            result.fail(f"{path}: {problem}")
    folders = {DATA_DIR, FIGURES_DIR} if on_ray(report) else set(report["counts"]["by_split"])
    for folder in sorted(path for path in output_dir.iterdir() if path.is_dir()):
        if folder.name not in folders:
            result.fail(f"{folder.name}/: a folder that is not part of this output (left by an earlier run?)")
    data_files = output_dir.glob(f"{DATA_DIR}/*/*.parquet") if on_ray(report) else output_dir.glob("*/data-*.arrow")
    for data_file in sorted(path.relative_to(output_dir).as_posix() for path in data_files):
        if data_file not in recorded:
            result.fail(f"{data_file}: a data file this run did not write")


def on_ray(report: dict) -> bool:
    return report["arguments"].get("engine") == RAY_ENGINE


def split_batches(output_dir: Path, report: dict) -> dict[str, Iterator[pa.RecordBatch]]:
    """Each split's rows in record batches of at most `ROWS_PER_BATCH`: from the local engine's `save_to_disk`
    folders, or from --engine ray's Parquet shards (one file after the other, a row group at a time)."""
    if not on_ray(report):
        splits = datasets.load_from_disk(str(output_dir))
        return {split: iter(dataset.data.to_batches(max_chunksize=ROWS_PER_BATCH)) for split, dataset in splits.items()}
    import pyarrow.parquet as pq

    def parquet_batches(files: list[Path]) -> Iterator[pa.RecordBatch]:
        for path in files:
            yield from pq.ParquetFile(path).iter_batches(batch_size=ROWS_PER_BATCH)

    splits = report["counts"]["by_split"]
    shards = {split: sorted(output_dir.glob(split_pattern(PREPARED_CONFIG, split))) for split in splits}
    return {split: parquet_batches(files) for split, files in shards.items() if files}


REPAIR_HINT = (
    "rows not checked: files are missing or damaged; prepare_dataset_for_training.py with the same arguments "
    "and --resume repairs them"
)


def verify_output(output_dir: str | Path, model_id: str | None = None) -> Verification:
    """Check every file, then every row of every split, of a `prepare_dataset_for_training.py` output."""
    output_dir = Path(output_dir)
    rules, report = rules_from_report(output_dir, model_id)
    result = Verification()
    verify_files(output_dir, report, result)
    if not result.ok:
        result.fail(REPAIR_HINT)
        return result
    for split, batches in split_batches(output_dir, report).items():
        verify_split(batches, split, rules, result)
        expected = report["counts"]["by_split"].get(split, {}).get("samples")
        if expected != result.rows[split]:
            result.fail(f"{split}: {result.rows[split]} rows, the report says {expected}")
    return result
