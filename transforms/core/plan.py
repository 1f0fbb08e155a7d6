"""A conversation's plan: each turn rendered and counted once, then a sample window or a skip per turn.

    plan = plan_conversation(processor, conversation, num_samples, max_history=5, max_tokens=2048)
    plan.windows   # the samples to build, in turn order
    plan.skips     # the turns that get no sample, each with its reason
    plan.problems  # a bad turn (audio fault, special tokens in its text) and the cut it makes

Every engine and every sample format goes through `plan_conversation`, so windows and skips come from
one rule (`plan_windows`) applied to one token count (`message_token_counts`), and bad turns cut their
conversation by the reader's rule (`csm_synthetic.corpus.truncation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from csm_synthetic.audio_checks import TurnFault
from csm_synthetic.corpus import Problem, ProblemKind, truncation

from .csm import message_token_counts, render_messages, special_tokens_in_texts
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
    message_tokens: np.ndarray  # tokens each turn takes in a sample (0 from a bad turn on: it takes none)
    steps: list[Window | Skip]  # one per turn before the first bad turn, in order
    problems: list[Problem] = field(default_factory=list)  # the first bad turn's problems and the cut, if any

    @property
    def windows(self) -> list[Window]:
        return [step for step in self.steps if isinstance(step, Window)]

    @property
    def skips(self) -> list[Skip]:
        return [step for step in self.steps if isinstance(step, Skip)]


def plan_conversation(
    processor,
    conversation: ConversationText,
    num_samples: Sequence[int],
    max_history: int | None,
    max_tokens: int,
    audio_faults: Sequence[TurnFault | None] = (),
) -> ConversationPlan:
    """Render and count every turn once (its audio has `num_samples` samples) and plan its windows.

    The first bad turn - one with an audio fault (found when decoding, `audio_faults`) or with the tokenizer's
    special tokens in its text - cuts the conversation just before it: it and every later turn get no sample
    and are never context.
    """
    rendered = render_messages(processor, conversation.speakers, conversation.texts)
    usable, problems = first_bad_turn(processor, conversation, audio_faults)
    tokens = np.zeros(len(rendered), dtype=np.int64)
    tokens[:usable] = message_token_counts(processor, rendered[:usable], num_samples[:usable])
    return ConversationPlan(rendered, tokens, plan_windows(tokens[:usable], max_history, max_tokens), problems)


def first_bad_turn(
    processor, conversation: ConversationText, audio_faults: Sequence[TurnFault | None]
) -> tuple[int, list[Problem]]:
    """The position of the conversation's first bad turn (its number of turns when none is bad), with that
    turn's problems and its `conversation_truncated` record."""
    special_tokens = special_tokens_in_texts(processor, conversation.texts)
    for position, tokens in enumerate(special_tokens):
        turn = int(conversation.turn_indices[position])
        found = []
        fault = audio_faults[position] if len(audio_faults) else None
        if fault is not None:
            found.append(Problem(conversation.conversation_id, turn, fault.kind, fault.message))
        if tokens:
            found.append(
                Problem(
                    conversation.conversation_id,
                    turn,
                    ProblemKind.SPECIAL_TOKEN_IN_TEXT,
                    f"script line {turn + 1} holds the tokenizer's special token {', '.join(map(repr, tokens))}, "
                    "which the processor would read as markup, not as text",
                )
            )
        if found:
            num_turns = int(conversation.turn_indices[0]) + len(conversation.texts)
            return position, found + [truncation(conversation.conversation_id, turn, num_turns)]
    return len(special_tokens), []


def window_start_column(steps: Sequence[Window | Skip], num_turns: int | None = None) -> list[int]:
    """The plan as one number per turn: where its window starts, or -1 when it gets no sample (also every
    turn from `len(steps)` to `num_turns`, those after a cut)."""
    starts = [step.start if isinstance(step, Window) else -1 for step in steps]
    return starts + [-1] * ((num_turns or len(steps)) - len(steps))


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
