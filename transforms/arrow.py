"""Arrow tables of samples built straight from numpy arrays: no value passes through a Python list."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa


def offsets_array(lengths) -> pa.Array:
    """Arrow list offsets (int32) for consecutive items of these lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
    return pa.array(offsets)


def list_array(arrays: list[np.ndarray], dtype) -> pa.ListArray:
    """One Arrow list per numpy array, values copied once into a single buffer."""
    values = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype=dtype)
    return pa.ListArray.from_arrays(offsets_array([len(array) for array in arrays]), pa.array(values))


def joined_segments_array(rows: list[list[np.ndarray]], dtype) -> pa.ListArray:
    """One Arrow list per row holding its segments one after the other."""
    lengths = [sum(len(segment) for segment in row) for row in rows]
    segments = [segment for row in rows for segment in row]
    values = np.concatenate(segments).astype(dtype, copy=False) if segments else np.zeros(0, dtype=dtype)
    return pa.ListArray.from_arrays(offsets_array(lengths), pa.array(values))


def one_channel_array(rows: list[list[np.ndarray]], dtype) -> pa.ListArray:
    """list<list<...>>: each row `(1, samples)`, its segments joined into one channel (the processor's
    `input_values` without its batch dimension), written once, straight into the Arrow buffer."""
    return pa.ListArray.from_arrays(offsets_array([1] * len(rows)), joined_segments_array(rows, dtype))


def segments_array(rows: list[list[np.ndarray]], dtype) -> pa.ListArray:
    """list<list<list<...>>>: rows -> segments -> frames -> codebooks, from (frames, codebooks) arrays."""
    segments = [segment for row in rows for segment in row]
    width = segments[0].shape[1] if segments else 0
    if any(segment.shape[1] != width for segment in segments):
        raise ValueError(f"the segments of one table must all have {width} columns (codebooks)")
    values = np.concatenate([segment.reshape(-1) for segment in segments]) if segments else np.zeros(0, dtype)
    frames = pa.ListArray.from_arrays(
        offsets_array([width] * sum(len(segment) for segment in segments)), pa.array(values.astype(dtype))
    )
    by_segment = pa.ListArray.from_arrays(offsets_array([len(segment) for segment in segments]), frames)
    return pa.ListArray.from_arrays(offsets_array([len(row) for row in rows]), by_segment)


def samples_table(columns: dict[str, list], features: datasets.Features) -> pa.Table:
    """The table of `features` from per-row values, by the list depth of each feature:

    - no list: scalars;
    - one level: a 1-D array per row;
    - two levels: a list of 1-D segments per row, joined into one channel `(1, samples)` (`input_values`);
    - three levels: a list of 2-D `(frames, codebooks)` segments per row (`audio_codes`).
    """
    schema = features.arrow_schema
    arrays = []
    for field in schema:
        values = columns[field.name]
        depth, leaf = 0, field.type
        while pa.types.is_list(leaf):
            depth, leaf = depth + 1, leaf.value_type
        if depth == 0:
            arrays.append(pa.array(values, type=field.type))
            continue
        build = {1: list_array, 2: one_channel_array, 3: segments_array}[depth]
        arrays.append(build(values, leaf.to_pandas_dtype()))
    return pa.Table.from_arrays(arrays, schema=schema)


def ipc_bytes(table: pa.Table) -> bytes:
    """A table as one Arrow IPC stream (types and all), e.g. to carry it through another engine or a file footer."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
