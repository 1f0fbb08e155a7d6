"""Hostile input, on real files (issue 11, classes 1-4): corpora assembled with symbolic links (cycles,
folders reached twice, links to nothing), audio whose values or body are broken behind a fine header,
script text holding the tokenizer's special tokens, and arguments that contradict each other.

Every fault is reported by conversation and turn and cuts or drops only its conversation; nothing crashes;
a prepare run over all of them exits 0, verifies, and equals a clean run on the corpus cut as reported.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from conftest import (
    copy_report_as_written,
    expected_prepare_problems,
    is_reported,
    load_script,
    problem_keys,
    write_conversation,
)
from csm_synthetic.builder import corpus_fingerprint, load_turns
from csm_synthetic.corpus import SCRIPT_NAME, ProblemKind, read_corpus, truncation
from csm_synthetic.testing.demo import create_demo_corpus
from csm_synthetic.audio_checks import MAX_ABS_SAMPLE, TurnFault, check_turn_audio
from transforms.core.csm import load_processor, special_tokens_in_texts
from transforms.core.plan import ConversationText, plan_conversation, window_start_column
from transforms.maps import encode_turns, measure_turns
from transforms.pipeline.options import REPORT_NAME
from transforms.pipeline.verify import verify_output

ROOT = Path(__file__).resolve().parents[1]
RATE = 24_000


def link(path: Path, target: Path) -> None:
    """A relative symbolic link at `path` to `target`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, path.parent), path)


def ids(corpus) -> list[str]:
    return [conversation.conversation_id for conversation in corpus.conversations]


# --- 1. corpus traversal ------------------------------------------------------------------------------


def test_linked_language_category_conversation_segments_and_files_are_read(tmp_path):
    shared, root = tmp_path / "shared", tmp_path / "corpus"
    write_conversation(shared, "show_a", [1, 2])
    write_conversation(shared, "category/show_b", [1, 2, 1])
    write_conversation(shared, "elsewhere/show_c", [2, 1])
    write_conversation(shared, "language/show_d", [1])
    files = write_conversation(shared, "files/show_e", [1, 2])
    link(root / "en" / "show_a", shared / "show_a")  # a conversation folder
    link(root / "en" / "Category", shared / "category")  # a category folder
    (root / "en" / "show_c").mkdir(parents=True)
    link(root / "en" / "show_c" / "segments", shared / "elsewhere/show_c/segments")  # a segments/ folder
    link(root / "de", shared / "language")  # a language folder
    for source in sorted(files.iterdir()):  # single files
        link(root / "en" / "show_e" / "segments" / source.name, source)

    corpus = read_corpus(root)
    assert corpus.problems == ()
    assert ids(corpus) == ["de/show_d", "en/Category/show_b", "en/show_a", "en/show_c", "en/show_e"]
    assert [len(c.turns) for c in corpus.conversations] == [1, 3, 2, 2, 2]
    for conversation in corpus.conversations:  # paths keep the links: the id is the path seen from the root
        for turn in conversation.turns:
            assert turn.audio_path.startswith(str(root / conversation.conversation_id / "segments"))
            assert turn.frames == 240 * (turn.index + 1)


def test_link_cycles_are_reported_and_never_followed(tmp_path):
    root = tmp_path / "corpus"
    write_conversation(root, "en/Category/show", [1, 2])
    link(root / "en" / "Category" / "back_to_language", root / "en")
    link(root / "en" / "Category" / "back_to_root", root)
    link(root / "en" / "Category" / "itself", root / "en" / "Category")
    link(root / "fr", root)  # a language folder that is the corpus root

    started = time.perf_counter()
    corpus = read_corpus(root)
    assert time.perf_counter() - started < 5
    assert ids(corpus) == ["en/Category/show"]
    assert problem_keys(corpus.problems) == {
        ("en/Category/back_to_language", None, ProblemKind.SYMLINK_CYCLE): 1,
        ("en/Category/back_to_root", None, ProblemKind.SYMLINK_CYCLE): 1,
        ("en/Category/itself", None, ProblemKind.SYMLINK_CYCLE): 1,
        ("fr", None, ProblemKind.SYMLINK_CYCLE): 1,
    }
    assert all("cycle" in problem.message for problem in corpus.problems)


def test_a_folder_reached_twice_is_read_once_under_its_first_path(tmp_path):
    root = tmp_path / "corpus"
    write_conversation(root, "en/show", [1, 2])
    link(root / "en" / "show_again", root / "en" / "show")
    link(root / "en_copy", root / "en")

    corpus = read_corpus(root)
    assert ids(corpus) == ["en/show"]  # never twice: a split of its own could leak it into test
    assert problem_keys(corpus.problems) == {
        ("en/show_again", None, ProblemKind.DUPLICATE_FOLDER): 1,
        ("en_copy", None, ProblemKind.DUPLICATE_FOLDER): 1,
    }
    assert all("already read as en" in problem.message for problem in corpus.problems)
    assert ids(read_corpus(root, languages=["en_copy"])) == ["en_copy/show"]  # alone, the link is the first path


def test_links_to_nothing_are_reported(tmp_path):
    root = tmp_path / "corpus"
    write_conversation(root, "en/good", [1, 2])
    segments = write_conversation(root, "en/lost_file", [1, 2, 1])
    (segments / "002_speaker2.wav").unlink()
    os.symlink(tmp_path / "unmounted" / "002_speaker2.wav", segments / "002_speaker2.wav")
    os.symlink(tmp_path / "unmounted" / "show", root / "en" / "lost_folder")
    os.symlink(tmp_path / "unmounted" / "de", root / "de")

    corpus = read_corpus(root)
    assert ids(corpus) == ["en/good"]
    assert problem_keys(corpus.problems) == {
        ("en/lost_file", None, ProblemKind.BROKEN_LINK): 1,
        ("en/lost_file", 1, ProblemKind.COUNT_MISMATCH): 1,  # the line has no audio: the conversation is dropped
        ("en/lost_folder", None, ProblemKind.BROKEN_LINK): 1,
        ("de", None, ProblemKind.BROKEN_LINK): 1,
    }
    broken = [problem for problem in corpus.problems if problem.kind == ProblemKind.BROKEN_LINK]
    assert all("unmounted" in problem.message and "does not exist" in problem.message for problem in broken)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may list any folder")
def test_a_folder_that_cannot_be_listed_is_reported(tmp_path):
    root = tmp_path / "corpus"
    write_conversation(root, "en/good", [1, 2])
    write_conversation(root, "en/locked/show", [1, 2])
    write_conversation(root, "en/locked_segments", [1, 2])
    (root / "en" / "locked").chmod(0)
    (root / "en" / "locked_segments" / "segments").chmod(0)
    try:
        corpus = read_corpus(root)
    finally:
        (root / "en" / "locked").chmod(0o755)
        (root / "en" / "locked_segments" / "segments").chmod(0o755)
    assert ids(corpus) == ["en/good"]
    assert problem_keys(corpus.problems) == {
        ("en/locked", None, ProblemKind.UNREADABLE_FOLDER): 1,
        ("en/locked_segments", None, ProblemKind.UNREADABLE_FOLDER): 1,
    }


def test_changed_audio_behind_links_invalidates_the_builder_cache(tmp_path):
    shared, root, cache = tmp_path / "shared", tmp_path / "corpus", str(tmp_path / "cache")
    write_conversation(shared, "show_a", [1, 2])
    write_conversation(shared, "elsewhere/show_b", [1, 2])
    link(root / "en" / "show_a", shared / "show_a")
    (root / "en" / "show_b").mkdir(parents=True)
    link(root / "en" / "show_b" / "segments", shared / "elsewhere/show_b/segments")
    fractions = {"validation_fraction": 0.0, "test_fraction": 0.0}
    before = load_turns(root, cache_dir=cache, **fractions)["train"]
    assert before["duration"] == pytest.approx([0.01, 0.02, 0.01, 0.02])

    for target in (shared / "show_a/segments/002_speaker2.wav", shared / "elsewhere/show_b/segments/002_speaker2.wav"):
        sf.write(target, np.zeros(2400, dtype=np.float32), RATE, subtype="PCM_16")  # 100 ms now
        after = load_turns(root, cache_dir=cache, **fractions)["train"]
        assert after.cache_files != before.cache_files, f"stale cache after changing {target}"
        before = after
    assert before["duration"] == pytest.approx([0.01, 0.1, 0.01, 0.1])


def test_only_what_the_reader_reads_is_fingerprinted(tmp_path, processor_dir):
    """Output and cache folders inside the corpus root, notes and bookkeeping beside the conversations: no new
    fingerprint, so no rebuild of the builder cache; a file the reader reads (even a leftover) changes it."""
    root = tmp_path / "corpus"
    segments = write_conversation(root, "en/show", [1, 2])
    fingerprint = corpus_fingerprint(root, None)

    prepare_main = load_script("prepare_dataset_for_training.py").main
    arguments = ["--input_dir", str(root), "--model_id", processor_dir, "--num_proc", "1",
                 "--cache_dir", str(root / "cache")]
    assert prepare_main([*arguments, "--output_dir", str(root / "prepared")]) == 0
    assert prepare_main([*arguments, "--output_dir", str(root / "en" / "prepared_again")]) == 0
    (root / "_meta").mkdir()
    (root / "_meta" / "diarization.json").write_text("{}")
    (root / "en" / "README.txt").write_text("notes about the language")
    (root / "en" / "Category").mkdir()
    assert corpus_fingerprint(root, None) == corpus_fingerprint(root, ["en"]) == fingerprint

    def cache_files():  # the builder's, its cache inside the corpus root
        return [part.cache_files for part in load_turns(root, cache_dir=str(root / "cache")).values()]

    assert cache_files() == cache_files()  # reused

    (segments / "notes.txt").write_text("reported as an unexpected file")
    assert corpus_fingerprint(root, None) != fingerprint


# --- 2. audio values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "samples, kind",
    [
        (np.array([0.5, -0.5, 1.2, -1.0], dtype=np.float32), None),
        (np.array([MAX_ABS_SAMPLE, -MAX_ABS_SAMPLE], dtype=np.float32), None),
        (np.array([0.1, np.nan, 0.1], dtype=np.float32), ProblemKind.NON_FINITE_AUDIO),
        (np.array([0.1, np.inf], dtype=np.float32), ProblemKind.NON_FINITE_AUDIO),
        (np.array([-np.inf, 9.0], dtype=np.float32), ProblemKind.NON_FINITE_AUDIO),
        (np.array([0.1, 4.01], dtype=np.float32), ProblemKind.OUT_OF_RANGE_AUDIO),
        (np.array([-32767.0, 0.0], dtype=np.float32), ProblemKind.OUT_OF_RANGE_AUDIO),
        (np.zeros(0, dtype=np.float32), ProblemKind.EMPTY_AUDIO),
    ],
)
def test_check_turn_audio(samples, kind):
    fault = check_turn_audio(samples, RATE, "007_speaker1.wav")
    assert (fault.kind if fault else None) == kind
    if fault:
        assert fault.message.startswith("007_speaker1.wav")


def write_float_wav(path: Path, samples: np.ndarray) -> None:
    sf.write(path, samples.astype(np.float32), RATE, subtype="FLOAT")


def damaged_flac(path: Path, seconds: float = 0.5) -> None:
    """A FLAC whose header reads fine and whose frames cannot be decoded."""
    sf.write(path, 0.3 * np.sin(np.arange(int(seconds * RATE)) / 7.0), RATE, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : 2 * len(data) // 3] = np.random.default_rng(0).bytes(len(data) // 3)
    path.write_bytes(bytes(data))


def bad_audio_corpus(root: Path) -> dict[int, str]:
    """One conversation of 6 turns, every other one with broken audio behind a readable header."""
    segments = write_conversation(root, "en/show", [1, 2, 1, 2, 1, 2])
    samples = 0.1 * np.ones(2400)
    samples[100] = np.nan
    write_float_wav(segments / "002_speaker2.wav", samples)
    write_float_wav(segments / "004_speaker2.wav", 0.1 * np.ones(2400) * 32767)
    (segments / "006_speaker2.wav").unlink()
    damaged_flac(segments / "006_speaker2.flac")
    return {1: ProblemKind.NON_FINITE_AUDIO, 3: ProblemKind.OUT_OF_RANGE_AUDIO, 5: ProblemKind.UNREADABLE_AUDIO}


def test_decoding_problems_are_data_in_the_turn_rows_and_bad_turns_are_not_encoded(tmp_path):
    faults = bad_audio_corpus(tmp_path / "corpus")
    corpus = read_corpus(tmp_path / "corpus")
    assert corpus.problems == () and len(corpus.conversations[0].turns) == 6  # the headers are fine
    turns = load_turns(tmp_path / "corpus", cache_dir=str(tmp_path / "cache"), validation_fraction=0, test_fraction=0)

    measured = measure_turns(turns["train"])
    assert measured["problem_kind"] == [faults.get(turn) for turn in range(6)]
    messages = measured["problem"]
    assert "006_speaker2.flac" in messages[5] and "cannot decode" in messages[5]
    assert "002_speaker2.wav" in messages[1] and "NaN" in messages[1]
    assert [messages[turn] is None for turn in range(6)] == [turn not in faults for turn in range(6)]
    assert measured["num_samples"][0] == 240 and measured["num_samples"][5] == 0

    from transforms.testing.offline import build_tiny_codec

    build_tiny_codec().save_pretrained(str(tmp_path / "codec"))
    encoded = encode_turns(turns["train"], str(tmp_path / "codec"), devices="cpu", budget_seconds=0.05)
    assert encoded["problem_kind"] == measured["problem_kind"]
    assert [codes is None for codes in encoded["audio_codes"]] == [turn in faults for turn in range(6)]


# --- 2 and 3. the plan's cut -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processor(processor_dir):
    return load_processor(processor_dir)


def test_special_tokens_in_texts(processor):
    texts = [
        "A plain line, with <angle> brackets and a | bar.",
        "Play the clip <|AUDIO|> now.",
        "<|begin_of_text|>[1]Hello<|end_of_text|>",
        "Looks like one: <| AUDIO |>, <|AUDIO, AUDIO|>.",
        "<|audio_eos|><|AUDIO|><|audio_eos|>",
    ]
    assert special_tokens_in_texts(processor, texts) == [
        [], ["<|AUDIO|>"], ["<|begin_of_text|>", "<|end_of_text|>"], [], ["<|audio_eos|>", "<|AUDIO|>"]
    ]


def conversation_of(texts: list[str], first_turn: int = 0) -> ConversationText:
    return ConversationText("en/show", "en", list(range(first_turn, first_turn + len(texts))),
                            [turn % 2 for turn in range(len(texts))], texts)


def test_the_plan_cuts_a_conversation_at_its_first_bad_turn(processor):
    texts = [f"Line {n}." for n in range(5)]
    lengths = [4800] * 5
    whole = plan_conversation(processor, conversation_of(texts), lengths, max_history=None, max_tokens=2048)
    assert whole.problems == [] and len(whole.windows) == 5

    nan = TurnFault(ProblemKind.NON_FINITE_AUDIO, "003_speaker2.wav holds 1 NaN or infinite samples")
    texts[4] = "Here <|AUDIO|> is."
    plan = plan_conversation(processor, conversation_of(texts), lengths, None, 2048, [None, None, nan, None, None])
    assert [(p.turn_index, p.kind) for p in plan.problems] == [
        (2, ProblemKind.NON_FINITE_AUDIO), (2, ProblemKind.TRUNCATED)
    ]
    assert plan.problems[1] == truncation("en/show", 2, 5)  # the reader's record, word for word
    assert plan.windows == whole.windows[:2]  # the turns before the cut are planned as without it
    assert window_start_column(plan.steps, 5) == [0, 0, -1, -1, -1]
    assert plan.message_tokens.tolist()[:2] == whole.message_tokens.tolist()[:2]
    assert plan.message_tokens.tolist()[2:] == [0, 0, 0]

    texts[1] = "<|begin_of_text|> again"  # an earlier bad turn cuts earlier; at one turn both faults are reported
    plan = plan_conversation(processor, conversation_of(texts), lengths, None, 2048, [None, nan, None, None, None])
    assert [(p.turn_index, p.kind) for p in plan.problems] == [
        (1, ProblemKind.NON_FINITE_AUDIO), (1, ProblemKind.SPECIAL_TOKEN_IN_TEXT), (1, ProblemKind.TRUNCATED)
    ]
    assert "'<|begin_of_text|>'" in plan.problems[1].message and "script line 2" in plan.problems[1].message
    assert [window.target for window in plan.windows] == [0]

    plan = plan_conversation(processor, conversation_of(["<|AUDIO|>", "fine"], first_turn=3), [4800] * 2, None, 2048)
    assert plan.windows == [] and window_start_column(plan.steps, 2) == [-1, -1]
    assert [(p.turn_index, p.message) for p in plan.problems][-1] == (3, "kept turns 0-2, dropped turns 3-4 of 5")


# --- the whole pipeline on every input fault -----------------------------------------------------------


def add_traversal_faults(root: Path, healthy_id: str) -> dict:
    """Faults the demo corpus does not have; returns what a run must report for them."""
    os.symlink(root / "_unmounted_storage" / "show", root / "en" / "Faulty" / "dangling")
    link(root / "en" / "Faulty" / "linked_twice", root / healthy_id)
    return {
        ("en/Faulty/dangling", None, ProblemKind.BROKEN_LINK): 1,
        ("en/Faulty/linked_twice", None, ProblemKind.DUPLICATE_FOLDER): 1,
    }


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """A corpus with a conversation per input fault (the demo's faults plus a few made here)."""
    root = tmp_path_factory.mktemp("faulty") / "corpus"
    demo = create_demo_corpus(root, languages=("en",), conversations_per_language=1, turns=(3, 4),
                              seconds=(0.2, 0.3), with_faults=True)
    expected = expected_prepare_problems(demo)
    expected.update(add_traversal_faults(root, demo.conversations[0].conversation_id))
    return demo, expected


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory) -> str:
    from transforms.testing.offline import build_tiny_codec

    folder = tmp_path_factory.mktemp("codec")
    build_tiny_codec().save_pretrained(str(folder))
    return str(folder)


def prepare_arguments(corpus: Path, output: Path, processor_dir: str, cache: Path, sample_format: str,
                      codec_dir: str) -> list[str]:
    arguments = ["--input_dir", str(corpus), "--output_dir", str(output), "--model_id", processor_dir,
                 "--cache_dir", str(cache), "--max_history", "2", "--batch_size", "3", "--num_proc", "1",
                 "--validation_fraction", "0.2", "--test_fraction", "0.2", "--format", sample_format,
                 "--no_quality_checks"]  # the demo's turns are short, its texts unrelated to them (issue 13's checks)
    if sample_format == "codes":
        arguments += ["--codec_model_id", codec_dir, "--device", "cpu"]
    return arguments


def cut_copy(report: dict, corpus_root: Path, copy_root: Path) -> None:
    """The corpus as the report says it was used: each conversation the reader kept, cut before the first turn
    of its `conversation_truncated` records, as plain files (no links, no leftovers)."""
    cuts: dict[str, int] = {}
    for problem in report["problems"]:
        if problem["kind"] == ProblemKind.TRUNCATED:
            cuts[problem["conversation_id"]] = min(problem["turn_index"], cuts.get(problem["conversation_id"], 10**9))
    for conversation in read_corpus(corpus_root).conversations:
        turns = conversation.turns[: cuts.get(conversation.conversation_id, len(conversation.turns))]
        if not turns:
            continue
        segments = copy_root / conversation.conversation_id / "segments"
        segments.mkdir(parents=True)
        (segments / SCRIPT_NAME).write_text("".join(f"[{t.speaker + 1}]: {t.text}\n" for t in turns), encoding="utf-8")
        for turn in turns:
            shutil.copyfile(turn.audio_path, segments / Path(turn.audio_path).name)


def tables(output: Path) -> dict:
    loaded = datasets.load_from_disk(str(output))
    return {split: loaded[split].data.table for split in loaded}


@pytest.fixture(scope="module")
def faulty_runs(faulty, processor_dir, codec_dir, tmp_path_factory):
    """`run(format)`: a prepare run over the faulty corpus, by the command (work folder, arguments, report)."""
    demo, _ = faulty
    made = {}

    def run(sample_format: str) -> tuple[Path, list[str], dict]:
        if sample_format not in made:
            work = tmp_path_factory.mktemp(f"run_{sample_format}")
            arguments = prepare_arguments(demo.root, work / "out", processor_dir, work / "cache", sample_format,
                                          codec_dir)
            assert load_script("prepare_dataset_for_training.py").main(arguments) == 0
            made[sample_format] = work, arguments, json.loads((work / "out" / REPORT_NAME).read_text(encoding="utf-8"))
        return made[sample_format]

    return run


FORMATS = ["processor", "codes"]


@pytest.mark.parametrize("sample_format", FORMATS)
def test_every_input_fault_is_reported_with_conversation_and_turn(faulty, faulty_runs, sample_format):
    demo, expected = faulty
    _, _, report = faulty_runs(sample_format)
    assert problem_keys(report["problems"]) == expected
    assert all(p["problem"] for p in report["problems"])
    for fault in filter(is_reported, demo.faults):
        assert any(p["conversation_id"] == fault.conversation_id and p["turn_index"] == fault.turn_index
                   for p in report["problems"]), fault
    in_order = [p["conversation_id"] for p in report["problems"]]
    assert in_order == sorted(in_order)
    assert report["counts"]["problems"] == len(report["problems"])
    assert report["counts"]["samples"] + report["counts"]["skipped_samples"] == report["counts"]["turns"]


@pytest.mark.parametrize("sample_format", FORMATS)
def test_the_output_verifies_and_equals_a_clean_run_on_the_cut_corpus(faulty, faulty_runs, processor_dir, codec_dir,
                                                                       tmp_path, capsys, sample_format):
    demo, _ = faulty
    work, _, report = faulty_runs(sample_format)
    assert load_script("verify_shard.py").main(["--output_dir", str(work / "out")]) == 0
    assert "OK: all" in capsys.readouterr().out

    cut_copy(report, demo.root, tmp_path / "clean")
    arguments = prepare_arguments(tmp_path / "clean", tmp_path / "out", processor_dir, work / "cache", sample_format,
                                  codec_dir)
    assert load_script("prepare_dataset_for_training.py").main(arguments) == 0
    clean_report = json.loads((tmp_path / "out" / REPORT_NAME).read_text(encoding="utf-8"))
    assert clean_report["problems"] == []
    faulty_tables, clean_tables = tables(work / "out"), tables(tmp_path / "out")
    assert faulty_tables.keys() == clean_tables.keys()
    for split, table in clean_tables.items():
        assert faulty_tables[split].num_rows == table.num_rows > 0
        assert faulty_tables[split].equals(table), split
    for count in ("samples", "turns", "skipped_samples"):
        assert clean_report["counts"][count] == report["counts"][count]


def test_resume_reuses_the_faults_as_data(faulty_runs):
    work, arguments, report = faulty_runs("processor")
    before = tables(work / "out")
    assert load_script("prepare_dataset_for_training.py").main([*arguments, "--resume"]) == 0
    resumed = json.loads((work / "out" / REPORT_NAME).read_text(encoding="utf-8"))
    assert resumed["problems"] == report["problems"]
    after = tables(work / "out")
    assert all(after[split].equals(before[split]) for split in before)


# --- verify: values ------------------------------------------------------------------------------------


def tampered(output: Path, target: Path, column: str, change) -> Path:
    """A copy of a prepared output whose second train row has `column` changed by `change` (a numpy function)."""
    loaded = datasets.load_from_disk(str(output))

    def tamper(row, index):
        return {column: change(row[column])} if index == 1 else {}

    features = loaded["train"].features
    loaded["train"] = loaded["train"].with_format("numpy").map(tamper, with_indices=True, features=features)
    loaded.save_to_disk(str(target))
    copy_report_as_written(output, target)
    return target


def set_sample(position, value):
    def change(samples):
        samples = np.array(samples, copy=True)
        samples.reshape(-1)[position] = value  # a row's input_values are (1, samples), as the processor gives them
        return samples.tolist()
    return change


def set_code(segment, frame, codebook, value):
    def change(segments):
        segments = [np.array(codes, copy=True) for codes in segments]
        segments[segment][frame, codebook] = value
        return [codes.tolist() for codes in segments]
    return change


BEYOND = "samples are NaN, infinite or beyond ±4"


@pytest.mark.parametrize(
    "sample_format, column, change, reason",
    [
        ("processor", "input_values", set_sample(3, np.nan), f"input_values: 1 {BEYOND} (1 "),
        ("processor", "input_values", set_sample(slice(0, 5), -np.inf), f"5 {BEYOND} (5 "),
        ("processor", "input_values", set_sample(7, 1.5 * MAX_ABS_SAMPLE), f"1 {BEYOND} (0 "),
        ("codes", "audio_codes", set_code(0, 0, 0, 64), "1 codes outside [0, 64)"),
        ("codes", "audio_codes", set_code(-1, slice(None), 1, -1), "codes outside [0, 64)"),
    ],
)
def test_verify_fails_rows_with_broken_values(faulty_runs, tmp_path, sample_format, column, change, reason):
    work, _, _ = faulty_runs(sample_format)
    result = verify_output(tampered(work / "out", tmp_path / "broken", column, change))
    assert not result.ok and result.error_count == 1, result.errors
    assert reason in result.errors[0] and result.errors[0].startswith("train: ")


# --- 4. argument consistency ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small") / "corpus"
    write_conversation(root, "en/show", [1, 2, 1])
    return root


def refused(arguments: list[str], capsys) -> str:
    assert load_script("prepare_dataset_for_training.py").main(arguments) == 2
    return capsys.readouterr().err


def test_a_sampling_rate_other_than_the_processors_is_refused(small_corpus, processor_dir, tmp_path, capsys):
    output = tmp_path / "out"
    error = refused(["--input_dir", str(small_corpus), "--output_dir", str(output), "--model_id", processor_dir,
                     "--cache_dir", str(tmp_path / "cache"), "--target_sampling_rate", "16000"], capsys)
    assert "--target_sampling_rate 16000" in error and "24000 Hz" in error and processor_dir in error
    assert not output.exists()


def test_a_codec_of_another_rate_is_refused(small_corpus, processor_dir, tmp_path, capsys):
    from transformers import MimiModel

    from transforms.testing.offline import tiny_codec_config

    config = tiny_codec_config()
    config.sampling_rate = 16_000
    MimiModel(config).save_pretrained(str(tmp_path / "codec16k"))
    error = refused(["--input_dir", str(small_corpus), "--output_dir", str(tmp_path / "out"),
                     "--model_id", processor_dir, "--cache_dir", str(tmp_path / "cache"), "--format", "codes",
                     "--device", "cpu", "--codec_model_id", str(tmp_path / "codec16k")], capsys)
    assert "--codec_model_id" in error and "16000 Hz" in error and "--target_sampling_rate is 24000" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["inside", "same"])
def test_a_cache_inside_the_output_is_refused(small_corpus, processor_dir, tmp_path, capsys, where):
    output = tmp_path / "out"
    cache = output / "cache" if where == "inside" else output
    error = refused(["--input_dir", str(small_corpus), "--output_dir", str(output), "--model_id", processor_dir,
                     "--cache_dir", str(cache)], capsys)
    assert f"--cache_dir {str(cache)!r} lies inside --output_dir {str(output)!r}" in error
    assert not output.exists()


def test_a_cache_that_cannot_be_written_is_refused(small_corpus, processor_dir, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    output, cache = tmp_path / "out", tmp_path / "a_file" / "cache"
    error = refused(["--input_dir", str(small_corpus), "--output_dir", str(output), "--model_id", processor_dir,
                     "--cache_dir", str(cache)], capsys)
    assert f"cannot write to --cache_dir {str(cache)!r}" in error
    assert not output.exists() and "Traceback" not in error
