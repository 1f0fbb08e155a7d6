"""A conversation's plan: each turn rendered and counted once, then a sample window or a skip per turn.

    plan = plan_conversation(processor, conversation, num_samples, max_history=5, max_tokens=2048)
    plan.windows   # the samples to build, in turn order
    plan.skips     # the turns that get no sample, each with its reason

Every engine and every sample format goes through `plan_conversation`, so windows and skips come from
one rule (`plan_windows`) applied to one token count (`message_token_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .csm import message_token_counts, render_messages
from .windows import Skip, Window, plan_windows


@dataclass(frozen=True)
class ConversationText:
    """What the steps need of a conversation besides its audio: its turns' ids, speakers and text, in order."""

    conversation_id: str
    language: str
    turn_indices: Sequence[int]  # the corpus' 0-based turn numbers (contiguous: see group_conversations)
    speakers: Sequence[int]
    texts: Sequence[str]

    def where(self, position: int) -> str:
        return f"{self.conversation_id} turn {self.turn_indices[position]}"


@dataclass(frozen=True)
class ConversationPlan:
    rendered: list[str]  # each turn as the chat template renders it, `<|AUDIO|>` not yet expanded
    message_tokens: np.ndarray  # tokens each turn takes in a sample
    steps: list[Window | Skip]  # one per turn, in order

    @property
    def windows(self) -> list[Window]:
        return [step for step in self.steps if isinstance(step, Window)]

    @property
    def skips(self) -> list[Skip]:
        return [step for step in self.steps if isinstance(step, Skip)]


def plan_conversation(
    processor, conversation: ConversationText, num_samples: Sequence[int], max_history: int | None, max_tokens: int
) -> ConversationPlan:
    """Render and count every turn once (its audio has `num_samples` samples) and plan its windows."""
    rendered = render_messages(processor, conversation.speakers, conversation.texts)
    tokens = message_token_counts(processor, rendered, num_samples)
    return ConversationPlan(rendered, tokens, plan_windows(tokens, max_history, max_tokens))


def window_start_column(steps: Sequence[Window | Skip]) -> list[int]:
    """The plan as one number per turn: where its window starts, or -1 when it gets no sample."""
    return [step.start if isinstance(step, Window) else -1 for step in steps]


def windows_of(window_starts: Sequence[int], message_tokens: Sequence[int]) -> list[Window]:
    """The windows of a stored plan (`window_start_column` and `ConversationPlan.message_tokens`)."""
    return [
        Window(int(start), target, int(np.sum(message_tokens[start : target + 1])))
        for target, start in enumerate(window_starts)
        if start >= 0
    ]


def check_token_count(conversation: ConversationText, window: Window, made: int) -> None:
    """The processor must make exactly the tokens the budget rule counted (else the windows are wrong)."""
    if made != window.num_tokens:
        raise RuntimeError(
            f"{conversation.where(window.target)}: the processor made {made} tokens where the token budget rule "
            f"counted {window.num_tokens}"
        )


def window_metadata(conversation: ConversationText, window: Window, audio_samples: int, sampling_rate: int) -> dict:
    """The columns every sample format shares, for the sample of `window`."""
    return {
        "conversation_id": conversation.conversation_id,
        "language": conversation.language,
        "turn_index": conversation.turn_indices[window.target],
        "speaker": conversation.speakers[window.target],
        "num_context_turns": window.num_context_turns,
        "num_tokens": window.num_tokens,
        "audio_seconds": audio_samples / sampling_rate,  # all audio of the sample, context included
    }
