"""Turn the corpus builder's turn rows into contextual CSM training samples."""

from .codes import CodesSamples, codes_sample_features, encode_turns
from .collator import CsmDataCollator
from .csm import DEFAULT_MODEL_ID, load_processor, message_token_counts
from .samples import ContextualSamples, group_conversations, sample_features
from .windows import DEFAULT_MAX_TOKENS, Skip, Window, plan_windows

__all__ = [
    "CodesSamples",
    "CsmDataCollator",
    "codes_sample_features",
    "encode_turns",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL_ID",
    "ContextualSamples",
    "Skip",
    "Window",
    "group_conversations",
    "load_processor",
    "message_token_counts",
    "plan_windows",
    "sample_features",
]
