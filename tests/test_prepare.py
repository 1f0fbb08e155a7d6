"""The prepare pipeline end to end: output layout, report, resume after SIGKILL, refusals, bad input."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from conftest import copy_report_as_written, is_reported, load_script, own_progress_bar_lock
from csm_synthetic.testing.demo import create_demo_corpus
from csm_synthetic.errors import InputError
from csm_synthetic.settings import CorpusSettings
from transforms.core.quality import QualityChecks
from transforms.pipeline.options import ARGUMENTS_NAME, REPORT_NAME, PrepareOptions
from transforms.pipeline.prepare import prepare
from transforms.pipeline.verify import verify_output

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "prepare_dataset_for_training.py"


@pytest.fixture(scope="module")
def faulty_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty") / "corpus"
    return create_demo_corpus(root, languages=("en", "de"), conversations_per_language=3, turns=(4, 7),
                              seconds=(0.5, 2.0), with_faults=True)


def options_for(corpus_root, output, processor_dir, cache, **overrides):
    values = dict(input_dir=str(corpus_root), output_dir=str(output), model_id=processor_dir, cache_dir=str(cache),
                  max_history=2, batch_size=2, num_proc=1,
                  corpus=CorpusSettings(validation_fraction=0.2, test_fraction=0.2),
                  quality=QualityChecks.off())  # the demo's texts are unrelated to its audio (tests/test_quality.py)
    values.update(overrides)
    return PrepareOptions(**values)


@pytest.fixture(scope="module")
def reference(faulty_corpus, processor_dir, tmp_path_factory):
    """An uninterrupted run: its output and report."""
    work = tmp_path_factory.mktemp("reference")
    options = options_for(faulty_corpus.root, work / "out", processor_dir, work / "cache")
    return options, prepare(options)


def tables(output_dir):
    loaded = datasets.load_from_disk(str(output_dir))
    return {split: loaded[split].data.table for split in loaded}


def test_output_is_a_dataset_dict_sharded_by_batch_size(reference):
    options, report = reference
    loaded = datasets.load_from_disk(options.output_dir)
    assert isinstance(loaded, datasets.DatasetDict)
    assert set(loaded) == set(report["counts"]["by_split"])
    for split, dataset in loaded.items():
        conversations = report["counts"]["by_split"][split]["conversations"]
        files = sorted((Path(options.output_dir) / split).glob("data-*.arrow"))
        assert len(files) == -(-conversations // options.batch_size)
        assert len(set(dataset["conversation_id"])) == conversations
        assert len(dataset) == report["counts"]["by_split"][split]["samples"]


def test_every_row_verifies(reference):
    options, _ = reference
    result = verify_output(options.output_dir)
    assert result.ok, result.errors
    assert sum(result.rows.values()) > 0


def test_report_holds_every_corpus_fault_and_the_arguments(reference, faulty_corpus):
    options, report = reference
    on_disk = json.loads((Path(options.output_dir) / REPORT_NAME).read_text())
    assert on_disk == report
    reported = {(p["conversation_id"], p["turn_index"]) for p in report["problems"]}
    for fault in filter(is_reported, faulty_corpus.faults):  # a linked conversation is no fault
        assert (fault.conversation_id, fault.turn_index) in reported, fault
    assert all(set(p) >= {"conversation_id", "turn_index", "problem", "kind"} for p in report["problems"])
    assert report["arguments"]["max_history"] == options.max_history
    assert report["arguments"]["model_id"] == options.model_id
    assert {"datasets", "transformers", "torch"} <= set(report["versions"])
    assert report["audio"]["turn_seconds"]["max_seconds"] >= report["audio"]["turn_seconds"]["mean_seconds"] > 0
    assert report["counts"]["samples"] + report["counts"]["skipped_samples"] == report["counts"]["turns"]


def test_skipped_samples_are_reported_with_turn_and_reason(faulty_corpus, processor_dir, tmp_path):
    single_turns = prepare(options_for(faulty_corpus.root, tmp_path / "single", processor_dir, tmp_path / "cache",
                                       max_history=0))
    budget = int(single_turns["tokens"]["sample_tokens"]["max_tokens"]) - 1  # the longest turn no longer fits
    report = prepare(options_for(faulty_corpus.root, tmp_path / "out", processor_dir, tmp_path / "cache", max_tokens=budget))
    assert report["skipped"], "the longest turn must be skipped"
    assert all(s["reason"] == "too_many_tokens" and isinstance(s["turn_index"], int) for s in report["skipped"])
    assert report["counts"]["samples"] + len(report["skipped"]) == report["counts"]["turns"]
    assert verify_output(tmp_path / "out").ok


def test_output_shares_the_cached_shards_instead_of_copying_them(reference):
    options, _ = reference
    for data_file in Path(options.output_dir).rglob("data-*.arrow"):
        assert data_file.stat().st_nlink == 2, f"{data_file} was copied, not linked"


def test_rerun_with_same_arguments_reuses_the_datasets_cache(reference, tmp_path):
    options, _ = reference
    again = PrepareOptions(**{**options.__dict__, "output_dir": str(tmp_path / "again")})
    prepare(again)
    first = {f.relative_to(options.output_dir): f.stat().st_ino for f in Path(options.output_dir).rglob("*.arrow")}
    second = {f.relative_to(again.output_dir): f.stat().st_ino for f in Path(again.output_dir).rglob("*.arrow")}
    assert first == second, "the second run wrote new shards instead of reusing the cached ones"


def _prepare_in_child(options, resume):
    own_progress_bar_lock()
    prepare(options, resume=resume)


def kill_during_run(options, kill_after_seconds):
    """Start prepare in a forked process and SIGKILL it after `kill_after_seconds` (or when it ends)."""
    child = multiprocessing.get_context("fork").Process(target=_prepare_in_child, args=(options, False))
    child.start()
    child.join(kill_after_seconds)
    killed = child.is_alive()
    if killed:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    return killed


@pytest.mark.parametrize("moment", [0.05, 0.25, 0.45, 0.65])
def test_resume_after_sigkill_gives_the_uninterrupted_output(reference, tmp_path, moment):
    """SIGKILL at a share `moment` of an uninterrupted run's duration (earlier if the run beat it), then --resume."""
    reference_options, reference_report = reference
    for attempt in range(4):
        options = PrepareOptions(**{**reference_options.__dict__, "output_dir": str(tmp_path / f"out{attempt}"),
                                    "cache_dir": str(tmp_path / f"cache{attempt}")})
        if kill_during_run(options, moment / 2**attempt * reference_report["elapsed_seconds"]):
            break
    else:
        pytest.fail("every run ended before it could be killed")
    if (Path(options.output_dir) / ARGUMENTS_NAME).exists():
        with pytest.raises(InputError, match="--resume"):
            prepare(options)  # an interrupted output is never clobbered without --resume
    prepare(options, resume=True)
    resumed, uninterrupted = tables(options.output_dir), tables(reference_options.output_dir)
    assert resumed.keys() == uninterrupted.keys()
    for split in uninterrupted:
        assert resumed[split].equals(uninterrupted[split]), split
    assert verify_output(options.output_dir).ok


def test_resume_with_different_arguments_is_refused(reference, tmp_path):
    options, _ = reference
    copy = PrepareOptions(**{**options.__dict__, "output_dir": str(tmp_path / "out")})
    prepare(copy)
    changed = PrepareOptions(**{**copy.__dict__, "max_history": 4})
    with pytest.raises(InputError, match="max_history: was 2, now 4"):
        prepare(changed, resume=True)
    prepare(changed, overwrite=True)
    assert json.loads((Path(copy.output_dir) / REPORT_NAME).read_text())["arguments"]["max_history"] == 4


def test_overwrite_never_deletes_a_folder_this_tool_did_not_write(reference, tmp_path):
    options, _ = reference
    foreign = tmp_path / "my_thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    with pytest.raises(InputError, match="not written by this tool"):
        prepare(PrepareOptions(**{**options.__dict__, "output_dir": str(foreign)}), overwrite=True)
    assert (foreign / "chapter1.tex").read_text() == "precious"


def test_script_refuses_an_existing_output_without_resume_or_overwrite(reference, capsys):
    options, _ = reference
    before = sorted(p.name for p in Path(options.output_dir).iterdir())
    main = load_script(SCRIPT.name).main
    status = main(["--input_dir", options.input_dir, "--output_dir", options.output_dir, "--model_id", options.model_id])
    assert status == 2
    assert "already holds files: pass --overwrite to replace it, --resume" in capsys.readouterr().err
    assert sorted(p.name for p in Path(options.output_dir).iterdir()) == before


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_input", "does not exist"),
        ("no_conversations", "no usable conversation"),
        ("bad_processor", "cannot load a CSM processor"),
        ("unwritable_output", "cannot write to --output_dir"),
    ],
)
def test_bad_input_fails_clearly_before_any_work(case, expected, tmp_path, processor_dir, faulty_corpus, capsys):
    corpus, model_id, output = str(faulty_corpus.root), processor_dir, tmp_path / "out"
    if case == "missing_input":
        corpus = str(tmp_path / "nowhere")
    elif case == "no_conversations":
        (tmp_path / "empty" / "en" / "Topic").mkdir(parents=True)
        corpus = str(tmp_path / "empty")
    elif case == "bad_processor":
        model_id = str(tmp_path / "no_such_processor")
    else:
        (tmp_path / "a_file").write_text("")
        output = tmp_path / "a_file" / "out"
    main = load_script(SCRIPT.name).main
    status = main(["--input_dir", corpus, "--output_dir", str(output), "--model_id", model_id,
                   "--cache_dir", str(tmp_path / "cache")])
    assert status == 2
    assert expected in capsys.readouterr().err
    assert not output.exists()


def test_script_runs_from_the_command_line_with_the_original_flags(faulty_corpus, processor_dir, tmp_path):
    command = [sys.executable, str(SCRIPT), "--input_dir", str(faulty_corpus.root), "--output_dir", str(tmp_path / "out"),
               "--batch_size", "3", "--max_history", "None", "--target_sampling_rate", "24000",
               "--model_id", processor_dir, "--cache_dir", str(tmp_path / "cache")]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Prepared" in finished.stdout and "report:" in finished.stdout
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert report["arguments"]["max_history"] is None and report["counts"]["problems"] > 0
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert time.perf_counter() - started < 120


def tampered_copy(output_dir, target, column, tamper):
    """A copy of a prepared output whose first train row has `column` changed by `tamper`, its files recorded
    in the report as written (a wrong row that a faulty prepare wrote: the checksums cannot tell)."""
    loaded = datasets.load_from_disk(str(output_dir))

    def change_first(row, index):
        return {column: tamper(row[column])} if index == 0 else {}

    loaded["train"] = loaded["train"].map(change_first, with_indices=True)
    loaded.save_to_disk(str(target))
    copy_report_as_written(output_dir, target)
    return target


@pytest.mark.parametrize(
    "column, tamper, reason",
    [
        ("labels", lambda labels: [5] + list(labels[1:]), "labels on 1 non-audio positions"),
        ("input_ids", lambda ids: list(ids) + [ids[-1]], "lengths differ"),
        ("input_values_cutoffs", lambda cutoffs: [c - 1920 for c in cutoffs], "do not cut"),
        ("num_context_turns", lambda n: n + 1, "context turns + the target"),
    ],
)
def test_verify_finds_a_broken_row(reference, tmp_path, column, tamper, reason):
    options, _ = reference
    broken = tampered_copy(options.output_dir, tmp_path / "broken", column, tamper)
    result = verify_output(broken)
    assert not result.ok and result.error_count == 1
    assert reason in result.errors[0] and "train: " in result.errors[0]


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    from transforms.testing.offline import build_tiny_codec

    folder = tmp_path_factory.mktemp("codec")
    build_tiny_codec().save_pretrained(folder)
    return str(folder)


def test_codes_format_has_the_processor_formats_tokens_and_verifies(reference, codec_dir, tmp_path):
    options, report = reference
    codes_options = PrepareOptions(**{**options.__dict__, "output_dir": str(tmp_path / "codes"),
                                      "format": "codes", "codec_model_id": codec_dir})
    codes_report = prepare(codes_options)
    assert codes_report["counts"] == report["counts"] and codes_report["skipped"] == report["skipped"]
    assert verify_output(codes_options.output_dir).ok
    codes, processed = datasets.load_from_disk(codes_options.output_dir), datasets.load_from_disk(options.output_dir)
    for split in processed:
        kept = ["conversation_id", "turn_index", "num_context_turns", "num_tokens", "input_ids", "attention_mask"]
        assert codes[split].select_columns(kept).data.table.equals(processed[split].select_columns(kept).data.table)
        row = codes[split][0]
        assert len(row["audio_codes"]) == row["num_context_turns"] + 1
    codes_bytes = sum(f.stat().st_size for f in Path(codes_options.output_dir).rglob("*.arrow"))
    processor_bytes = sum(f.stat().st_size for f in Path(options.output_dir).rglob("*.arrow"))
    assert codes_bytes * 50 < processor_bytes


def test_codes_format_refuses_an_unloadable_codec_before_any_work(reference, tmp_path):
    options, _ = reference
    bad = PrepareOptions(**{**options.__dict__, "output_dir": str(tmp_path / "out"), "format": "codes",
                            "codec_model_id": str(tmp_path / "no_codec")})
    with pytest.raises(InputError, match="no_codec"):
        prepare(bad)
    assert not (tmp_path / "out").exists()
