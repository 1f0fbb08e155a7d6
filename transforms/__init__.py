"""Turn the corpus builder's turn rows into contextual CSM training samples.

    core/       pure steps over records and arrays: plan windows, build samples, encode codes
    maps.py     their `datasets` `.map` adapters (cached); features.py, arrow.py: the rows they write
    pipeline/   prepare a whole corpus into sharded output, verify it
    export/     publish the raw corpus or prepared samples (Parquet repository, dataset card, Hub upload)
    training/   collators and the codes-training model for a training repo

Names are imported lazily: the command-line shells parse their arguments (and answer --help) without
paying for transformers.
"""

from importlib import import_module

_EXPORTS = {
    "CodesSamples": "maps",
    "ContextualSamples": "maps",
    "PlanWindows": "maps",
    "build_samples": "maps",
    "encode_turns": "maps",
    "group_conversations": "maps",
    "map_samples": "maps",
    "measure_turns": "maps",
    "plan_conversations": "maps",
    "codes_sample_features": "features",
    "sample_features": "features",
    "DEFAULT_MODEL_ID": "core.csm",
    "load_processor": "core.csm",
    "message_token_counts": "core.csm",
    "DEFAULT_MAX_TOKENS": "core.windows",
    "Skip": "core.windows",
    "Window": "core.windows",
    "plan_windows": "core.windows",
    "CsmDataCollator": "training.collator",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transforms' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
