"""The steps of `--engine ray` as functions of Ray tasks: pyarrow tables of whole conversations in and out.

No Ray here: each is a plain callable over a table of conversation rows (`group_conversations`' rows: one
per conversation, a list per turn), so it runs in any worker that can import this package. Each calls the
local engine's own steps (`TurnAudio` -> `prepare_turn`, `prepared_audios`, `PlanWindows`,
`ContextualSamples` / `CodesSamples`, `core.codec`), so both engines make the same rows. Two passes, as the
local engine's, because the corpus decisions of the quality checks need every turn's measures before any plan:

    measure (both formats):  MeasureTurns(TurnAudio(...))         decode, check, measure, decide each turn's
                                                                    preparation; only the columns come back
    codes format, encode:    ReadTurns(rate) -> CodecEncoder(...)  decode again, prepare, encode; only the
                                                                    codes come back
    build, a task per shard: WriteShards(PlanWindows, ContextualSamples | CodesSamples)   plan, (decode
                                                                    again,) build, write the shard's file

Each conversation row carries where its samples go (`WHERE_COLUMNS`: split, shard, the split's shard count,
position in the shard). `WriteShards` writes each shard's samples as they are made (the sample features'
explicit types) and returns a row per shard: its plans (the columns the report reads, `REPORT_COLUMNS`) and
sizes. Bad audio never raises: `prepare_turn` makes it a fault of the turn, which the plan turns into a
problem and a cut, as locally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..arrow import ipc_bytes, list_array, read_ipc, segments_array
from ..features import PER_CONVERSATION
from ..maps import CodesSamples, ContextualSamples, PlanWindows, TurnAudio, conversation_text, prepared_audios
from .parquet_shards import FinishedShard, ShardName, ShardWriter

WHERE_COLUMNS = ("split", "shard", "shards", "position")  # where a conversation's samples go: its shard's file
REPORT_COLUMNS = (
    "conversation_id", "turn_index", "num_samples", "message_tokens", "window_start", "skipped", "problems", "quality"
)
DECODED_COLUMN = "decoded"  # codes format, between reading and encoding: each turn's samples (null: a bad turn)
TURN_AUDIO_INPUTS = ("audio", "text", "duration", "start", "end")  # what `TurnAudio` reads of a turn (if present)


def warm_worker(model_id: str) -> bool:
    """What every task of a run needs loaded in its worker: this package (with `datasets`), torch, transformers and
    the processor (`load_processor` keeps it for the process). False when the processor cannot be loaded: the
    driver's own checks say why."""
    from ..core.csm import load_processor

    try:
        load_processor(model_id)
    except Exception:  # noqa: BLE001 - the driver loads it too and reports the error
        return False
    return True


def run_step(step, table: pa.Table) -> pa.Table:
    """A Ray task's body: one step on one block of conversation rows."""
    return step(table)


def turn_offsets(table: pa.Table) -> np.ndarray:
    """Where each conversation's turns start in the flattened per-turn lists (and the end)."""
    lists = table.column("turn_index").combine_chunks()
    offsets = lists.offsets.to_numpy()
    return (offsets - offsets[0]).astype(np.int32)


def per_conversation(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
    """Per-turn `values` (all conversations' turns, in order) as one list per conversation."""
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def flat_turns(table: pa.Table, name: str) -> list:
    """A per-turn list column of every conversation, flattened to one Python list."""
    return table.column(name).combine_chunks().flatten().to_pylist()


def turn_table(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """Columns `names` of conversation rows as a row per turn (a conversation's values repeated on its turns)."""
    parents = pc.list_parent_indices(table.column("turn_index").combine_chunks())
    return pa.table({
        name: table.column(name).combine_chunks().take(parents) if name in PER_CONVERSATION
        else table.column(name).combine_chunks().flatten()
        for name in names
    })


def with_turn_columns(table: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    """`table` with per-turn `columns` (flat, all conversations' turns) added as lists per conversation."""
    offsets = turn_offsets(table)
    for name, values in columns.items():
        array = per_conversation(offsets, values)
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    return table


def audio_array(audios: Sequence[np.ndarray | None]) -> pa.ListArray:
    """list<float32>, one entry per turn (null for a turn whose audio is unusable), in one buffer."""
    lists = list_array([np.zeros(0, np.float32) if audio is None else audio for audio in audios], np.float32)
    return pa.ListArray.from_arrays(lists.offsets, lists.values, mask=pa.array([audio is None for audio in audios]))


@dataclass(frozen=True)
class MeasureTurns:
    """The first pass, CPU: each turn through the local per-turn step (`TurnAudio`: decoded once, checked,
    measured, its preparation decided; no codec). Returns, per conversation, its id, turns and where it goes,
    with the step's columns as lists (`turn_types`: their Arrow types) - no audio, so the driver can hold
    every conversation's."""

    turn_audio: TurnAudio
    turn_types: pa.Schema  # the types of the columns `turn_audio` returns

    def __call__(self, table: pa.Table) -> pa.Table:
        batch = {name: flat_turns(table, name) for name in TURN_AUDIO_INPUTS if name in table.column_names}
        columns = self.turn_audio(batch)
        arrays = {name: pa.array(columns[name], self.turn_types.field(name).type) for name in self.turn_types.names}
        return with_turn_columns(table.select(["conversation_id", "turn_index", *WHERE_COLUMNS]), arrays)


@dataclass(frozen=True)
class ReadTurns:
    """Codes format, CPU: each turn without a fault decoded again and prepared as the first pass decided
    (`prepared_audios`, as the processor format's samples read theirs), for the codec (`DECODED_COLUMN`)."""

    sampling_rate: int

    def __call__(self, table: pa.Table) -> pa.Table:
        audios = []
        for row in table.to_pylist():
            fine = {position for position, kind in enumerate(row["problem_kind"]) if kind is None}
            audios += prepared_audios(conversation_text(row), row, fine, self.sampling_rate)
        return with_turn_columns(table, {DECODED_COLUMN: audio_array(audios)})


def turn_codes_array(codes: Sequence[np.ndarray]) -> pa.ListArray:
    """list<list<int16>> per turn: its (frames, codebooks) codes (the segments of one row of `segments_array`)."""
    return segments_array([list(codes)], np.int16).values


def decoded_audios(table: pa.Table) -> list[np.ndarray | None]:
    """`DECODED_COLUMN`'s samples of every turn, as views of its one buffer (None for a turn without)."""
    turns = table.column(DECODED_COLUMN).combine_chunks().flatten()
    offsets, values = turns.offsets.to_numpy(), turns.values.to_numpy()
    valid = turns.is_valid().to_numpy(zero_copy_only=False)
    return [values[offsets[turn] : offsets[turn + 1]] if valid[turn] else None for turn in range(len(turns))]


class CodecEncoder:
    """Codes format, an actor: the Mimi codec on one device, loaded once; replaces each turn's samples by its
    codes. Codec calls as in the local engine: the turns of a batch sorted by their headers' lengths, padded
    audio within the budget (`core.codec.codec_batches`), each call one `encode_padded`; a call too big for
    the device is split in two and retried."""

    def __init__(
        self,
        codec_model_id: str,
        sampling_rate: int,
        on_gpu: bool,
        budget_seconds: float | None,
        max_batch_turns: int | None,
        allow_tf32: bool,
    ):
        import torch

        from ..core.codec import set_fp32_precision
        from ..encoders import DEFAULT_BUDGET_SECONDS, EncoderSettings, load_encoder_codec

        # A GPU actor in a cluster that declares GPUs its torch cannot see (a logical GPU in tests) runs on the CPU.
        device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
        if device == "cuda":
            set_fp32_precision(allow_tf32)
        self.codec = load_encoder_codec(EncoderSettings(codec_model_id, (device,), sampling_rate, allow_tf32), device)
        self.sampling_rate = sampling_rate
        self.budget = max(1, round((budget_seconds or DEFAULT_BUDGET_SECONDS[device]) * sampling_rate))
        self.max_batch_turns = max_batch_turns

    def __call__(self, table: pa.Table) -> pa.Table:
        from ..core.codec import codec_batches

        audios = decoded_audios(table)
        durations = np.asarray(flat_turns(table, "duration"), dtype=np.float64)
        items = np.array([turn for turn, audio in enumerate(audios) if audio is not None], dtype=np.int64)
        planned = np.rint(durations[items] * self.sampling_rate) if len(items) else np.zeros(0)
        width = self.codec.config.num_quantizers
        codes = [np.zeros((0, width), np.int16)] * len(audios)  # a bad turn: no frames (no sample ever uses it)
        for call in codec_batches(planned, self.budget, self.max_batch_turns):
            turns = items[call]
            for turn, turn_codes in zip(turns, self.encode([audios[turn] for turn in turns])):
                codes[turn] = turn_codes
        where = table.select(["conversation_id", *WHERE_COLUMNS])  # the codes alone go back to the driver
        return with_turn_columns(where.append_column("turn_index", table.column("turn_index")),
                                 {"audio_codes": turn_codes_array(codes)})

    def encode(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        from ..core.codec import pad_batch
        from ..encoders import OUT_OF_MEMORY, encode_or_report_memory

        codes = encode_or_report_memory(self.codec, *pad_batch(audios))
        if codes is not OUT_OF_MEMORY:
            return codes
        if len(audios) == 1:
            raise MemoryError(f"the codec's device has no room for one turn of {len(audios[0])} samples")
        half = len(audios) // 2
        return self.encode(audios[:half]) + self.encode(audios[half:])


@dataclass(frozen=True)
class WriteShards:
    """CPU, a task per shard of the plan: the plan and the samples of each of its measured conversations
    (`PlanWindows` with the quality checks and the corpus decisions, then `ContextualSamples` or `CodesSamples`,
    one conversation per call as locally), written into the shard's file on the shared filesystem as they are
    made (`ShardWriter`: temp file + rename, the plans and corpus decisions in the footer). Only a row per shard
    comes back (`FINISHED_COLUMNS`: its plans as Arrow IPC, its sizes): no sample leaves the task."""

    plan: PlanWindows
    samples: ContextualSamples | CodesSamples
    report_schema: pa.Schema  # the types of `REPORT_COLUMNS`
    output_dir: str
    features: datasets.Features  # the samples'
    rows_per_group: int
    corpus: str  # the corpus decisions (JSON), for the footer

    def __call__(self, rows: pa.Table) -> pa.Table:
        """One whole shard (a task's block: its conversations in their plan positions, 0 to n-1) -> its row."""
        shard = self.write(rows)
        return pa.table({name: [getattr(shard, name)] for name in FINISHED_COLUMNS})

    def write(self, rows: pa.Table) -> ShardRow:
        where = rows.slice(0, 1).to_pylist()[0]
        name = ShardName(where["split"], where["shard"], where["shards"])
        if rows.column("position").to_pylist() != list(range(rows.num_rows)):
            raise RuntimeError(f"{name.path}: a task's block is not one whole shard in plan order")
        batch = rows.to_pydict()
        batch.update(self.plan(batch))
        writer = ShardWriter(Path(self.output_dir), name, self.features, self.rows_per_group)
        try:
            for row in range(rows.num_rows):
                writer.add(self.samples({column: [values[row]] for column, values in batch.items()}))
            plans = pa.table({column: pa.array(batch[column], field.type)
                              for column, field in zip(self.report_schema.names, self.report_schema)})
            shard = writer.close(plans, self.corpus)
        except BaseException:
            writer.abort()
            raise
        return ShardRow(name.split, name.index, name.count, ipc_bytes(plans), shard.num_rows, shard.num_bytes,
                        shard.file_bytes)


@dataclass(frozen=True)
class ShardRow:
    """What a `WriteShards` task returns of a shard it wrote."""

    split: str
    shard: int
    shards: int
    plans: bytes  # Arrow IPC of the report's columns of its conversations
    num_rows: int
    num_bytes: int
    file_bytes: int

    def finished(self, corpus: str) -> FinishedShard:
        return FinishedShard(ShardName(self.split, self.shard, self.shards), read_ipc(self.plans), corpus,
                             self.num_rows, self.num_bytes, self.file_bytes)


FINISHED_COLUMNS = tuple(ShardRow.__dataclass_fields__)
