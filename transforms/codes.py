"""Mimi codes: encode each turn's audio once, and build codec-free CSM training samples from the codes.

    encoded = encode_turns(turns, codec_model_id="kyutai/mimi")  # + num_samples, audio_codes per turn
    conversations = group_conversations(encoded)  # one row per conversation, as for the processor format
    samples = conversations.map(
        CodesSamples(model_id="unsloth/csm-1b", max_history=5),
        batched=True, batch_size=1, remove_columns=conversations.column_names,
        features=codes_sample_features(),
    )

A codes-format sample has the processor format's metadata, `input_ids` and `attention_mask`, and instead
of audio and labels the Mimi codes of each of its audio segments (context turns first, the target turn
last), `(frames, num_codebooks)` int16 each. `transforms.training.codes_training` turns such rows into model inputs.

The codes of a turn are what `CsmForConditionalGeneration.forward` computes for that audio: it calls
`codec_model.encode(audio[None, None])` on each segment alone (`encode_one`). `encode_batch` runs the
encoder on many turns at once and still gives those codes (see `_pad_as_if_alone`), up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.fingerprint import Hasher
from transformers import CsmProcessor, MimiModel
from transformers.models.mimi.modeling_mimi import MimiConv1d

from csm_synthetic.audio import DEFAULT_SAMPLING_RATE, load_audio

from .core.csm import DEFAULT_CODEC_MODEL_ID, DEFAULT_MODEL_ID, audio_token_count, load_processor, message_token_counts, render_messages
from .samples import (
    check_token_count,
    collect_samples,
    list_array,
    offsets_array,
    sample_features,
    window_metadata,
)
from .core.windows import DEFAULT_MAX_TOKENS, Window, plan_windows

DEFAULT_ENCODE_BATCH_SIZE = 16  # turns per codec call
DEFAULT_TURNS_PER_SHARD = 2000  # turns per cached `.map` (a few hours of audio): a killed run resumes from these
SORT_WINDOW = 8  # codec batches per map batch; turns are sorted by length inside it so that batches pad little
CODES_FORMAT_VERSION = "1"  # part of the encoding cache key: bump when the codes of a turn change meaning
PROCESSOR_ONLY_COLUMNS = ("input_values", "input_values_cutoffs", "labels")


# --- the codec -----------------------------------------------------------------------------------


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is present, else 'cpu'; anything else is returned as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@lru_cache(maxsize=4)
def load_codec(model_id: str = DEFAULT_CODEC_MODEL_ID, device: str = "cpu") -> MimiModel:
    """The Mimi codec of a Hub id or local folder, in eval mode on `device`, loaded once per process."""
    try:
        codec = MimiModel.from_pretrained(model_id)
    except Exception as error:  # transformers raises OSError, ValueError, HF errors... for the same cause
        raise RuntimeError(f"cannot load a Mimi codec from {model_id!r}: {error}") from error
    if codec.config.codebook_size > np.iinfo(np.int16).max + 1:
        raise RuntimeError(f"{model_id!r} has {codec.config.codebook_size} codes per codebook: too many for int16")
    return codec.to(device).eval()


def check_codec(codec: MimiModel, processor: CsmProcessor, sampling_rate: int) -> None:
    """Refuse a codec whose rate or frame count per audio length differs from what the processor assumes."""
    if codec.config.sampling_rate != sampling_rate:
        raise ValueError(f"the codec encodes {codec.config.sampling_rate} Hz audio, the samples are {sampling_rate} Hz")
    lengths = [1, 1919, 1920, 1921, sampling_rate, 7 * sampling_rate + 5]
    codec_frames = encoded_frames(codec, lengths).tolist()
    processor_frames = [audio_token_count(processor, length) for length in lengths]
    if codec_frames != processor_frames:
        raise ValueError(
            f"codec and processor disagree on frames per audio: for {lengths} samples the codec makes "
            f"{codec_frames} frames, the processor counts {processor_frames} <|AUDIO|> tokens"
        )


def encoded_frames(codec: MimiModel, num_samples: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Frames the codec makes of audio of `num_samples` samples (each encoded alone)."""
    return codec.get_encoded_length(torch.as_tensor(num_samples, dtype=torch.int64))


@torch.no_grad()
def encode_one(codec: MimiModel, audio: np.ndarray) -> np.ndarray:
    """Codes `(frames, num_codebooks)` int16 of one audio, encoded as CSM's forward does: alone, unpadded."""
    samples = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(codec.device)
    codes = codec.encode(samples[None, None]).audio_codes[0]  # (num_codebooks, frames)
    return codes.T.to(torch.int16).cpu().numpy()


@torch.no_grad()
def encode_batch(codec: MimiModel, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Codes `(frames, num_codebooks)` int16 of each audio, the encoder run once for all, equal to `encode_one`'s.

    `MimiModel.encode` in two steps: the encoder runs on the batch padded on the right (`_pad_as_if_alone`
    keeps the padding from reaching any frame); the quantizer then runs on each item's own frames, so
    that its distance computation has the shapes - and float rounding - of the item encoded alone. (The
    batched encoder's latents can still differ from the lone ones by float rounding, about 1e-6: a frame
    whose nearest codes tie that closely could differ. None did in the checks, see the tests and benchmark.)
    """
    if len(audios) == 1:  # batch_size=1: exactly the forward's own call
        return [encode_one(codec, audios[0])]
    if not audios:
        return []
    lengths = torch.tensor([len(audio) for audio in audios], dtype=torch.int64)
    if int(lengths.min()) < 1:
        raise ValueError("cannot encode an empty audio")
    batch = torch.nn.utils.rnn.pad_sequence(
        [torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)) for audio in audios], batch_first=True
    ).to(codec.device)
    with _pad_as_if_alone(codec, lengths.to(codec.device)):
        latents = codec.encoder(batch[:, None, :]).latents  # (batch, dimension, frames)
    return [
        codec.quantizer.encode(latents[row : row + 1, :, :frames])[:, 0].T.to(torch.int16).cpu().numpy()
        for row, frames in enumerate(encoded_frames(codec, lengths).tolist())
    ]


def _strided_convs(codec: MimiModel) -> list[MimiConv1d]:
    """The encoder's down-sampling convolutions, in the order the audio goes through them."""
    return [
        module for module in codec.encoder.modules() if isinstance(module, MimiConv1d) and module.conv.stride[0] > 1
    ]


@contextmanager
def _pad_as_if_alone(codec: MimiModel, lengths: torch.Tensor) -> Iterator[None]:
    """While active, the encoder gives each item of a right-padded batch the latents it gets alone.

    Mimi's encoder is causal: a frame depends only on audio up to its end, so right padding cannot
    change the frames of complete audio. The last frame of an audio whose length is not a multiple of
    the frame size (1920 samples) is different: each down-sampling convolution pads its input on the
    right up to a whole stride - with zeros (or, for the last one, a copy of the last value) when the
    item is alone, but with the activations of the padding audio in a batch. Before each such
    convolution, this fills every item's positions past its own length with what it would be padded with.
    The convolutions of stride 1 and the (causal) transformer need nothing: no valid position reads a later one.
    """
    handles = []
    valid = lengths
    try:
        for conv in _strided_convs(codec):
            handles.append(conv.register_forward_pre_hook(partial(_fill_past_valid, valid=valid)))
            valid = conv._get_output_length(valid)
        if not torch.equal(valid.cpu(), encoded_frames(codec, lengths.cpu())):
            raise RuntimeError(
                "the Mimi encoder's structure changed: cannot batch its encoding exactly; use batch_size=1"
            )
        yield
    finally:
        for handle in handles:
            handle.remove()


def _fill_past_valid(conv: MimiConv1d, args: tuple, valid: torch.Tensor) -> tuple:
    """Forward pre-hook: set each item's input past `valid` to the convolution's own right padding."""
    hidden = args[0]  # (batch, channels, time)
    past = torch.arange(hidden.shape[-1], device=hidden.device)[None, None, :] >= valid.to(hidden.device)[:, None, None]
    if conv.pad_mode == "constant":
        hidden = hidden.masked_fill(past, 0.0)
    elif conv.pad_mode == "replicate":
        last_index = (valid.to(hidden.device) - 1).view(-1, 1, 1).expand(-1, hidden.shape[1], 1)
        hidden = torch.where(past, hidden.gather(-1, last_index), hidden)
    else:
        raise NotImplementedError(f"cannot batch a Mimi convolution padded in mode {conv.pad_mode!r}; use batch_size=1")
    return (hidden, *args[1:])


# --- encoding the turns of a split ---------------------------------------------------------------


def encoded_turn_features(turn_features: datasets.Features) -> datasets.Features:
    """The builder's turn features (audio as a reference) plus `num_samples` and `audio_codes`."""
    features = datasets.Features(dict(turn_features))
    features["audio"] = datasets.Audio(decode=False)
    features["num_samples"] = datasets.Value("int32")  # at the sampling rate the codes were made at
    features["audio_codes"] = datasets.List(datasets.List(datasets.Value("int16")))  # (frames, num_codebooks)
    return features


@dataclass(frozen=True)
class EncodeTurns:
    """`.map` transform over turn rows (batched, audio not decoded): adds `num_samples` and `audio_codes`."""

    codec_model_id: str = DEFAULT_CODEC_MODEL_ID
    device: str = "auto"
    batch_size: int = DEFAULT_ENCODE_BATCH_SIZE
    sampling_rate: int = DEFAULT_SAMPLING_RATE

    def __call__(self, batch: dict[str, list]) -> dict:
        codec = load_codec(self.codec_model_id, resolve_device(self.device))
        if codec.config.sampling_rate != self.sampling_rate:
            raise ValueError(
                f"{self.codec_model_id!r} encodes {codec.config.sampling_rate} Hz audio, not {self.sampling_rate} Hz"
            )
        audios = [
            self.read_audio(conversation_id, turn_index, audio)
            for conversation_id, turn_index, audio in zip(batch["conversation_id"], batch["turn_index"], batch["audio"])
        ]
        codes: list[np.ndarray | None] = [None] * len(audios)
        by_length = np.argsort([len(audio) for audio in audios], kind="stable")
        for start in range(0, len(by_length), self.batch_size):
            rows = by_length[start : start + self.batch_size]
            for row, row_codes in zip(rows, encode_batch(codec, [audios[row] for row in rows])):
                codes[row] = row_codes
        return {"num_samples": np.array([len(audio) for audio in audios], dtype=np.int32), "audio_codes": codes}

    def read_audio(self, conversation_id: str, turn_index: int, audio: dict) -> np.ndarray:
        try:
            samples = load_audio(audio["bytes"] if audio.get("bytes") else audio["path"], self.sampling_rate)
        except Exception as error:  # soundfile raises several types for one cause: unreadable audio
            raise ValueError(
                f"{conversation_id} turn {turn_index}: cannot read audio {audio.get('path')!r}: {error}"
            ) from error
        if not len(samples):
            raise ValueError(f"{conversation_id} turn {turn_index}: audio {audio.get('path')!r} is empty")
        return samples


def codec_identity(codec_model_id: str) -> list:
    """What identifies a codec's weights for caching: a Hub id, or a local folder's files, sizes and times."""
    folder = Path(codec_model_id)
    if not folder.is_dir():
        return [codec_model_id]
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return [str(folder.resolve())] + [
        (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns) for path in files
    ]


def encode_turns(
    turns: datasets.Dataset,
    codec_model_id: str = DEFAULT_CODEC_MODEL_ID,
    device: str = "auto",
    batch_size: int = DEFAULT_ENCODE_BATCH_SIZE,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    turns_per_shard: int = DEFAULT_TURNS_PER_SHARD,
    desc: str = "Encoding turns",
) -> datasets.Dataset:
    """The builder's turn rows with each turn's Mimi codes, every turn encoded once, in cached shards.

    Each shard of `turns_per_shard` turns is its own cached `.map`, keyed by the turns, the codec and the
    sampling rate only - not by `device` or `batch_size`, which do not change the codes - so a killed or
    repeated run reuses every finished shard.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    if turns_per_shard < 1:
        raise ValueError(f"turns_per_shard must be at least 1 (got {turns_per_shard})")
    turns = turns.cast_column("audio", datasets.Audio(decode=False))
    transform = EncodeTurns(codec_model_id, device, batch_size, sampling_rate)
    features = encoded_turn_features(turns.features)
    identity = [CODES_FORMAT_VERSION, codec_identity(codec_model_id), sampling_rate]
    starts = range(0, len(turns), turns_per_shard)
    shards = []
    for number, start in enumerate(starts, start=1):
        shard = turns.select(range(start, min(start + turns_per_shard, len(turns))))
        shards.append(
            shard.map(
                transform,
                batched=True,
                batch_size=batch_size * SORT_WINDOW,
                features=features,
                new_fingerprint=Hasher.hash([shard._fingerprint, *identity]),
                desc=f"{desc}: shard {number}/{len(starts)}",
            )
        )
    if not shards:  # no turns: nothing to encode, only the columns to add
        return turns.map(
            transform, batched=True, features=features, new_fingerprint=Hasher.hash([turns._fingerprint, *identity])
        )
    return datasets.concatenate_datasets(shards)


# --- codes-format samples ------------------------------------------------------------------------


def codes_sample_features() -> datasets.Features:
    """The processor format's columns without audio and labels, plus each audio segment's codes."""
    features = {name: feature for name, feature in sample_features().items() if name not in PROCESSOR_ONLY_COLUMNS}
    # one (frames, num_codebooks) array per audio segment of the sample, in order; the last is the target turn
    features["audio_codes"] = datasets.List(datasets.List(datasets.List(datasets.Value("int16"))))
    return datasets.Features(features)


@dataclass(frozen=True)
class CodesSamples:
    """`.map` transform over conversation rows of encoded turns (batched): one codes-format sample per turn.

    Same windows (`plan_windows`), metadata, `input_ids` and `attention_mask` as `ContextualSamples`
    makes with the same arguments; no audio is read.
    """

    model_id: str = DEFAULT_MODEL_ID
    max_history: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    sampling_rate: int = DEFAULT_SAMPLING_RATE

    def __call__(self, batch: dict[str, list]) -> pa.Table:
        return codes_table(collect_samples(batch, self.conversation_samples, codes_sample_features()))

    def conversation_samples(self, conversation: dict) -> Iterator[dict]:
        """Yield one sample (a dict of numpy arrays and scalars) per turn that fits the token budget."""
        processor = load_processor(self.model_id)
        conversation_id = conversation["conversation_id"]
        speakers, texts, num_samples = conversation["speaker"], conversation["text"], conversation["num_samples"]
        codes = [turn_codes(conversation_id, turn, values) for turn, values in enumerate(conversation["audio_codes"])]
        check_frames(processor, conversation_id, num_samples, codes)
        rendered = render_messages(processor, speakers, texts)
        token_counts = message_token_counts(processor, rendered, num_samples)
        messages = [message_tokens(processor, text, samples) for text, samples in zip(rendered, num_samples)]
        for window in plan_windows(token_counts, self.max_history, self.max_tokens):
            if not isinstance(window, Window):
                continue
            turns = range(window.start, window.target + 1)
            input_ids = np.concatenate([messages[turn][0] for turn in turns])
            check_token_count(conversation_id, window, len(input_ids))
            yield {
                **window_metadata(conversation, window, sum(num_samples[turn] for turn in turns), self.sampling_rate),
                "input_ids": input_ids,
                "attention_mask": np.concatenate([messages[turn][1] for turn in turns]),
                "audio_codes": [codes[turn] for turn in turns],
            }


def turn_codes(conversation_id: str, turn: int, values) -> np.ndarray:
    codes = np.asarray(values, dtype=np.int16)
    if codes.ndim != 2 or not codes.size:
        raise ValueError(f"{conversation_id} turn {turn}: audio_codes must be a non-empty (frames, codebooks) array")
    return codes


def check_frames(
    processor: CsmProcessor, conversation_id: str, num_samples: Sequence[int], codes: Sequence[np.ndarray]
) -> None:
    """Each turn's codes must have one frame per `<|AUDIO|>` token the processor makes of its audio."""
    for turn, (samples, frames) in enumerate(zip(num_samples, (len(turn) for turn in codes))):
        tokens = audio_token_count(processor, samples)
        if frames != tokens:
            raise ValueError(
                f"{conversation_id} turn {turn}: {frames} frames of codes for {samples} samples, but the "
                f"processor makes {tokens} <|AUDIO|> tokens of them: the codec does not match the processor"
            )


def message_tokens(processor: CsmProcessor, rendered: str, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """`input_ids` and `attention_mask` of one rendered message, made by the processor itself.

    Only the audio's length matters to the tokens, so the processor gets silence of that length.
    Messages start with a special token, so a sample's tokens are its messages' tokens one after the
    other (as `render_messages` relies on; the tests compare with the processor format's rows).
    """
    encoded = processor(text=rendered, audio=[np.zeros(num_samples, dtype=np.float32)])
    return encoded["input_ids"].reshape(-1).numpy(), encoded["attention_mask"].reshape(-1).numpy()


def codes_table(rows: dict[str, list]) -> pa.Table:
    """Arrow table of codes-format rows, built from numpy arrays (no per-value Python objects)."""
    schema = codes_sample_features().arrow_schema
    arrays = []
    for field in schema:
        values = rows[field.name]
        if field.name == "audio_codes":
            arrays.append(_segments_list_array(values))
        elif pa.types.is_list(field.type):
            arrays.append(list_array(values, field.type.value_type.to_pandas_dtype()))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _segments_list_array(samples: list[list[np.ndarray]]) -> pa.ListArray:
    """list<list<list<int16>>>: samples -> segments -> frames -> codebooks."""
    segments = [segment for sample in samples for segment in sample]
    num_codebooks = segments[0].shape[1] if segments else 0
    if any(segment.shape[1] != num_codebooks for segment in segments):
        raise ValueError(f"audio_codes of one table must all have {num_codebooks} codebooks")
    values = np.concatenate([segment.reshape(-1) for segment in segments]) if segments else np.zeros(0, np.int16)
    frames = pa.ListArray.from_arrays(
        offsets_array([num_codebooks] * sum(len(segment) for segment in segments)), pa.array(values.astype(np.int16))
    )
    by_segment = pa.ListArray.from_arrays(offsets_array([len(segment) for segment in segments]), frames)
    return pa.ListArray.from_arrays(offsets_array([len(sample) for sample in samples]), by_segment)
