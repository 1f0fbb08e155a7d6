"""inspect_corpus: the summary library and the command-line script, run as a user would run it."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import (
    BAD_TURN_FAULTS,
    CYCLE_FAULTS,
    MISALIGNMENT_FAULTS,
    expected_problems,
    problem_keys,
    write_conversation,
)
from csm_synthetic.inspect import TOTAL, format_summary, summarize_corpus
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.splits import SPLITS, split_of

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "inspect_corpus.py"
FRACTIONS = {"validation_fraction": 0.3, "test_fraction": 0.2}


def run_script(*args: str) -> subprocess.CompletedProcess:
    """The script as a user runs it, in its own process."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def load_script():
    """The script's module, to call its `main` in this process (a fresh interpreter costs seconds)."""
    spec = importlib.util.spec_from_file_location("inspect_corpus_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script_run(demo, tmp_path_factory):
    json_path = tmp_path_factory.mktemp("inspect") / "out" / "summary.json"
    result = run_script("--input_dir", str(demo.root), "--json", str(json_path),
                        "--validation_fraction", str(FRACTIONS["validation_fraction"]),
                        "--test_fraction", str(FRACTIONS["test_fraction"]))
    return result, json_path


@pytest.fixture(scope="module")
def script_summary(script_run):
    result, json_path = script_run
    assert result.returncode == 0, result.stderr
    return json.loads(json_path.read_text(encoding="utf-8"))


def test_script_reports_every_injected_fault(demo, script_summary):
    problems = script_summary["problems"]
    assert all(set(p) == {"conversation_id", "turn_index", "kind", "problem"} for p in problems)
    assert all(isinstance(p["problem"], str) and p["problem"] for p in problems)
    assert problem_keys(problems) == expected_problems(demo)
    assert script_summary["problems_by_kind"] == dict(Counter(p["kind"] for p in problems))


def test_script_counts_match_the_reader(demo, demo_corpus, script_summary):
    turns = [t for c in demo_corpus.conversations for t in c.turns]
    assert script_summary["conversations"] == len(demo_corpus.conversations)
    assert script_summary["turns"] == len(turns)
    assert script_summary["hours"] == pytest.approx(sum(t.duration for t in turns) / 3600)

    by_split = Counter()
    for conversation in demo_corpus.conversations:
        split = split_of(conversation.conversation_id, **FRACTIONS)
        by_split[(conversation.language, split)] += len(conversation.turns)
    for language in demo_corpus.languages:
        for split in SPLITS:
            assert script_summary["by_language"][language][split]["turns"] == by_split[(language, split)]
    for split in SPLITS:
        assert script_summary["by_split"][split]["turns"] == sum(by_split[(lang, split)] for lang in demo_corpus.languages)

    dropped = {f.conversation_id for f in demo.faults if f.kind in MISALIGNMENT_FAULTS | CYCLE_FAULTS}
    truncated = {f.conversation_id for f in demo.faults if f.kind in BAD_TURN_FAULTS}
    assert set(script_summary["dropped_conversations"]) == dropped
    assert set(script_summary["truncated_conversations"]) == truncated
    assert script_summary["settings"] == {**FRACTIONS, "max_turn_seconds": 60.0}


def test_script_prints_a_summary(script_run, script_summary):
    result, json_path = script_run
    out = result.stdout
    assert f"{script_summary['conversations']} usable conversations" in out
    assert f"{script_summary['turns']} turns" in out
    for kind, count in script_summary["problems_by_kind"].items():
        assert any(line.split() == [kind, str(count)] for line in out.splitlines())
    assert str(json_path) in out
    assert result.stderr == ""


def test_script_refuses_a_missing_folder(tmp_path, capsys):
    assert load_script().main(["--input_dir", str(tmp_path / "no-such-corpus")]) == 2
    captured = capsys.readouterr()
    assert "no-such-corpus" in captured.err and "does not exist" in captured.err and captured.out == ""


def test_script_refuses_bad_fractions_and_limits(demo, capsys):
    script = load_script()
    assert script.main(["--input_dir", str(demo.root), "--validation_fraction", "0.7", "--test_fraction", "0.5"]) == 2
    assert "split fractions" in capsys.readouterr().err
    assert script.main(["--input_dir", str(demo.root), "--max_turn_seconds", "0"]) == 2
    assert "max_turn_seconds" in capsys.readouterr().err


def test_script_max_turn_seconds(tmp_path, capsys):
    write_conversation(tmp_path / "corpus", "en/show", [1, 2, 1, 2])  # turn n lasts n * 10 ms
    json_path = tmp_path / "summary.json"
    args = ["--input_dir", str(tmp_path / "corpus"), "--json", str(json_path), "--max_turn_seconds", "0.025"]
    assert load_script().main(args) == 0
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert summary["turns"] == 2 and summary["truncated_conversations"] == ["en/show"]
    assert problem_keys(summary["problems"]) == {
        ("en/show", 2, "too_long_audio"): 1,
        ("en/show", 2, "conversation_truncated"): 1,
    }
    assert "2 turns" in capsys.readouterr().out


# --- the library ------------------------------------------------------------------------------------


def test_summary_splits_match_the_builder(demo_corpus, demo_dataset):
    summary = summarize_corpus(demo_corpus)  # the builder's default fractions
    for split in SPLITS:
        rows = demo_dataset[split].num_rows if split in demo_dataset else 0
        assert summary["by_split"][split]["turns"] == rows
    totals = [summary["by_language"][lang][TOTAL] for lang in summary["by_language"]]
    assert sum(t["turns"] for t in totals) == summary["turns"]
    assert sum(t["conversations"] for t in totals) == summary["conversations"]


def test_summary_speakers_formats_and_longest_turns(demo_corpus):
    turns = [(c.conversation_id, t) for c in demo_corpus.conversations for t in c.turns]
    summary = summarize_corpus(demo_corpus, longest_turns=5)
    assert summary["speakers"]["turns_by_speaker"] == {
        str(s): n for s, n in sorted(Counter(t.speaker for _, t in turns).items())
    }
    assert set(summary["speakers"]["turns_by_speaker"]) == {"0", "1"}
    assert sum(summary["speakers"]["conversations_by_speaker_count"].values()) == len(demo_corpus.conversations)
    assert sum(summary["audio_formats"].values()) == len(turns)

    longest = summary["longest_turns"]
    assert len(longest) == 5
    assert [t["duration"] for t in longest] == sorted((t.duration for _, t in turns), reverse=True)[:5]
    assert json.loads(json.dumps(summary)) == summary  # plain JSON data


def test_format_summary_lists_the_first_problems_then_a_count(demo_corpus):
    summary = summarize_corpus(demo_corpus)
    text = format_summary(summary, max_problems=3)
    listed = [line for line in text.splitlines() if re.search(r": \[\w+\] ", line)]
    assert len(listed) == 3
    for line, problem in zip(listed, summary["problems"]):
        assert problem["conversation_id"] in line and problem["problem"] in line and problem["kind"] in line
    assert f"... and {len(summary['problems']) - 3} more" in text


def test_summary_of_a_corpus_without_problems(tmp_path):
    write_conversation(tmp_path, "fr/a", [1, 2, 2])
    from csm_synthetic.corpus import read_corpus

    summary = summarize_corpus(read_corpus(tmp_path), CorpusSettings(validation_fraction=0.0, test_fraction=0.0))
    assert summary["problems"] == [] and summary["problems_by_kind"] == {}
    assert summary["by_language"]["fr"]["train"] == {"conversations": 1, "turns": 3, "hours": pytest.approx(0.06 / 3600)}
    assert summary["speakers"]["conversations_by_speaker_count"] == {"2": 1}
    assert "problems: 0" in format_summary(summary)


def test_measures_leave_out_exactly_the_turns_whose_samples_prepare_rejects(demo, demo_corpus):
    """Undecodable, NaN/infinite and beyond-±4 audio (`check_turn_audio`, prepare's rule): not measured."""
    from conftest import broken_audio_turns
    from csm_synthetic.inspect import measure_corpus

    measured = measure_corpus(demo_corpus, progress=False)
    turns = {(conversation.conversation_id, turn.index) for conversation in demo_corpus.conversations
             for turn in conversation.turns}
    broken = broken_audio_turns(demo) & turns
    kinds = {fault.kind for fault in demo.faults if (fault.conversation_id, fault.turn_index) in broken}
    assert kinds == {"non_finite_audio", "out_of_range_audio", "corrupt_flac"}
    assert sum(len(values["duration"]) for values in measured.values()) == len(turns) - len(broken)
