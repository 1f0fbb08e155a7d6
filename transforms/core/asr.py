"""ASR agreement: each turn transcribed by a transformers speech-recognition model, compared with its text.

Any `automatic-speech-recognition` model (CTC or sequence-to-sequence) runs through the transformers
pipeline, on the GPU when there is one, in batches of turns of similar length. The character error rate
(`transforms.core.quality.character_error_rate`) is a measure of the turn; `--max_cer` decides in the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from csm_synthetic.errors import InputError

DEFAULT_ASR_BATCH_SIZE = 8


@lru_cache(maxsize=2)
def load_asr(model_id: str, device: str = "cpu"):
    """The speech-recognition pipeline of a Hub id or local folder, loaded once per process."""
    from transformers import pipeline  # a heavy import: only with --asr_model

    try:
        return pipeline("automatic-speech-recognition", model=model_id, device=device)
    except Exception as error:  # transformers raises OSError, ValueError, HF errors... for the same cause
        raise InputError(f"cannot load a speech-recognition model from --asr_model {model_id!r}: {error}") from error


def transcribe(asr, audios: Sequence[np.ndarray], sampling_rate: int, batch_size: int) -> list[str]:
    """The transcript of each audio; turns of similar length share a batch (less padding)."""
    order = np.argsort([len(audio) for audio in audios], kind="stable")
    transcripts: list[str] = [""] * len(audios)
    inputs = [{"raw": audios[row], "sampling_rate": sampling_rate} for row in order]
    for row, output in zip(order, asr(inputs, batch_size=batch_size)):
        transcripts[row] = output["text"]
    return transcripts
