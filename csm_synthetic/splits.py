"""Leak-free, stable train/validation/test assignment of conversations.

A conversation's split depends only on a hash of its own id, so a conversation never spans splits and
adding or removing other conversations never moves it.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")
DEFAULT_VALIDATION_FRACTION = 0.05
DEFAULT_TEST_FRACTION = 0.05


def unit_hash(conversation_id: str) -> float:
    """A number in [0, 1) fixed by the conversation id alone (same on every machine and Python)."""
    digest = hashlib.sha256(conversation_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_fractions(validation_fraction: float, test_fraction: float) -> None:
    if not (0 <= validation_fraction and 0 <= test_fraction and validation_fraction + test_fraction < 1):
        raise ValueError(
            f"split fractions must be >= 0 and leave room for train: validation={validation_fraction}, "
            f"test={test_fraction}"
        )


def split_of(
    conversation_id: str,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> str:
    """'test' for the lowest `test_fraction` of hashes, then 'validation', the rest 'train'."""
    check_fractions(validation_fraction, test_fraction)
    position = unit_hash(conversation_id)
    if position < test_fraction:
        return "test"
    if position < test_fraction + validation_fraction:
        return "validation"
    return "train"


def split_rank(split: str) -> tuple[int, str]:
    """Sort key: train, validation, test first, in that order; other splits after them by name."""
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)
