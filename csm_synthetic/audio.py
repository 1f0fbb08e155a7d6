"""Decode audio with soundfile (no FFmpeg), downmix to mono and resample to the target rate."""

from __future__ import annotations

import io
import numpy as np
import soundfile as sf

DEFAULT_SAMPLING_RATE = 24000  # CSM's Mimi codec


def load_audio(source: str | bytes, target_rate: int = DEFAULT_SAMPLING_RATE) -> np.ndarray:
    """Mono float32 samples at `target_rate` from a file path or encoded bytes (WAV, FLAC, OGG, ...)."""
    with sf.SoundFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as file:
        samples = file.read(dtype="float32", always_2d=True)
        rate = file.samplerate
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
