"""csm-synthetic: a synthetic conversational speech corpus as a `datasets` builder and CSM training data.

Names are imported lazily, so `csm_synthetic.testing.demo` or the corpus reader do not pay for importing
datasets and torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("csm-synthetic")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_EXPORTS = {
    "CsmSynthetic": "builder",
    "CsmSyntheticConfig": "builder",
    "CorpusSettings": "settings",
    "InputError": "errors",
    "available_configs": "builder",
    "load_turns": "builder",
    "turn_features": "builder",
    "Conversation": "corpus",
    "Corpus": "corpus",
    "Problem": "corpus",
    "ProblemKind": "corpus",
    "Turn": "corpus",
    "read_corpus": "corpus",
    "split_of": "splits",
    "DatasetSource": "sources",
    "FolderSource": "sources",
    "ManifestSource": "sources",
    "input_source": "sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'csm_synthetic' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
