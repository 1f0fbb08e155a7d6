"""What CSM's processor does with a conversation, in the few places this project needs to know it."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from csm_synthetic.errors import InputError

if TYPE_CHECKING:
    from transformers import CsmProcessor

DEFAULT_MODEL_ID = "unsloth/csm-1b"
DEFAULT_CODEC_MODEL_ID = "kyutai/mimi"  # the Mimi codec inside csm-1b
_AUDIO_PLACEHOLDER = "placeholder.wav"  # rendered, never loaded (tokenize=False)


@lru_cache(maxsize=4)
def load_processor(model_id: str = DEFAULT_MODEL_ID) -> CsmProcessor:
    """The CSM processor of a Hub id or local folder, loaded once per process."""
    from transformers import AutoProcessor, CsmProcessor  # a heavy import: only when a processor is needed

    try:
        processor = AutoProcessor.from_pretrained(model_id)
    except Exception as error:  # transformers raises OSError, ValueError, HF errors... for the same cause
        raise InputError(f"cannot load a CSM processor from {model_id!r}: {error}") from error
    if not isinstance(processor, CsmProcessor):
        raise InputError(f"{model_id!r} holds a {type(processor).__name__}, not a CsmProcessor")
    return processor


def message(speaker: int, text: str, audio) -> dict:
    """A CSM chat message: role = the speaker id as a string of digits, then its text and audio."""
    return {"role": str(speaker), "content": [{"type": "text", "text": text}, {"type": "audio", "path": audio}]}


def audio_token_count(processor: CsmProcessor, num_samples: int) -> int:
    """How many `<|AUDIO|>` tokens (Mimi frames) the processor makes of `num_samples` samples."""
    return processor._get_encoded_length(num_samples, **processor.audio_kwargs["encoded_length_kwargs"])


def render_messages(processor: CsmProcessor, speakers: Sequence[int], texts: Sequence[str]) -> list[str]:
    """Each turn rendered by the chat template as a message with audio, `<|AUDIO|>` not yet expanded.

    The template renders messages one after another, so a sample's text is its turns' renderings joined.
    """
    return [
        processor.apply_chat_template([message(speaker, text, _AUDIO_PLACEHOLDER)], tokenize=False)
        for speaker, text in zip(speakers, texts)
    ]


def message_token_counts(processor: CsmProcessor, rendered: Sequence[str], num_samples: Sequence[int]) -> np.ndarray:
    """Tokens each rendered message takes in a sample: its text, one `<|AUDIO|>` per frame, `<|audio_eos|>`.

    Messages start with a special token, so counts add up: a sample's length is the sum over its messages.
    """
    if not rendered:
        return np.zeros(0, dtype=np.int64)
    encoded = processor.tokenizer(list(rendered), add_special_tokens=False)["input_ids"]
    # each rendering holds one <|AUDIO|>, which the processor expands to one token per frame
    return np.array(
        [len(ids) - 1 + audio_token_count(processor, samples) for ids, samples in zip(encoded, num_samples)],
        dtype=np.int64,
    )


def special_tokens_in_texts(processor: CsmProcessor, texts: Sequence[str]) -> list[list[str]]:
    """For each text, the tokenizer's special or added tokens that its tokenization (alone, no template) holds.

    A script line holding one, e.g. a literal `<|AUDIO|>`, would be read by the processor as markup:
    another audio placeholder, a message boundary. Such a turn cannot be trained on as written.
    """
    if not texts:
        return []
    tokenizer = processor.tokenizer
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [
        list(dict.fromkeys(tokenizer.convert_ids_to_tokens(token) for token in ids if token in special))
        for ids in encoded
    ]
