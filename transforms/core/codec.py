"""The Mimi codec: load it, check it against the processor, plan codec calls, encode turns, measure agreement.

The codes of a turn are what `CsmForConditionalGeneration.forward` computes for that audio: it calls
`codec_model.encode(audio[None, None])` on each segment alone (`encode_one`). `encode_batch` encodes many
turns in ONE forward - the encoder on the batch padded on the right (`_pad_as_if_alone` keeps the padding
out of every item's frames) and one quantizer call on all of it - so a turn's codes equal its lone codes
up to float rounding: the batch computes in other shapes, and a frame whose two nearest centroids tie
that closely may get the other one. `codes_agreement` measures how often that happens; the tests and the
benchmark report it. `codec_batches` plans the calls: turns sorted by length, padded audio within a budget.

Codes are computed in float32: reduced precision (bf16/fp16 weights or autocast) changes about half of
the frames (measured on an H100: 2.6% of codebook-0 frames, 49% in some codebook), so it is refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import MimiModel
from transformers.models.mimi.modeling_mimi import MimiConv1d

from csm_synthetic.errors import InputError

from .csm import DEFAULT_CODEC_MODEL_ID, audio_token_count

if TYPE_CHECKING:  # the processor's import is not needed to encode: encoder processes start faster without it
    from transformers import CsmProcessor

REDUCED_PRECISION_WHY = (
    "Mimi codes need float32: reduced precision changes about half of the frames "
    "(measured on an H100: 2.6% of the frames in codebook 0, 49% in some codebook)"
)


@lru_cache(maxsize=4)
def load_codec(model_id: str = DEFAULT_CODEC_MODEL_ID, device: str = "cpu") -> MimiModel:
    """The Mimi codec of a Hub id or local folder, in float32 and eval mode on `device`, loaded once per process."""
    try:
        codec = MimiModel.from_pretrained(model_id, dtype=torch.float32)
    except Exception as error:  # transformers raises OSError, ValueError, HF errors... for the same cause
        raise InputError(f"cannot load a Mimi codec from {model_id!r}: {error}") from error
    if codec.config.codebook_size > np.iinfo(np.int16).max + 1:
        raise InputError(f"{model_id!r} has {codec.config.codebook_size} codes per codebook: too many for int16")
    return codec.to(device).eval()


def check_codec_rate(codec: MimiModel, sampling_rate: int) -> None:
    """Refuse a codec for audio of another rate than the samples'."""
    if codec.config.sampling_rate != sampling_rate:
        raise InputError(
            f"--codec_model_id {codec.name_or_path!r} encodes {codec.config.sampling_rate} Hz audio, but "
            f"--target_sampling_rate is {sampling_rate} Hz (the processor's rate): use the codec of the CSM model"
        )


def check_codec(codec: MimiModel, processor: CsmProcessor, sampling_rate: int) -> None:
    """Refuse a codec whose rate or frame count per audio length differs from what the processor assumes."""
    check_codec_rate(codec, sampling_rate)
    lengths = [1, 1919, 1920, 1921, sampling_rate, 7 * sampling_rate + 5]
    codec_frames = encoded_frames(codec, lengths).tolist()
    processor_frames = [audio_token_count(processor, length) for length in lengths]
    if codec_frames != processor_frames:
        raise InputError(
            f"codec and processor disagree on frames per audio: for {lengths} samples the codec makes "
            f"{codec_frames} frames, the processor counts {processor_frames} <|AUDIO|> tokens"
        )


def check_full_precision(codec: MimiModel) -> None:
    """Refuse to encode with weights below float32 or under autocast (see `REDUCED_PRECISION_WHY`)."""
    tensors = itertools.chain(codec.parameters(), codec.buffers())
    reduced = sorted({str(tensor.dtype) for tensor in tensors if tensor.is_floating_point()} - {"torch.float32"})
    if reduced:
        raise InputError(f"the codec's weights are {', '.join(reduced)}: {REDUCED_PRECISION_WHY}; load it in float32")
    if torch.is_autocast_enabled(codec.device.type):
        dtype = torch.get_autocast_dtype(codec.device.type)
        raise InputError(f"refusing to encode under autocast ({dtype}): {REDUCED_PRECISION_WHY}")


def set_fp32_precision(allow_tf32: bool) -> None:
    """Process-wide: float32 matmuls and convolutions on a GPU in full float32, or TF32 when allowed.

    TF32 (tensor cores, 10 mantissa bits instead of 23) encoded Mimi about 1.5x faster on an H100, at the
    price of more frames whose nearest centroids nearly tie getting the other code. PyTorch's own default
    lets cuDNN convolutions use TF32; this sets matmuls and convolutions explicitly, both ways.
    """
    precision = "tf32" if allow_tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision


def encoded_frames(codec: MimiModel, num_samples: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Frames the codec makes of audio of `num_samples` samples (each encoded alone)."""
    return codec.get_encoded_length(torch.as_tensor(num_samples, dtype=torch.int64))


# --- planning codec calls --------------------------------------------------------------------------


def codec_batches(lengths: Sequence[int] | np.ndarray, budget: int, max_items: int | None = None) -> list[np.ndarray]:
    """The codec calls that encode items of `lengths` samples: arrays of item indices, longest items first.

    Items are sorted by length (ties in index order) and cut into consecutive runs whose padded size -
    items times the longest - stays within `budget` samples (and `max_items` items); an item longer than
    the budget is a call of its own. Sorting the whole window keeps padding small; the result depends on
    the lengths only, never on the devices that will run the calls.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least one sample (got {budget})")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        count = max(1, min(budget // longest, max_items or len(order)))
        batches.append(order[start : start + count])
        start += count
    return batches


def padded_size(lengths: Sequence[int] | np.ndarray) -> int:
    """Samples of a codec call on items of `lengths`: all padded to the longest."""
    return len(lengths) * int(max(lengths, default=0))


def pad_batch(audios: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Audios right-padded with zeros into one float32 `(batch, samples)` array, and their lengths."""
    lengths = np.array([len(audio) for audio in audios], dtype=np.int64)
    batch = np.zeros((len(audios), int(lengths.max(initial=0))), dtype=np.float32)
    for row, audio in enumerate(audios):
        batch[row, : len(audio)] = audio
    return batch, lengths


# --- encoding --------------------------------------------------------------------------------------


@torch.inference_mode()
def encode_one(codec: MimiModel, audio: np.ndarray) -> np.ndarray:
    """Codes `(frames, num_codebooks)` int16 of one audio, encoded as CSM's forward does: alone, unpadded."""
    check_full_precision(codec)
    samples = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(codec.device)
    codes = codec.encode(samples[None, None]).audio_codes[0]  # (num_codebooks, frames)
    return codes.T.to(torch.int16).cpu().numpy()


def encode_batch(codec: MimiModel, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Codes `(frames, num_codebooks)` int16 of each audio, all in one forward of the codec (see `encode_padded`)."""
    if not audios:
        return []
    return encode_padded(codec, *pad_batch(audios))


@torch.inference_mode()
def encode_padded(codec: MimiModel, batch: np.ndarray | torch.Tensor, lengths: np.ndarray) -> list[np.ndarray]:
    """Codes `(frames, num_codebooks)` int16 of each row of a right-padded `(batch, samples)` float32 array.

    `MimiModel.encode` in one call, padding made harmless: the encoder runs on the whole batch with
    `_pad_as_if_alone`, then the quantizer on all of its latents at once; each item keeps the frames its
    own length makes. A torch `OutOfMemoryError` goes to the caller, who can split the batch.
    """
    check_full_precision(codec)
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
    if len(lengths) and int(lengths.min()) < 1:
        raise ValueError("cannot encode an empty audio")
    samples = torch.as_tensor(batch, dtype=torch.float32).to(codec.device)
    with _pad_as_if_alone(codec, lengths.to(codec.device)):
        latents = codec.encoder(samples[:, None, :]).latents  # (batch, dimension, frames)
    codes = codec.quantizer.encode(latents).transpose(0, 1).to(torch.int16).cpu()  # (batch, num_codebooks, frames)
    frames = encoded_frames(codec, lengths).tolist()
    return [codes[row, :, :count].T.numpy() for row, count in enumerate(frames)]


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
            raise RuntimeError("the Mimi encoder's structure changed: cannot batch its encoding exactly")
        yield
    finally:
        for handle in handles:
            handle.remove()


def _fill_past_valid(conv: MimiConv1d, args: tuple, valid: torch.Tensor) -> tuple:
    """Forward pre-hook: give each item's input past `valid`, up to the end of its last stride, the
    convolution's own right padding (zeros, or a copy of the last valid value).

    Only those fewer than `stride` positions per item reach a frame of the item's own; later positions feed
    frames that are cut away. Writing them in place touches a few columns instead of the whole activation:
    the input is a fresh activation (an ELU's, or the transformer's output) that nothing else reads.
    """
    hidden = args[0]  # (batch, channels, time)
    stride = conv.conv.stride[0]
    valid = valid.to(hidden.device)
    positions = valid[:, None] + torch.arange(stride - 1, device=hidden.device)[None, :]  # (batch, stride - 1)
    ends = torch.clamp((valid + stride - 1) // stride * stride, max=hidden.shape[-1])  # end of the last stride
    inside = positions < ends[:, None]
    rows = torch.arange(len(valid), device=hidden.device)[:, None].expand_as(positions)[inside]
    columns = positions[inside]
    if conv.pad_mode == "constant":
        hidden[rows, :, columns] = 0.0
    elif conv.pad_mode == "replicate":
        hidden[rows, :, columns] = hidden[rows, :, valid[rows] - 1]
    else:
        raise NotImplementedError(f"cannot batch a Mimi convolution padded in mode {conv.pad_mode!r}")
    return (hidden, *args[1:])


# --- fidelity --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodesAgreement:
    """How two encodings of the same audios differ: the share of frames whose codes differ."""

    frames: int
    codebook0: float  # share of frames whose codebook-0 code differs
    any_codebook: float  # share of frames with a different code in at least one codebook

    def to_dict(self) -> dict:
        return {"frames": self.frames, "codebook0_differ": self.codebook0, "any_codebook_differ": self.any_codebook}


def codes_agreement(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> CodesAgreement:
    """Compare two encodings `(frames, num_codebooks)` per audio, e.g. batched against per item on one device."""
    if len(a) != len(b) or any(np.shape(x) != np.shape(y) for x, y in zip(a, b)):
        raise ValueError("the two encodings must hold the same audios: same count and the same shape per audio")
    if not a:
        return CodesAgreement(0, 0.0, 0.0)
    differ = np.concatenate([np.asarray(x) != np.asarray(y) for x, y in zip(a, b)])  # (frames, num_codebooks)
    frames = len(differ)
    if not frames:
        return CodesAgreement(0, 0.0, 0.0)
    return CodesAgreement(frames, float(differ[:, 0].mean()), float(differ.any(axis=1).mean()))


def codec_identity(codec_model_id: str) -> list:
    """What identifies a codec's weights for caching: a Hub id, or a local folder's files, sizes and times."""
    folder = Path(codec_model_id)
    if not folder.is_dir():
        return [codec_model_id]
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return [str(folder.resolve())] + [
        (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns) for path in files
    ]
