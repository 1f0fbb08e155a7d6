"""csm-synthetic: a synthetic conversational speech corpus as a `datasets` builder and CSM training data."""

from importlib.metadata import PackageNotFoundError, version

from .builder import CsmSynthetic, CsmSyntheticConfig, available_configs, load_turns, turn_features
from .corpus import Conversation, Corpus, Problem, ProblemKind, Turn, read_corpus
from .splits import split_of

try:
    __version__ = version("csm-synthetic")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "Conversation",
    "Corpus",
    "CsmSynthetic",
    "CsmSyntheticConfig",
    "Problem",
    "ProblemKind",
    "Turn",
    "available_configs",
    "load_turns",
    "read_corpus",
    "split_of",
    "turn_features",
]
