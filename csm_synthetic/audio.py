"""Decode audio with soundfile (no FFmpeg), downmix to mono and resample to the target rate.

A turn may be a span of a longer recording (`start`/`end` seconds, a diarizer's output): the span is read
by seeking, never by decoding the whole file, and `span_frames` is the one rule that turns seconds into
frames, for the reader (which counts a turn's frames from the header) and the decoder alike.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache

import numpy as np
import soundfile as sf

DEFAULT_SAMPLING_RATE = 24000  # CSM's Mimi codec


def audio_header(path: str) -> sf._SoundFileInfo:
    """`soundfile.info` of a file, kept for the latest files by their size and mtime: the turns of a diarized
    recording are spans of one file, each checked against its header (once, instead of once a turn)."""
    try:
        stat = os.stat(path)
    except OSError:
        return sf.info(path)  # the reader's own error, as for any file it cannot open
    return _header(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _header(path: str, size: int, mtime_ns: int) -> sf._SoundFileInfo:
    return sf.info(path)


def span_frames(start: float | None, end: float | None, rate: int, frames: int) -> tuple[int, int]:
    """(first frame, frame after the last) of the span `start`-`end` seconds of a file of `frames` frames at
    `rate`; None means the file's start or end. Not clipped: a span past the end of the file is the caller's fault."""
    first = 0 if start is None else round(start * rate)
    stop = frames if end is None else round(end * rate)
    return first, stop


def load_audio(
    source: str | bytes, target_rate: int = DEFAULT_SAMPLING_RATE, start: float | None = None, end: float | None = None
) -> np.ndarray:
    """Mono float32 samples at `target_rate` from a file path or encoded bytes (WAV, FLAC, OGG, ...), of the
    span `start`-`end` seconds when given (read by seeking)."""
    with sf.SoundFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as file:
        rate = file.samplerate
        first, stop = span_frames(start, end, rate, file.frames)
        if first:
            file.seek(first)
        samples = file.read(max(stop - first, 0), dtype="float32", always_2d=True)
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
    return resample(np.ascontiguousarray(mono), rate, target_rate)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return samples
    import torch  # only when a file is not at the target rate: torch is a heavy import
    import torchaudio.functional as taf

    resampled = taf.resample(torch.from_numpy(samples), rate, target_rate)
    return resampled.numpy().astype(np.float32, copy=False)


def resampled_length(frames: int, rate: int, target_rate: int) -> int:
    """Number of samples `resample` gives for `frames` samples at `rate` (torchaudio's rounding up)."""
    return -(-frames * target_rate // rate)
