"""The engine-free steps on plain records and arrays: no `datasets` anywhere in these tests.

Whatever engine runs them (the local `.map` pipeline, a Ray cluster), these are the samples it gets.
"""

import numpy as np
import pytest

from csm_synthetic.audio import load_audio
from csm_synthetic.corpus import read_corpus
from conftest import write_conversation
from transforms.core.codes import codes_samples
from transforms.core.csm import audio_token_count, load_processor
from transforms.core.plan import ConversationText, plan_conversation, window_start_column, windows_of
from transforms.core.samples import processor_samples
from transforms.core.windows import TOO_MANY_TOKENS

RATE = 24_000


@pytest.fixture(scope="module")
def conversation(tmp_path_factory):
    """A conversation of four turns read by the corpus reader (the third the longest), with its decoded audio."""
    root = tmp_path_factory.mktemp("core") / "corpus"
    write_conversation(root, "en/a", [1, 2, 1, 2], frames=lambda turn: 2400 * (8 if turn == 3 else turn) + 7)
    (record,) = read_corpus(root).conversations
    text = ConversationText(
        record.conversation_id,
        record.language,
        [turn.index for turn in record.turns],
        [turn.speaker for turn in record.turns],
        [turn.text for turn in record.turns],
    )
    return text, [load_audio(turn.audio_path) for turn in record.turns]


def chat_template_encoding(processor, text: ConversationText, audios, start: int, target: int):
    messages = [
        {"role": str(text.speakers[turn]), "content": [{"type": "text", "text": text.texts[turn]},
                                                        {"type": "audio", "path": audios[turn]}]}
        for turn in range(start, target + 1)
    ]
    return processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, processor_kwargs={"output_labels": True}
    )


def test_processor_samples_equal_the_chat_templates_encoding_of_each_window(conversation, processor_dir):
    processor = load_processor(processor_dir)
    text, audios = conversation
    plan = plan_conversation(processor, text, [len(audio) for audio in audios], max_history=1, max_tokens=2048)
    samples = list(processor_samples(processor, text, plan.rendered, audios, plan.windows, RATE))
    assert [sample["turn_index"] for sample in samples] == [0, 1, 2, 3]
    for sample, window in zip(samples, plan.windows):
        expected = chat_template_encoding(processor, text, audios, window.start, window.target)
        for name in ("input_ids", "attention_mask", "labels", "input_values_cutoffs"):
            np.testing.assert_array_equal(sample[name], expected[name][0].numpy(), err_msg=name)
        np.testing.assert_array_equal(np.concatenate(sample["input_values"]), expected["input_values"].reshape(-1))
        assert sample["num_tokens"] == len(sample["input_ids"]) == window.num_tokens
        assert sample["num_context_turns"] == min(window.target, 1)


def test_codes_samples_have_the_same_tokens_and_one_codes_segment_per_turn(conversation, processor_dir):
    processor = load_processor(processor_dir)
    text, audios = conversation
    lengths = [len(audio) for audio in audios]
    plan = plan_conversation(processor, text, lengths, max_history=2, max_tokens=2048)
    codes = [np.full((audio_token_count(processor, n), 4), turn, dtype=np.int16) for turn, n in enumerate(lengths)]
    made = list(codes_samples(processor, text, plan.rendered, lengths, codes, plan.windows, RATE))
    reference = list(processor_samples(processor, text, plan.rendered, audios, plan.windows, RATE))
    for sample, expected, window in zip(made, reference, plan.windows):
        np.testing.assert_array_equal(sample["input_ids"], expected["input_ids"])
        assert [segment[0, 0] for segment in sample["audio_codes"]] == list(range(window.start, window.target + 1))
        assert sample["audio_seconds"] == pytest.approx(expected["audio_seconds"])


def test_codes_that_do_not_match_the_processor_name_the_conversation_and_turn(conversation, processor_dir):
    processor = load_processor(processor_dir)
    text, audios = conversation
    lengths = [len(audio) for audio in audios]
    plan = plan_conversation(processor, text, lengths, max_history=None, max_tokens=2048)
    codes = [np.zeros((audio_token_count(processor, n) + (turn == 2), 4), np.int16) for turn, n in enumerate(lengths)]
    with pytest.raises(ValueError, match="en/a turn 2: .* frames of codes"):
        list(codes_samples(processor, text, plan.rendered, lengths, codes, plan.windows, RATE))


def test_a_turn_too_long_alone_is_a_skip_record_and_never_context(conversation, processor_dir):
    processor = load_processor(processor_dir)
    text, audios = conversation
    lengths = [len(audio) for audio in audios]
    full = plan_conversation(processor, text, lengths, max_history=None, max_tokens=2048)
    budget = int(full.message_tokens[2]) - 1  # turn 2 alone no longer fits; the others do
    assert max(np.delete(full.message_tokens, 2)) <= budget
    plan = plan_conversation(processor, text, lengths, max_history=None, max_tokens=budget)
    assert [(skip.turn_index, skip.reason) for skip in plan.skips] == [(2, TOO_MANY_TOKENS)]
    assert all(not window.start <= 2 <= window.target for window in plan.windows)
    stored = window_start_column(plan.steps)  # what the plan map stores, and reads back
    assert stored[2] == -1 and windows_of(stored, plan.message_tokens) == plan.windows
