"""Batch prepared (processor-format) samples for `CsmForConditionalGeneration` and the transformers `Trainer`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..core.labels import IGNORE_INDEX

MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "input_values", "input_values_cutoffs")
NO_CUTOFF = -1  # the processor pads input_values_cutoffs with -1


def one_channel(values) -> np.ndarray:
    """A row's `input_values` as 1-D samples: stored `(1, samples)` (the processor's shape without the batch
    dimension); a bare `(samples,)` is taken as well."""
    audio = np.asarray(values, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] == 1:
        return audio[0]
    if audio.ndim != 1:
        raise ValueError(f"input_values of shape {audio.shape}: expected (1, samples), one mono channel")
    return audio


def pad_sequences(sequences: Sequence, value, dtype, left: bool) -> torch.Tensor:
    """Stack 1-D sequences of different lengths into (batch, longest) of numpy `dtype`, padded with `value`.

    Filled in numpy (rows may be read-only Arrow memory, which torch will not wrap), one copy per row.
    """
    arrays = [np.asarray(sequence) for sequence in sequences]
    longest = max((len(array) for array in arrays), default=0)
    batch = np.full((len(arrays), longest), value, dtype=dtype)
    for row, array in enumerate(arrays):
        if len(array):
            if left:
                batch[row, longest - len(array) :] = array
            else:
                batch[row, : len(array)] = array
    return torch.from_numpy(batch)


@dataclass(frozen=True)
class CsmDataCollator:
    """Dynamic padding of the five model inputs, as the processor pads a batch.

    Tokens are padded on the left (the processor's side) with `pad_token_id`, attention mask with 0,
    labels with -100; audio `input_values` on the right with 0.0, to `(batch, 1, longest)`; cutoffs with
    -1. Other columns (conversation_id, num_tokens, ...) are dropped, so the `Trainer` may keep them
    (`remove_unused_columns=False`), e.g. for `length_column_name="num_tokens"`. Rows may be numpy
    (fastest: `load_from_disk` gives them so), torch tensors or lists.
    """

    pad_token_id: int
    padding_side: str = "left"

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        left = self.padding_side == "left"
        audio = pad_sequences([one_channel(row["input_values"]) for row in rows], 0.0, np.float32, left=False)
        return {
            "input_ids": pad_sequences([row["input_ids"] for row in rows], self.pad_token_id, np.int64, left),
            "attention_mask": pad_sequences([row["attention_mask"] for row in rows], 0, np.int64, left),
            "labels": pad_sequences([row["labels"] for row in rows], IGNORE_INDEX, np.int64, left),
            "input_values": audio.unsqueeze(1),
            "input_values_cutoffs": pad_sequences(
                [row["input_values_cutoffs"] for row in rows], NO_CUTOFF, np.int64, left=False
            ),
        }

    @classmethod
    def for_processor(cls, processor) -> "CsmDataCollator":
        return cls(pad_token_id=processor.tokenizer.pad_token_id)
