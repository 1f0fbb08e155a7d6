"""How a raw corpus is read into turn rows and splits: the builder's options, declared once.

The builder, `inspect_corpus`, the prepare pipeline and the Hub export all take a `CorpusSettings`;
the command-line flags of every script that reads a corpus are made from its fields
(`csm_synthetic.cli.add_corpus_arguments`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .audio import DEFAULT_SAMPLING_RATE
from .corpus import DEFAULT_MAX_TURN_SECONDS
from .errors import InputError
from .splits import DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION, check_fractions, split_of

HELP = {
    "target_sampling_rate": "audio rate of the rows (Mimi's); files of other rates are resampled",
    "validation_fraction": "share of conversations in validation, by a hash of their id",
    "test_fraction": "share of conversations in test, by a hash of their id",
    "max_turn_seconds": "a turn longer than this is a fault",
}


@dataclass(frozen=True)
class CorpusSettings:
    target_sampling_rate: int = DEFAULT_SAMPLING_RATE
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    max_turn_seconds: float = DEFAULT_MAX_TURN_SECONDS

    def __post_init__(self):
        try:
            check_fractions(self.validation_fraction, self.test_fraction)
        except ValueError as error:
            raise InputError(str(error)) from None
        if not self.max_turn_seconds > 0:
            raise InputError(f"max_turn_seconds must be > 0 (is {self.max_turn_seconds})")
        if not self.target_sampling_rate > 0:
            raise InputError(f"target_sampling_rate must be > 0 (is {self.target_sampling_rate})")

    def split_of(self, conversation_id: str) -> str:
        """The split of a conversation under these fractions (see `csm_synthetic.splits`)."""
        return split_of(conversation_id, self.validation_fraction, self.test_fraction)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in fields(cls))
