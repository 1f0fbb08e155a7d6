"""The corpus reader: every known fault reported by conversation and turn, no misaligned turn, all name
spellings, numeric order, script quirks, speaker mapping and the layout rules of CORPUS.md."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from csm_synthetic.errors import InputError

from conftest import (
    BAD_TURN_FAULTS,
    MISALIGNMENT_FAULTS,
    expected_problems,
    expected_turn_count,
    is_faulty_conversation,
    numbers_in_name,
    problem_keys,
    script_texts,
    write_conversation,
)
from csm_synthetic.corpus import ProblemKind, read_corpus
from csm_synthetic.testing.demo import LEFTOVER_FILES

SPELLINGS = {
    "padded": "{turn:03d}_speaker{speaker}.wav",
    "unpadded": "{turn}_speaker{speaker}.wav",
    "segment": "segment_{turn:04d}_speaker{speaker}.wav",
    "padded_spk": "{turn:04d}_spk{speaker}.wav",
    "unpadded_spk": "{turn}_spk{speaker}.wav",
    "flac": "{turn:03d}_speaker{speaker}.flac",
}
TWELVE_SPEAKERS = [1, 2, 1, 1, 2, 1, 2, 2, 1, 2, 1, 2]  # 12 turns: names 1..12 sort as 1, 10, 11, 12, 2, ...


def conversation_by_id(corpus, conversation_id):
    return next((c for c in corpus.conversations if c.conversation_id == conversation_id), None)


# --- the demo corpus: every known fault -------------------------------------------------------------


def test_every_injected_fault_is_reported_with_its_conversation_and_turn(demo, demo_corpus):
    assert problem_keys(demo_corpus.problems) == expected_problems(demo)


def test_leftover_problems_name_the_files(demo, demo_corpus):
    leftover_ids = {f.conversation_id for f in demo.faults if f.kind == "leftover_files"}
    for conversation_id in leftover_ids:
        messages = [
            p.message
            for p in demo_corpus.problems
            if p.conversation_id == conversation_id and p.kind == ProblemKind.UNEXPECTED_FILE
        ]
        for name in LEFTOVER_FILES:
            assert sum(name in message for message in messages) == 1


def test_faults_drop_or_cut_conversations_and_spare_the_rest(demo, demo_corpus):
    for written in demo.conversations:
        conversation = conversation_by_id(demo_corpus, written.conversation_id)
        kept = expected_turn_count(demo, written.conversation_id)
        if kept == 0:
            assert conversation is None, written.conversation_id
        else:
            assert [turn.index for turn in conversation.turns] == list(range(kept)), written.conversation_id
    # the manifest's faulty conversations really lose turns: misalignment ones all, bad-turn ones some
    for fault in demo.faults:
        conversation = conversation_by_id(demo_corpus, fault.conversation_id)
        if fault.kind in MISALIGNMENT_FAULTS:
            assert conversation is None
        elif fault.kind in BAD_TURN_FAULTS:
            assert len(conversation.turns) == fault.turn_index > 0


def test_every_turn_matches_its_file_and_script_line(demo, demo_corpus):
    assert demo_corpus.conversations
    for conversation in demo_corpus.conversations:
        segments = Path(demo.root) / conversation.conversation_id / "segments"
        script = script_texts(segments)
        for turn in conversation.turns:
            assert Path(turn.audio_path).parent == segments
            assert numbers_in_name(turn.audio_path) == (turn.index + 1, turn.speaker + 1)
            assert (turn.speaker + 1, turn.text) == script[turn.index]
            assert turn.text and turn.frames > 0


def test_healthy_conversations_are_complete(demo, demo_corpus):
    healthy = [c for c in demo.conversations if not is_faulty_conversation(c.conversation_id)]
    assert {c.language for c in healthy} == {"en", "de", "fr"}
    for written in healthy:
        conversation = conversation_by_id(demo_corpus, written.conversation_id)
        assert conversation.language == written.language
        assert len(conversation.turns) == written.turns
        assert conversation.duration == pytest.approx(written.seconds, abs=1e-6)


def test_conversations_are_sorted_by_id(demo_corpus):
    ids = [c.conversation_id for c in demo_corpus.conversations]
    assert ids == sorted(ids)


# --- file names and order ---------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_name_spelling_pairs_by_number(tmp_path, spelling):
    write_conversation(tmp_path, "en/show", TWELVE_SPEAKERS, naming=SPELLINGS[spelling])
    corpus = read_corpus(tmp_path)
    assert corpus.problems == ()
    (conversation,) = corpus.conversations
    expected_names = [SPELLINGS[spelling].format(turn=n, speaker=s) for n, s in enumerate(TWELVE_SPEAKERS, 1)]
    assert [Path(turn.audio_path).name for turn in conversation.turns] == expected_names
    assert [turn.frames for turn in conversation.turns] == [240 * n for n in range(1, 13)]
    assert [turn.speaker for turn in conversation.turns] == [s - 1 for s in TWELVE_SPEAKERS]
    assert [turn.text for turn in conversation.turns] == [f"Line {n} of en/show." for n in range(1, 13)]


def test_unpadded_numbers_are_ordered_by_number_not_by_name(tmp_path):
    segments = write_conversation(tmp_path, "en/show", TWELVE_SPEAKERS, naming="{turn}_speaker{speaker}.wav")
    names = [path.name for path in segments.glob("*.wav")]
    assert [numbers_in_name(name)[0] for name in sorted(names)] != list(range(1, 13))  # name order is not turn order
    (conversation,) = read_corpus(tmp_path).conversations
    assert [numbers_in_name(turn.audio_path)[0] for turn in conversation.turns] == list(range(1, 13))
    # each file is paired with its own line: lengths grow with the turn number
    assert [turn.frames for turn in conversation.turns] == sorted(turn.frames for turn in conversation.turns)


def test_mixed_spellings_in_one_conversation(tmp_path):
    segments = write_conversation(tmp_path, "en/show", [1, 2, 1], naming="{turn:03d}_speaker{speaker}.wav")
    (segments / "002_speaker2.wav").rename(segments / "2_spk2.wav")
    (segments / "003_speaker1.wav").rename(segments / "segment_0003_speaker1.wav")
    (conversation,) = read_corpus(tmp_path).conversations
    assert [Path(t.audio_path).name for t in conversation.turns] == [
        "001_speaker1.wav", "2_spk2.wav", "segment_0003_speaker1.wav"
    ]


# --- scripts ----------------------------------------------------------------------------------------


def test_bom_crlf_and_blank_lines(tmp_path):
    script = codecs.BOM_UTF8 + (
        "[1]: Willkommen zu unserer Folge.\r\n"
        "\r\n"
        "   \r\n"
        "[2]:Danke, schön hier zu sein.   \r\n"
        "\r\n"
        "[1]: Es ist 10:30: fangen wir an.\r\n"
        "\r\n"
    ).encode("utf-8")
    write_conversation(tmp_path, "de/show", [1, 2, 1], script=script)
    corpus = read_corpus(tmp_path)
    assert corpus.problems == ()
    (conversation,) = corpus.conversations
    assert [(t.speaker, t.text) for t in conversation.turns] == [
        (0, "Willkommen zu unserer Folge."),
        (1, "Danke, schön hier zu sein."),
        (0, "Es ist 10:30: fangen wir an."),
    ]
    assert conversation.language == "de"


def test_speaker_mapping_is_zero_based(tmp_path):
    write_conversation(tmp_path, "en/show", [2, 1, 2, 2])
    (conversation,) = read_corpus(tmp_path).conversations
    assert [t.speaker for t in conversation.turns] == [1, 0, 1, 1]


@pytest.mark.parametrize("bad_line", ["Speaker 1: hello", "[0]: hello", "[1] hello", "1: hello", "[x]: hello"])
def test_malformed_line_drops_only_its_conversation(tmp_path, bad_line):
    speakers = [1, 2, 1, 2]
    lines = [f"[{s}]: line {n}" for n, s in enumerate(speakers, 1)]
    lines[2] = bad_line
    write_conversation(tmp_path, "en/bad", speakers, script=("\n".join(lines) + "\n").encode())
    write_conversation(tmp_path, "en/good", [1, 2])
    corpus = read_corpus(tmp_path)
    assert [c.conversation_id for c in corpus.conversations] == ["en/good"]
    assert problem_keys(corpus.problems) == {("en/bad", 2, ProblemKind.MALFORMED_LINE): 1}


def test_unreadable_script_drops_the_conversation(tmp_path):
    write_conversation(tmp_path, "en/bad", [1, 2], script=b"[1]: caf\xe9\n[2]: ok\n")  # Latin-1, not UTF-8
    write_conversation(tmp_path, "en/good", [1, 2])
    corpus = read_corpus(tmp_path)
    assert [c.conversation_id for c in corpus.conversations] == ["en/good"]
    assert problem_keys(corpus.problems) == {("en/bad", None, ProblemKind.UNREADABLE_SCRIPT): 1}


def test_conversation_without_turns_is_reported(tmp_path):
    write_conversation(tmp_path, "en/empty", [], script=b"\n\n")
    write_conversation(tmp_path, "en/good", [1, 2])
    corpus = read_corpus(tmp_path)
    assert [c.conversation_id for c in corpus.conversations] == ["en/good"]
    assert problem_keys(corpus.problems) == {("en/empty", None, ProblemKind.EMPTY_CONVERSATION): 1}


# --- audio headers ----------------------------------------------------------------------------------


def test_max_turn_seconds_cuts_before_the_first_long_turn(tmp_path):
    write_conversation(tmp_path, "en/show", [1, 2, 1, 2, 1])  # turn n lasts n * 10 ms
    (conversation,) = read_corpus(tmp_path, max_turn_seconds=0.035).conversations
    assert [t.index for t in conversation.turns] == [0, 1, 2]
    problems = read_corpus(tmp_path, max_turn_seconds=0.035).problems
    assert problem_keys(problems) == {
        ("en/show", 3, ProblemKind.TOO_LONG_AUDIO): 1,
        ("en/show", 3, ProblemKind.TRUNCATED): 1,
    }
    assert len(read_corpus(tmp_path).conversations[0].turns) == 5


def test_first_turn_bad_drops_the_whole_conversation(tmp_path):
    segments = write_conversation(tmp_path, "en/show", [1, 2, 1])
    (segments / "001_speaker1.wav").write_bytes(b"RIFF garbage")
    corpus = read_corpus(tmp_path)
    assert corpus.conversations == ()
    assert problem_keys(corpus.problems) == {
        ("en/show", 0, ProblemKind.UNREADABLE_AUDIO): 1,
        ("en/show", 0, ProblemKind.TRUNCATED): 1,
    }


def test_turn_records_header_facts(tmp_path):
    write_conversation(tmp_path, "en/show", [1, 2], sample_rate=16_000, frames=lambda n: 1600 * n)
    (conversation,) = read_corpus(tmp_path).conversations
    assert [(t.sampling_rate, t.channels, t.frames) for t in conversation.turns] == [(16_000, 1, 1600), (16_000, 1, 3200)]
    assert [t.duration for t in conversation.turns] == [0.1, 0.2]


# --- layout -----------------------------------------------------------------------------------------


def test_layout_languages_depths_and_ids(tmp_path):
    write_conversation(tmp_path, "en/Direct_Show", [1, 2])
    write_conversation(tmp_path, "en/Technology/Weekly/3f2c9a0e", [1, 2])
    write_conversation(tmp_path, "de/Technik/abc", [1])
    write_conversation(tmp_path, "_meta/not_a_language", [1])
    write_conversation(tmp_path, ".cache/hidden", [1])
    (tmp_path / "README.txt").write_text("a file at the root is not a language")
    corpus = read_corpus(tmp_path)
    assert [c.conversation_id for c in corpus.conversations] == [
        "de/Technik/abc", "en/Direct_Show", "en/Technology/Weekly/3f2c9a0e"
    ]
    assert [c.language for c in corpus.conversations] == ["de", "en", "en"]
    assert corpus.languages == ["de", "en"]
    assert [c.conversation_id for c in read_corpus(tmp_path, languages=["en"]).conversations] == [
        "en/Direct_Show", "en/Technology/Weekly/3f2c9a0e"
    ]


def test_ids_sort_as_strings_not_as_path_parts(tmp_path):
    # as path parts, ("en", "a", "c") < ("en", "a-b"); as ids, "en/a-b" < "en/a/c"
    for conversation_id in ("en/a/c", "en/a-b", "en/a.b"):
        write_conversation(tmp_path, conversation_id, [1])
    ids = [c.conversation_id for c in read_corpus(tmp_path).conversations]
    assert ids == sorted(ids) == ["en/a-b", "en/a.b", "en/a/c"]


def test_missing_corpus_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does-not-exist"):
        read_corpus(tmp_path / "does-not-exist")
