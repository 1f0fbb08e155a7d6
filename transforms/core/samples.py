"""Processor-format samples of one conversation: each planned window as `CsmProcessor` encodes it.

The processor encodes each turn once, as a one-message conversation; a sample is its turns' encodings
one after the other. That is what the processor makes of the whole window: the chat template renders
messages independently, each starts with a special token (tokens do not merge across messages), and its
feature extractor passes mono 24 kHz audio through unchanged. The tests compare samples with the
processor's encoding of the whole window.

A sample is what the processor returns for its window with only the batch dimension removed: `input_ids`,
`attention_mask`, `labels` `(tokens,)` int64, `input_values` `(1, samples)` float32 (given here as its
segments, joined into one channel by the table builder), `input_values_cutoffs` `(segments,)` int64. So a
row with a batch dimension added (a `Trainer` without collator at batch size 1) is the processor's output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .labels import BACKBONE_ONLY_LABEL, backbone_only_frames, label_seed
from .plan import ConversationText, check_token_count, window_metadata
from .windows import Window

TOKEN_COLUMNS = ("input_ids", "attention_mask", "labels")


def processor_samples(
    processor,
    conversation: ConversationText,
    rendered: Sequence[str],
    audios: Sequence[np.ndarray | None],
    windows: Sequence[Window],
    sampling_rate: int,
    depth_decoder_labels_ratio: float = 1.0,
    seed: int = 0,
) -> Iterator[dict]:
    """One sample (a dict of numpy arrays and scalars) per window; `audios` only needs the windows' turns."""
    encoded: dict[int, dict[str, np.ndarray]] = {}
    for window in windows:
        for turn in range(window.start, window.target + 1):
            if turn not in encoded:
                encoded[turn] = encode_turn(processor, rendered[turn], audios[turn])
        turns = [encoded[turn] for turn in range(window.start, window.target + 1)]
        sample = {name: np.concatenate([turn[name] for turn in turns]) for name in TOKEN_COLUMNS}
        check_token_count(conversation, window, len(sample["input_ids"]))
        if depth_decoder_labels_ratio < 1.0:
            seed_of_sample = label_seed(seed, conversation.conversation_id, window.target)
            mark_backbone_only_frames(sample, processor.audio_token_id, depth_decoder_labels_ratio, seed_of_sample)
        segments = [turn["input_values"] for turn in turns]
        yield {
            **window_metadata(conversation, window, sum(len(segment) for segment in segments), sampling_rate),
            **sample,
            "input_values": segments,  # joined once into one channel, straight into the Arrow buffer
            "input_values_cutoffs": np.cumsum([len(segment) for segment in segments], dtype=np.int64),
        }


def encode_turn(processor, rendered: str, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The processor's output (labels on every audio frame) for one rendered turn, as 1-D arrays."""
    encoded = processor(text=rendered, audio=[audio], output_labels=True)
    return {name: encoded[name].reshape(-1).numpy() for name in (*TOKEN_COLUMNS, "input_values")}


def mark_backbone_only_frames(sample: dict, audio_token_id: int, ratio: float, seed: int) -> None:
    """The -101 draw over the whole sample's audio frames, with a generator seeded for this sample."""
    import torch

    frames = np.flatnonzero(sample["input_ids"] == audio_token_id)
    drawn = backbone_only_frames(len(frames), ratio, torch.Generator().manual_seed(seed))
    sample["labels"][frames[drawn.numpy()]] = BACKBONE_ONLY_LABEL
