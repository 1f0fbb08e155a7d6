"""The contextual sample transform: each turn becomes a CSM training sample with its previous turns.

    conversations = group_conversations(turns)  # one row per conversation (audio not decoded)
    samples = conversations.map(
        ContextualSamples(model_id="unsloth/csm-1b", max_history=5),
        batched=True, batch_size=1, remove_columns=conversations.column_names,
        features=sample_features(), writer_batch_size=16,
    )

The transform is a frozen dataclass of plain values, so `datasets` can hash it and cache the map. It
returns Arrow tables built straight from numpy arrays: no audio passes through Python lists.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import torch

from csm_synthetic.audio import DEFAULT_SAMPLING_RATE, load_audio

from .core.csm import DEFAULT_MODEL_ID, load_processor, message_token_counts, render_messages
from .core.windows import DEFAULT_MAX_TOKENS, Window, plan_windows

TOKEN_COLUMNS = ("input_ids", "attention_mask", "labels")


def conversation_features(turn_features: datasets.Features) -> datasets.Features:
    """Features of `group_conversations`' rows: per-conversation values, per-turn lists."""
    per_conversation = ("conversation_id", "language")
    return datasets.Features(
        {
            name: feature if name in per_conversation else datasets.List(feature)
            for name, feature in turn_features.items()
        }
    )


def sample_features() -> datasets.Features:
    return datasets.Features(
        {
            "conversation_id": datasets.Value("string"),
            "language": datasets.Value("string"),
            "turn_index": datasets.Value("int32"),
            "speaker": datasets.Value("int32"),
            "num_context_turns": datasets.Value("int32"),
            "num_tokens": datasets.Value("int32"),
            "audio_seconds": datasets.Value("float32"),  # all audio of the sample, context included
            "input_ids": datasets.List(datasets.Value("int32")),
            "attention_mask": datasets.List(datasets.Value("int8")),
            "labels": datasets.List(datasets.Value("int32")),
            "input_values": datasets.List(datasets.Value("float32")),
            "input_values_cutoffs": datasets.List(datasets.Value("int32")),
        }
    )


# --- grouping turns into conversations ------------------------------------------------------------


def _group_turn_table(table: pa.Table) -> pa.Table:
    """Rows ordered by conversation then turn -> one row per conversation with per-turn lists."""
    ids = np.asarray(table.column("conversation_id").to_pylist(), dtype=object)
    turn_index = table.column("turn_index").to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=np.int64)
    if len(set(ids[starts])) != len(starts):
        raise ValueError("turns must be ordered by conversation: some conversation's turns are not contiguous")
    steps = np.diff(turn_index)
    within = np.ones(len(steps), dtype=bool)
    within[starts[1:] - 1] = False
    gaps = np.flatnonzero(within & (steps != 1))
    if len(gaps):
        row = gaps[0] + 1
        raise ValueError(
            f"conversation {ids[row]}: turn {turn_index[row]} follows turn {turn_index[row - 1]}; "
            "context windows need every turn, in order"
        )
    offsets = pa.array(np.r_[starts, len(ids)].astype(np.int32))
    columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name in ("conversation_id", "language"):
            columns[name] = column.take(pa.array(starts))
        else:
            columns[name] = pa.ListArray.from_arrays(offsets, column)
    return pa.table(columns)


def group_conversations(turns: datasets.Dataset) -> datasets.Dataset:
    """The builder's turn rows as one row per conversation, audio left encoded (paths or bytes)."""
    turns = turns.cast_column("audio", datasets.Audio(decode=False))
    return turns.with_format("arrow").map(
        _group_turn_table,
        batched=True,
        batch_size=None,  # needs whole conversations; the rows carry no audio samples, only references
        features=conversation_features(turns.features),
        desc="Grouping turns into conversations",
    ).with_format(None)


# --- the transform -------------------------------------------------------------------------------


def _audio_source(audio: dict) -> str | bytes:
    return audio["bytes"] if audio.get("bytes") else audio["path"]


def _label_seed(seed: int, conversation_id: str, turn_index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{conversation_id}/{turn_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def offsets_array(lengths) -> pa.Array:
    """Arrow list offsets (int32) for consecutive items of these lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
    return pa.array(offsets)


def list_array(arrays: list[np.ndarray], dtype) -> pa.ListArray:
    """One Arrow list per numpy array, values copied once into a single buffer (never via Python lists)."""
    values = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype=dtype)
    return pa.ListArray.from_arrays(offsets_array([len(array) for array in arrays]), pa.array(values))


def check_token_count(conversation_id: str, window: Window, made: int) -> None:
    """The processor must make exactly the tokens the budget rule counted (else windows are wrong)."""
    if made != window.num_tokens:
        raise RuntimeError(
            f"{conversation_id} turn {window.target}: the processor made {made} tokens where the token budget "
            f"rule counted {window.num_tokens}"
        )


def window_metadata(conversation: dict, window: Window, audio_samples: int, sampling_rate: int) -> dict:
    """The columns every sample format shares, for the sample of `window`."""
    return {
        "conversation_id": conversation["conversation_id"],
        "language": conversation["language"],
        "turn_index": conversation["turn_index"][window.target],
        "speaker": conversation["speaker"][window.target],
        "num_context_turns": window.num_context_turns,
        "num_tokens": window.num_tokens,
        "audio_seconds": audio_samples / sampling_rate,  # all audio of the sample, context included
    }


def collect_samples(batch: dict[str, list], conversation_samples, columns) -> dict[str, list]:
    """Column lists of every sample that `conversation_samples` yields for the conversations of `batch`."""
    rows: dict[str, list] = {name: [] for name in columns}
    for position in range(len(batch["conversation_id"])):
        conversation = {name: values[position] for name, values in batch.items()}
        for sample in conversation_samples(conversation):
            for name, value in sample.items():
                rows[name].append(value)
    return rows


@dataclass(frozen=True)
class ContextualSamples:
    """`.map` transform over `group_conversations` rows (batched): one CSM training sample per turn."""

    model_id: str = DEFAULT_MODEL_ID
    max_history: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    depth_decoder_labels_ratio: float = 1.0
    sampling_rate: int = DEFAULT_SAMPLING_RATE
    seed: int = 0  # fixes the -101 draws of depth_decoder_labels_ratio < 1, so reruns give the same rows

    def __call__(self, batch: dict[str, list]) -> pa.Table:
        return self.to_table(collect_samples(batch, self.conversation_samples, sample_features()))

    def conversation_samples(self, conversation: dict):
        """Yield one sample (a dict of numpy arrays and scalars) per turn that fits the token budget.

        The processor encodes each turn once, as a one-message conversation; a sample is its turns'
        encodings one after the other. That is what the processor makes of the whole window: the chat
        template renders messages independently, each starts with a special token (tokens do not merge
        across messages), and its feature extractor passes mono 24 kHz audio through unchanged. The tests
        compare samples with the processor's encoding of the whole window.
        """
        processor = load_processor(self.model_id)
        conversation_id = conversation["conversation_id"]
        audios = [self.read_audio(conversation_id, index, audio) for index, audio in enumerate(conversation["audio"])]
        speakers = conversation["speaker"]
        rendered = render_messages(processor, speakers, conversation["text"])
        token_counts = message_token_counts(processor, rendered, [len(audio) for audio in audios])
        encoded_turns = [self.encode_turn(processor, text, audio) for text, audio in zip(rendered, audios)]
        for window in plan_windows(token_counts, self.max_history, self.max_tokens):
            if not isinstance(window, Window):
                continue
            turns = encoded_turns[window.start : window.target + 1]
            sample = {name: np.concatenate([turn[name] for turn in turns]) for name in TOKEN_COLUMNS}
            check_token_count(conversation_id, window, len(sample["input_ids"]))
            self.draw_backbone_only_frames(sample, processor.audio_token_id, conversation_id, window.target)
            segments = [turn["input_values"] for turn in turns]
            yield {
                **window_metadata(conversation, window, sum(len(segment) for segment in segments), self.sampling_rate),
                **sample,
                "input_values": segments,  # joined once, straight into the Arrow buffer, by to_table
                "input_values_cutoffs": np.cumsum([len(segment) for segment in segments]),
            }

    def read_audio(self, conversation_id: str, turn: int, audio: dict) -> np.ndarray:
        try:
            return load_audio(_audio_source(audio), self.sampling_rate)
        except Exception as error:  # soundfile raises several types for one cause: unreadable audio
            raise ValueError(f"{conversation_id} turn {turn}: cannot read audio {audio.get('path')!r}: {error}") from error

    @staticmethod
    def encode_turn(processor, text: str, audio: np.ndarray) -> dict[str, np.ndarray]:
        """The processor's output (labels on every audio frame) for one rendered turn, as 1-D arrays."""
        encoded = processor(text=text, audio=[audio], output_labels=True)
        return {name: encoded[name].reshape(-1).numpy() for name in (*TOKEN_COLUMNS, "input_values")}

    def draw_backbone_only_frames(self, sample: dict, audio_token_id: int, conversation_id: str, target: int) -> None:
        """`CsmProcessor`'s -101 rule over the whole sample: `int(n * (1 - ratio))` of its `n` audio frames,
        drawn with a generator seeded by (seed, conversation, turn) so that reruns give the same rows."""
        frames = np.flatnonzero(sample["input_ids"] == audio_token_id)
        count = int(len(frames) * (1 - self.depth_decoder_labels_ratio))
        if count:
            generator = torch.Generator().manual_seed(_label_seed(self.seed, conversation_id, target))
            sample["labels"][frames[torch.randperm(len(frames), generator=generator)[:count].numpy()]] = -101

    @staticmethod
    def to_table(rows: dict[str, list]) -> pa.Table:
        schema = sample_features().arrow_schema
        arrays = []
        for field in schema:
            values = rows[field.name]
            if field.name == "input_values":  # each row a list of segments: join them all in one copy
                lengths = [sum(len(segment) for segment in row) for row in values]
                joined = [segment for row in values for segment in row]
                flat = np.concatenate(joined) if joined else np.zeros(0, dtype=np.float32)
                arrays.append(pa.ListArray.from_arrays(offsets_array(lengths), pa.array(flat)))
            elif pa.types.is_list(field.type):
                arrays.append(list_array(values, field.type.value_type.to_pandas_dtype()))
            else:
                arrays.append(pa.array(values, type=field.type))
        return pa.Table.from_arrays(arrays, schema=schema)
