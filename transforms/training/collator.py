"""Batch prepared (processor-format) samples for `CsmForConditionalGeneration` and the transformers `Trainer`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..core.labels import IGNORE_INDEX

MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "input_values", "input_values_cutoffs")
NO_CUTOFF = -1  # the processor pads input_values_cutoffs with -1


def pad_sequences(sequences: Sequence, value, dtype: torch.dtype, left: bool) -> torch.Tensor:
    """Stack 1-D sequences of different lengths into (batch, longest), padded with `value`."""
    arrays = [np.asarray(sequence) for sequence in sequences]
    longest = max((len(array) for array in arrays), default=0)
    batch = torch.full((len(arrays), longest), value, dtype=dtype)
    for row, array in enumerate(arrays):
        if len(array):
            values = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
            if left:
                batch[row, longest - len(array) :] = values
            else:
                batch[row, : len(array)] = values
    return batch


@dataclass(frozen=True)
class CsmDataCollator:
    """Dynamic padding of the five model inputs, as the processor pads a batch.

    Tokens are padded on the left (the processor's side) with `pad_token_id`, attention mask with 0,
    labels with -100; audio `input_values` on the right with 0.0, to `(batch, 1, longest)`; cutoffs with
    -1. Other columns (conversation_id, num_tokens, ...) are dropped. Use it as the `Trainer`'s
    `data_collator` with `remove_unused_columns=False` or the metadata columns already removed.
    """

    pad_token_id: int
    padding_side: str = "left"

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        left = self.padding_side == "left"
        audio = pad_sequences([row["input_values"] for row in rows], 0.0, torch.float32, left=False)
        return {
            "input_ids": pad_sequences([row["input_ids"] for row in rows], self.pad_token_id, torch.long, left),
            "attention_mask": pad_sequences([row["attention_mask"] for row in rows], 0, torch.long, left),
            "labels": pad_sequences([row["labels"] for row in rows], IGNORE_INDEX, torch.long, left),
            "input_values": audio.unsqueeze(1),
            "input_values_cutoffs": pad_sequences(
                [row["input_values_cutoffs"] for row in rows], NO_CUTOFF, torch.long, left=False
            ),
        }

    @classmethod
    def for_processor(cls, processor) -> "CsmDataCollator":
        return cls(pad_token_id=processor.tokenizer.pad_token_id)
