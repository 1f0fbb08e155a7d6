"""Which previous turns go into each sample: the context window and token budget rule.

Pure logic on token counts, shared by the transform (which builds the samples) and the prepare script
(which plans and reports them from audio headers before any audio is decoded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

DEFAULT_MAX_TOKENS = 2048  # CSM-1B backbone positions
TOO_MANY_TOKENS = "too_many_tokens"


@dataclass(frozen=True)
class Window:
    """A sample: turns [start, target] of one conversation, `target` being the turn to learn."""

    start: int
    target: int
    num_tokens: int

    @property
    def num_context_turns(self) -> int:
        return self.target - self.start


@dataclass(frozen=True)
class Skip:
    """A turn that gets no sample (and is never context either)."""

    turn_index: int
    reason: str
    num_tokens: int


def plan_windows(
    turn_tokens: Sequence[int], max_history: int | None = None, max_tokens: int = DEFAULT_MAX_TOKENS
) -> list[Window | Skip]:
    """One `Window` or `Skip` per turn, in turn order.

    Context is up to `max_history` contiguous previous turns (None = all); the oldest are dropped until
    the sample fits `max_tokens`. A turn that cannot fit even alone is skipped, and no later window
    reaches back over it.
    """
    if max_history is not None and max_history < 0:
        raise ValueError(f"max_history must be >= 0 or None, got {max_history}")
    plan: list[Window | Skip] = []
    first_usable = 0  # context may not reach back past a skipped turn
    for target, tokens in enumerate(turn_tokens):
        if tokens > max_tokens:
            plan.append(Skip(target, TOO_MANY_TOKENS, tokens))
            first_usable = target + 1
            continue
        start = first_usable if max_history is None else max(first_usable, target - max_history)
        total = sum(turn_tokens[start : target + 1])
        while total > max_tokens:
            total -= turn_tokens[start]
            start += 1
        plan.append(Window(start, target, total))
    return plan
