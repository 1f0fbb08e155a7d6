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
    """One Arrow list per row holding its segments one after the other (the processor's `input_values`)."""
    lengths = [sum(len(segment) for segment in row) for row in rows]
    segments = [segment for row in rows for segment in row]
    values = np.concatenate(segments).astype(dtype, copy=False) if segments else np.zeros(0, dtype=dtype)
    return pa.ListArray.from_arrays(offsets_array(lengths), pa.array(values))


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
    """The table of `features` from per-row values: scalars, 1-D arrays, or lists of arrays (segments).

    A list column whose rows are lists of 1-D arrays is joined (`input_values`); one of three list levels
    holds one 2-D array per segment (`audio_codes`).
    """
    schema = features.arrow_schema
    arrays = []
    for field in schema:
        values = columns[field.name]
        if not pa.types.is_list(field.type):
            arrays.append(pa.array(values, type=field.type))
            continue
        depth, leaf = 1, field.type.value_type
        while pa.types.is_list(leaf):
            depth, leaf = depth + 1, leaf.value_type
        dtype = leaf.to_pandas_dtype()
        if depth == 3:
            arrays.append(segments_array(values, dtype))
        elif values and isinstance(values[0], list):
            arrays.append(joined_segments_array(values, dtype))
        else:
            arrays.append(list_array(values, dtype))
    return pa.Table.from_arrays(arrays, schema=schema)
