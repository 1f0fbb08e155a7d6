"""Turn the corpus builder's turn rows into contextual CSM training samples.

Names are imported lazily: the command-line shells parse their arguments (and answer --help) without
paying for transformers.
"""

from importlib import import_module

_EXPORTS = {
    "CodesSamples": "codes",
    "codes_sample_features": "codes",
    "encode_turns": "codes",
    "CsmDataCollator": "training.collator",
    "DEFAULT_MODEL_ID": "core.csm",
    "load_processor": "core.csm",
    "message_token_counts": "core.csm",
    "ContextualSamples": "samples",
    "group_conversations": "samples",
    "sample_features": "samples",
    "DEFAULT_MAX_TOKENS": "core.windows",
    "Skip": "core.windows",
    "Window": "core.windows",
    "plan_windows": "core.windows",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transforms' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
