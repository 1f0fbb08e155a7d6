"""Deterministic Parquet shards of prepared samples, in the layout of `push_to_hub.py --to_dir`.

    writer = ShardWriter(output_dir, ShardName("train", 0, 3), features, rows_per_group=16)
    writer.add(samples)                   # tables of samples, in the plan's order
    writer.close(plan, corpus)            # the shard's plans and corpus decisions go into the footer; renamed

- Names: `data/default/<split>-NNNNN-of-MMMMM.parquet`, from the driver's shard plan, never from scheduling.
- Each shard is written to a hidden `.<name>.partial` and renamed when complete: a file under its final name
  is always whole, so a resume does exactly the shards without one.
- Bytes depend only on the rows: the features' explicit Arrow schema (with its `huggingface` metadata, so
  `load_dataset` gives the same features), row groups of a fixed number of rows, no timestamps.
- Encoding (`writer_options`): audio (float list columns) plain: no dictionary, no compression, no statistics,
  and the other columns pyarrow's defaults (dictionary, snappy) with statistics of the scalar columns only.
  Encoding audio is most of a shard's work; with the defaults it took 2.1x as long (about 7 against 3.5 s per
  GB on one core), for files half as large (audio decoded from 16-bit files has at most 65,536 distinct values,
  which a dictionary stores in 2 bytes each). Plain, a shard is about the size of the same rows in Arrow, as
  the local engine's output; snappy shrinks float audio by a tenth only, and min/max of a list serve no reader.
- The footer also carries the shard's plans (`PLAN_KEY`: the report's columns of its conversations), the
  corpus decisions they were planned with (`CORPUS_KEY`, JSON) and the Arrow size of its rows, so a resumed
  run reports the finished shards, and plans the missing ones, without measuring the finished ones again.
"""

from __future__ import annotations

import base64
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from ..arrow import ipc_bytes, read_ipc
from ..export.card import shard_path, split_pattern
from ..export.content import PREPARED_CONFIG

PLAN_KEY = "csm_synthetic.plans"  # base64 of an Arrow IPC stream: the shard's conversations' plans
NUM_BYTES_KEY = "csm_synthetic.num_bytes"  # the Arrow size of the shard's rows (the card's num_bytes)
CORPUS_KEY = "csm_synthetic.corpus_decisions"  # JSON: the quality checks' corpus decisions of the plans


@dataclass(frozen=True)
class ShardName:
    split: str
    index: int
    count: int  # shards of the split

    @property
    def path(self) -> str:
        """Relative to the output folder."""
        return shard_path(PREPARED_CONFIG, self.split, self.index, self.count)

    @property
    def pattern(self) -> str:
        """The card's `data_files` glob of the split's shards."""
        return split_pattern(PREPARED_CONFIG, self.split)


@dataclass(frozen=True)
class FinishedShard:
    name: ShardName
    plans: pa.Table  # the report's columns, a row per conversation
    corpus: str  # the corpus decisions the plans were made with (JSON)
    num_rows: int
    num_bytes: int  # Arrow size of the rows
    file_bytes: int


class ShardWriter:
    def __init__(self, output_dir: Path, name: ShardName, features: datasets.Features, rows_per_group: int):
        self.name, self.rows_per_group = name, rows_per_group
        self.path = output_dir / name.path
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = features.arrow_schema
        self.writer = pq.ParquetWriter(self.partial, self.schema, **writer_options(self.schema))
        self.encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
        self.encoding: Future | None = None
        self.pending: list[pa.Table] = []
        self.num_rows = self.num_bytes = 0

    def add(self, samples: pa.Table) -> None:
        """Rows in their final order; written a row group of `rows_per_group` rows at a time, encoded in a thread
        while the caller builds the next rows (pyarrow encodes without the GIL): a shard that is the only task
        running took 0.75x the time on 2 cores."""
        samples = samples.cast(self.schema)
        self.pending.append(samples)
        self.num_rows += samples.num_rows
        self.num_bytes += samples.nbytes
        if sum(table.num_rows for table in self.pending) >= self.rows_per_group:
            self.flush(final=False)

    def flush(self, final: bool) -> None:
        rows = pa.concat_tables(self.pending) if self.pending else self.schema.empty_table()
        whole = rows.num_rows if final else rows.num_rows - rows.num_rows % self.rows_per_group
        if whole:
            self.wait()  # one row group in flight: memory stays a row group or two
            self.encoding = self.encoder.submit(
                self.writer.write_table, rows.slice(0, whole), row_group_size=self.rows_per_group
            )
        self.pending = [rows.slice(whole)] if whole < rows.num_rows else []

    def wait(self) -> None:
        if self.encoding is not None:
            self.encoding.result()
            self.encoding = None

    def close(self, plans: pa.Table, corpus: str) -> FinishedShard:
        self.flush(final=True)
        self.wait()
        self.encoder.shutdown()
        self.writer.add_key_value_metadata(
            {PLAN_KEY: encode_table(plans), CORPUS_KEY: corpus, NUM_BYTES_KEY: str(self.num_bytes)}
        )
        self.writer.close()
        os.replace(self.partial, self.path)
        return FinishedShard(self.name, plans, corpus, self.num_rows, self.num_bytes, self.path.stat().st_size)

    def abort(self) -> None:
        self.encoder.shutdown(cancel_futures=True)
        self.writer.close()
        self.partial.unlink(missing_ok=True)


def writer_options(schema: pa.Schema) -> dict:
    """Audio columns plain, the others pyarrow's defaults; statistics for scalar columns only (see the top)."""
    audio = [field.name for field in schema if is_float_list(field.type)]
    return {
        "use_dictionary": [name for name in schema.names if name not in audio],
        "compression": {name: "none" if name in audio else "snappy" for name in schema.names},
        "write_statistics": [field.name for field in schema if not pa.types.is_nested(field.type)],
    }


def is_float_list(data_type: pa.DataType) -> bool:
    """A list (of lists...) of floats: audio samples."""
    depth = 0
    while pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        data_type, depth = data_type.value_type, depth + 1
    return depth > 0 and pa.types.is_floating(data_type)


def read_finished_shard(output_dir: Path, name: ShardName) -> FinishedShard | None:
    """A shard an earlier run finished (its file is under its final name), or None."""
    path = output_dir / name.path
    if not path.is_file():
        return None
    metadata = pq.read_metadata(path)
    values = metadata.metadata or {}
    missing = [key for key in (PLAN_KEY, CORPUS_KEY, NUM_BYTES_KEY) if key.encode() not in values]
    if missing:
        raise ValueError(f"{path} was not written by this version of --engine ray (no {missing[0]} in its footer)")
    plans = decode_table(values[PLAN_KEY.encode()])
    corpus = values[CORPUS_KEY.encode()].decode()
    return FinishedShard(
        name, plans, corpus, metadata.num_rows, int(values[NUM_BYTES_KEY.encode()]), path.stat().st_size
    )


def encode_table(table: pa.Table) -> str:
    """Base64 of the table's Arrow IPC stream, rebuilt from its values first: the IPC bytes of slices of nested
    columns depend on which rows the slices came from (Ray's blocks), the values do not."""
    return base64.b64encode(ipc_bytes(pa.Table.from_pylist(table.to_pylist(), schema=table.schema))).decode("ascii")


def decode_table(text: bytes) -> pa.Table:
    return read_ipc(base64.b64decode(text))
