"""The Mimi codec: load it, check it against the processor, and encode turns to codes.

The codes of a turn are what `CsmForConditionalGeneration.forward` computes for that audio: it calls
`codec_model.encode(audio[None, None])` on each segment alone (`encode_one`). `encode_batch` runs the
encoder on many turns at once and still gives those codes (see `_pad_as_if_alone`), up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
from transformers import CsmProcessor, MimiModel
from transformers.models.mimi.modeling_mimi import MimiConv1d

from csm_synthetic.errors import InputError

from .csm import DEFAULT_CODEC_MODEL_ID, audio_token_count


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
        raise InputError(f"cannot load a Mimi codec from {model_id!r}: {error}") from error
    if codec.config.codebook_size > np.iinfo(np.int16).max + 1:
        raise InputError(f"{model_id!r} has {codec.config.codebook_size} codes per codebook: too many for int16")
    return codec.to(device).eval()


def check_codec(codec: MimiModel, processor: CsmProcessor, sampling_rate: int) -> None:
    """Refuse a codec whose rate or frame count per audio length differs from what the processor assumes."""
    if codec.config.sampling_rate != sampling_rate:
        raise InputError(f"the codec encodes {codec.config.sampling_rate} Hz audio, the samples are {sampling_rate} Hz")
    lengths = [1, 1919, 1920, 1921, sampling_rate, 7 * sampling_rate + 5]
    codec_frames = encoded_frames(codec, lengths).tolist()
    processor_frames = [audio_token_count(processor, length) for length in lengths]
    if codec_frames != processor_frames:
        raise InputError(
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


def codec_identity(codec_model_id: str) -> list:
    """What identifies a codec's weights for caching: a Hub id, or a local folder's files, sizes and times."""
    folder = Path(codec_model_id)
    if not folder.is_dir():
        return [codec_model_id]
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return [str(folder.resolve())] + [
        (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns) for path in files
    ]
