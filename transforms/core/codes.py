"""Codes-format samples of one conversation: the processor format's tokens, Mimi codes instead of audio.

A codes-format sample has the processor format's metadata, `input_ids` and `attention_mask` (`(tokens,)`
int64, as the processor returns them), and instead of audio and labels the codes of each of its audio
segments (context turns first, the target turn last), `(frames, num_codebooks)` int16 each. `transforms.training.codes_training` turns such rows into model inputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .csm import audio_token_count
from .plan import ConversationText, check_token_count, window_metadata
from .windows import Window


def codes_samples(
    processor,
    conversation: ConversationText,
    rendered: Sequence[str],
    num_samples: Sequence[int],
    codes: Sequence[np.ndarray],
    windows: Sequence[Window],
    sampling_rate: int,
) -> Iterator[dict]:
    """One sample (a dict of numpy arrays and scalars) per window; no audio is read."""
    check_frames(processor, conversation, num_samples, codes)
    tokens: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for window in windows:
        turns = range(window.start, window.target + 1)
        for turn in turns:
            if turn not in tokens:
                tokens[turn] = message_tokens(processor, rendered[turn], num_samples[turn])
        input_ids = np.concatenate([tokens[turn][0] for turn in turns])
        check_token_count(conversation, window, len(input_ids))
        yield {
            **window_metadata(conversation, window, sum(num_samples[turn] for turn in turns), sampling_rate),
            "input_ids": input_ids,
            "attention_mask": np.concatenate([tokens[turn][1] for turn in turns]),
            "audio_codes": [codes[turn] for turn in turns],
        }


def check_frames(
    processor, conversation: ConversationText, num_samples: Sequence[int], codes: Sequence[np.ndarray]
) -> None:
    """Each turn's codes must have one frame per `<|AUDIO|>` token the processor makes of its audio."""
    for position, (samples, turn_codes) in enumerate(zip(num_samples, codes)):
        if turn_codes.ndim != 2 or not turn_codes.size:
            raise ValueError(f"{conversation.where(position)}: audio_codes must be a non-empty (frames, codebooks) array")
        tokens = audio_token_count(processor, samples)
        if len(turn_codes) != tokens:
            raise ValueError(
                f"{conversation.where(position)}: {len(turn_codes)} frames of codes for {samples} samples, but the "
                f"processor makes {tokens} <|AUDIO|> tokens of them: the codec does not match the processor"
            )


def message_tokens(processor, rendered: str, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """`input_ids` and `attention_mask` of one rendered message, made by the processor itself.

    Only the audio's length matters to the tokens, so the processor gets silence of that length.
    """
    encoded = processor(text=rendered, audio=[np.zeros(num_samples, dtype=np.float32)])
    return encoded["input_ids"].reshape(-1).numpy(), encoded["attention_mask"].reshape(-1).numpy()
