"""Runs that go wrong, on real files and real processes: damaged, truncated or missing output and cache files,
a split that disappears, concurrent runs, SIGTERM and Ctrl-C, a full disk, a crash during --overwrite, the
leftovers of killed runs; for prepare_dataset_for_training.py (both formats) and push_to_hub.py --to_dir.

Children are forked from the test process (its imports are already paid), run a script's `main` with their
stdout and stderr in a file, and get real signals. A full disk is simulated with RLIMIT_FSIZE (EFBIG, the
same path as ENOSPC: an OSError while writing); a real ENOSPC needs a small filesystem, which needs root.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest

from conftest import load_script, own_progress_bar_lock
from csm_synthetic.folders import FolderLock, FolderLocked, locked, sibling
from csm_synthetic.testing.demo import create_demo_corpus
from transforms.pipeline.cache import CHECKSUMS_DIR, RUNS_LOCK, MapCache
from transforms.pipeline.options import ARGUMENTS_NAME, REPORT_NAME
from transforms.pipeline.verify import verify_output

ROOT = Path(__file__).resolve().parents[1]
PREPARE_SCRIPT = ROOT / "scripts" / "prepare_dataset_for_training.py"


prepare_script = load_script("prepare_dataset_for_training.py")
verify_script = load_script("verify_shard.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run_faults") / "corpus"
    create_demo_corpus(root, languages=("en",), conversations_per_language=6, turns=(3, 5), seconds=(0.3, 0.8))
    return root


def prepare_arguments(corpus: Path, output: Path, cache: Path, model_id: str, *extra: str) -> list[str]:
    return [
        "--input_dir", str(corpus), "--output_dir", str(output), "--cache_dir", str(cache), "--model_id", model_id,
        "--batch_size", "2", "--max_history", "2", "--num_proc", "1",
        "--validation_fraction", "0.25", "--test_fraction", "0.25", *extra,
    ]


@pytest.fixture(scope="module")
def reference(corpus, processor_dir, tmp_path_factory) -> Path:
    """An uninterrupted run's output."""
    work = tmp_path_factory.mktemp("reference")
    assert prepare_script.main(prepare_arguments(corpus, work / "out", work / "cache", processor_dir)) == 0
    return work / "out"


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory) -> Path:
    """A corpus whose run lasts long enough (seconds) for a signal to come while it works, even on a busy machine."""
    root = tmp_path_factory.mktemp("run_faults_long") / "corpus"
    create_demo_corpus(root, languages=("en",), conversations_per_language=12, turns=(4, 6), seconds=(1.0, 2.0))
    return root


@pytest.fixture(scope="module")
def long_reference(long_corpus, processor_dir, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("long_reference")
    assert prepare_script.main(prepare_arguments(long_corpus, work / "out", work / "cache", processor_dir)) == 0
    return work / "out"


def tables(output: Path) -> dict:
    loaded = datasets.load_from_disk(str(output))
    return {split: loaded[split].data.table for split in loaded}


def assert_same_output(output: Path, reference: Path) -> None:
    """Same splits and rows as `reference`, every file and row verified, folders as dataset_dict.json says."""
    result = verify_output(output)
    assert result.ok, result.errors
    got, expected = tables(output), tables(reference)
    assert got.keys() == expected.keys()
    for split in expected:
        assert got[split].equals(expected[split]), split
    declared = json.loads((output / "dataset_dict.json").read_text())["splits"]
    assert sorted(path.name for path in output.iterdir() if path.is_dir()) == sorted(declared)
    assert not list(output.parent.glob(f".{output.name}.*")), "a lock or sibling folder was left beside the output"


def maps_folder(cache: Path) -> Path:
    """The folder in which the maps cache their results (the builder's cache folder)."""
    (runs_lock,) = cache.rglob(RUNS_LOCK)
    return runs_lock.parent


def first_data_file(output: Path) -> Path:
    return sorted((output / "train").glob("data-*.arrow"))[0]


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


# --- child processes -----------------------------------------------------------------------------


def start_child(work: Callable[[], int | None], log: Path, *, new_group: bool = False,
                file_size_limit: int | None = None) -> multiprocessing.Process:
    """Fork a process that runs `work` with stdout and stderr in `log` and exits with its status."""

    def body():
        own_progress_bar_lock()
        if new_group:
            os.setpgrp()  # as a shell's job: a Ctrl-C reaches every process of the group
        descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        logging.root.handlers.clear()  # pytest's; `run` logs to this stderr instead
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.RLIM_INFINITY))
        sys.exit(work())

    child = multiprocessing.get_context("fork").Process(target=body)
    child.start()
    return child


def wait_until(condition: Callable[[], bool], child: multiprocessing.Process, timeout: float = 60) -> bool:
    """True once `condition()` holds; False if `child` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not child.is_alive():
            return False
        time.sleep(0.005)
    raise TimeoutError("the child never got there")


def finish(child: multiprocessing.Process, timeout: float = 60) -> int:
    child.join(timeout)
    assert not child.is_alive(), "the child did not exit in time"
    return child.exitcode


def entries_written(cache: Path) -> int:
    """Cache entries that the maps of a run have finished (see `transforms/pipeline/cache.py`); 0 when the run
    renamed a folder while it was listed (the builder's `.incomplete`): `wait_until` asks again."""
    try:
        return len(list(cache.rglob(f"{CHECKSUMS_DIR}/*.json")))
    except FileNotFoundError:
        return 0


def continue_command(log_text: str) -> list[str]:
    """The words of the command that the one `continue with:` line of `log_text` gives."""
    (line,) = [line for line in log_text.splitlines() if "continue with: " in line]
    return shlex.split(line.split("continue with: ", 1)[1])


def arguments_after_script(words: list[str], script: str) -> list[str]:
    return words[next(index for index, word in enumerate(words) if word.endswith(script)) + 1 :]


def hold_lock_until_killed(folder: Path, ready) -> int:
    with FolderLock(folder):
        ready.set()
        time.sleep(120)
    return 0


# --- 5. output integrity -------------------------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    with open(path, "r+b") as file:
        file.seek(path.stat().st_size // 2)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))


def truncate_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


DAMAGE = {"flipped": (flip_a_byte, "damaged"), "truncated": (truncate_to_half, "truncated"),
          "deleted": (Path.unlink, "missing")}


@pytest.mark.parametrize("damage", DAMAGE)
def test_verify_names_a_damaged_shard_and_resume_repairs_it(damage, corpus, processor_dir, reference, tmp_path,
                                                            caplog, capsys):
    arguments = prepare_arguments(corpus, tmp_path / "out", tmp_path / "cache", processor_dir)
    assert prepare_script.main(arguments) == 0
    shard = first_data_file(tmp_path / "out")
    cache_file_inode = shard.stat().st_ino  # the output's shards are hard links to the cache's
    tamper, named = DAMAGE[damage]
    tamper(shard)

    capsys.readouterr()
    assert verify_script.main(["--output_dir", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr()
    assert f"FAIL train/{shard.name}: {named}" in printed.out
    assert "rows not checked" in printed.out and "--resume repairs them" in printed.out
    assert "Traceback" not in printed.out + printed.err

    caplog.clear()
    assert prepare_script.main([*arguments, "--resume"]) == 0
    damaged_cache = [message for message in warnings_of(caplog) if message.startswith("cache file ")]
    if damage == "deleted":  # the cache was whole: the shard is linked again, nothing is recomputed
        assert damaged_cache == [] and shard.stat().st_ino == cache_file_inode
    else:  # the same bytes are the cache's: found there, deleted and computed again
        assert len(damaged_cache) == 1 and f"is {named}" in damaged_cache[0]
        assert shard.stat().st_ino != cache_file_inode
    assert_same_output(tmp_path / "out", reference)


def test_a_damaged_cache_file_of_any_step_is_recomputed_not_reused(corpus, processor_dir, reference, tmp_path, caplog):
    assert prepare_script.main(prepare_arguments(corpus, tmp_path / "first", tmp_path / "cache", processor_dir)) == 0
    entries = sorted(maps_folder(tmp_path / "cache").glob(f"{CHECKSUMS_DIR}/*.json"))
    files = [maps_folder(tmp_path / "cache") / name for entry in entries for name in json.loads(entry.read_text())]
    not_in_the_output = [path for path in files if path.stat().st_nlink == 1]  # turns, conversations, plans
    assert len(not_in_the_output) == 3 * len(files) // 4
    damaged = not_in_the_output[0]
    flip_a_byte(damaged)

    caplog.clear()
    assert prepare_script.main(prepare_arguments(corpus, tmp_path / "second", tmp_path / "cache", processor_dir)) == 0
    assert [message for message in warnings_of(caplog) if message.startswith("cache file ")] == [
        f"cache file {damaged} is damaged: its xxh3_128 checksum differs from the one recorded when it was "
        "written: deleted, it is computed again"
    ]
    assert_same_output(tmp_path / "second", reference)


def test_a_split_that_disappears_leaves_no_folder_behind(corpus, processor_dir, tmp_path, capsys):
    shrinking = tmp_path / "corpus"
    shutil.copytree(corpus, shrinking)
    arguments = prepare_arguments(shrinking, tmp_path / "out", tmp_path / "cache", processor_dir)
    assert prepare_script.main(arguments) == 0
    gone = sorted(set(datasets.load_from_disk(str(tmp_path / "out"))["test"]["conversation_id"]))
    for conversation_id in gone:
        shutil.rmtree(shrinking / conversation_id)

    assert prepare_script.main([*arguments, "--resume"]) == 0
    output = tmp_path / "out"
    assert not (output / "test").exists()
    assert json.loads((output / "dataset_dict.json").read_text())["splits"] == ["train", "validation"]
    assert verify_output(output).ok

    shutil.copytree(output / "validation", output / "test")  # a folder that is no split
    capsys.readouterr()
    assert verify_script.main(["--output_dir", str(output)]) == 1
    assert "FAIL test/: a folder that is not part of this output" in capsys.readouterr().out


# --- 6. concurrency -------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_output_exits_2_naming_the_holder(corpus, processor_dir, tmp_path, capsys):
    ready = multiprocessing.get_context("fork").Event()
    holder = start_child(lambda: hold_lock_until_killed(tmp_path / "out", ready), tmp_path / "holder.log")
    try:
        assert ready.wait(30)
        arguments = prepare_arguments(corpus, tmp_path / "out", tmp_path / "cache", processor_dir)
        assert prepare_script.main(arguments) == 2
        error = capsys.readouterr().err
        assert f"--output_dir '{tmp_path / 'out'}' is in use by another run: process {holder.pid} on " in error
        assert not (tmp_path / "out").exists()
    finally:
        holder.kill()
        holder.join()


def test_a_stale_lock_of_a_killed_run_is_taken_over_with_one_warning(corpus, processor_dir, reference, tmp_path,
                                                                       caplog):
    ready = multiprocessing.get_context("fork").Event()
    holder = start_child(lambda: hold_lock_until_killed(tmp_path / "out", ready), tmp_path / "holder.log")
    assert ready.wait(30)
    holder.kill()  # SIGKILL: no cleanup, the lock file stays
    holder.join()
    assert sibling(tmp_path / "out", "lock").exists()

    caplog.clear()
    assert prepare_script.main(prepare_arguments(corpus, tmp_path / "out", tmp_path / "cache", processor_dir)) == 0
    took_over = [message for message in warnings_of(caplog) if "took over the lock" in message]
    assert took_over == [f"--output_dir {tmp_path / 'out'}: took over the lock of process {holder.pid}, "
                         "which is no longer running (killed?)"]
    assert_same_output(tmp_path / "out", reference)


def test_a_second_lock_in_one_process_is_refused_and_the_first_still_holds(tmp_path):
    import csm_synthetic.folders

    def lock_from_another_process() -> int:
        csm_synthetic.folders._HELD_HERE.clear()  # what this fork inherited: look at the lock file itself
        try:
            FolderLock(tmp_path / "out").acquire()
        except FolderLocked:
            return 3
        return 0

    with FolderLock(tmp_path / "out"):
        with pytest.raises(FolderLocked, match=f"process {os.getpid()} "):
            FolderLock(tmp_path / "out").acquire()
        assert finish(start_child(lock_from_another_process, tmp_path / "child.log")) == 3
    assert finish(start_child(lock_from_another_process, tmp_path / "child.log")) == 0


def test_two_runs_on_one_output_at_once_one_runs_and_one_is_refused(corpus, processor_dir, reference, tmp_path):
    go = multiprocessing.get_context("fork").Event()
    arguments = prepare_arguments(corpus, tmp_path / "out", tmp_path / "cache", processor_dir)

    def run_when_told() -> int:
        go.wait(30)
        return prepare_script.main(arguments)

    children = [start_child(run_when_told, tmp_path / f"run{index}.log") for index in range(2)]
    go.set()
    statuses = [finish(child) for child in children]
    assert sorted(statuses) == [0, 2], statuses
    refused = (tmp_path / f"run{statuses.index(2)}.log").read_text()
    assert "is in use by another run" in refused or "already holds files" in refused  # or it came after
    assert_same_output(tmp_path / "out", reference)


def test_two_runs_sharing_a_cache_both_give_the_uninterrupted_output(corpus, processor_dir, reference, tmp_path):
    go = multiprocessing.get_context("fork").Event()

    def run_when_told(output: Path) -> Callable[[], int]:
        def work() -> int:
            go.wait(30)
            return prepare_script.main(prepare_arguments(corpus, output, tmp_path / "cache", processor_dir))
        return work

    children = [start_child(run_when_told(tmp_path / f"out{n}"), tmp_path / f"run{n}.log") for n in range(2)]
    go.set()
    assert [finish(child) for child in children] == [0, 0]
    for index in range(2):
        assert_same_output(tmp_path / f"out{index}", reference)
    assert not list(maps_folder(tmp_path / "cache").glob("tmp*"))


def test_a_shard_that_another_run_is_writing_is_waited_for(tmp_path, caplog):
    (tmp_path / "csm-locks").mkdir()
    ready, release = multiprocessing.get_context("fork").Event(), multiprocessing.get_context("fork").Event()

    def hold() -> int:
        with locked(tmp_path / "csm-locks" / "shard.lock"):
            ready.set()
            release.wait(30)
        return 0

    writer = start_child(hold, tmp_path / "writer.log")
    assert ready.wait(30)
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    with MapCache(tmp_path).shard_lock("shard"):
        waited = time.monotonic() - started
    assert finish(writer) == 0
    assert waited >= 0.4
    assert [message for message in warnings_of(caplog) if "waiting" in message] == [
        f"waiting for another run that is writing the same shard into the cache {tmp_path}"
    ]


# --- 7. interruptions and resources ---------------------------------------------------------------


@pytest.mark.parametrize("stop", ["SIGTERM to the run", "Ctrl-C to its process group, 2 workers"])
def test_a_stopped_run_exits_with_one_line_and_continues_with_the_command_it_gives(stop, long_corpus, processor_dir,
                                                                                  long_reference, tmp_path):
    terminate = stop.startswith("SIGTERM")
    for attempt in range(3):  # the run must still be working when the signal comes
        output, cache, log = tmp_path / f"out{attempt}", tmp_path / f"cache{attempt}", tmp_path / f"run{attempt}.log"
        processes = "1" if terminate else "2"
        arguments = prepare_arguments(long_corpus, output, cache, processor_dir, "--num_proc", processes)
        child = start_child(lambda: prepare_script.main(arguments), log, new_group=not terminate)
        if wait_until(lambda: entries_written(cache) >= 1 + attempt, child):
            if terminate:
                os.kill(child.pid, signal.SIGTERM)
            else:
                os.killpg(child.pid, signal.SIGINT)
            status = finish(child, timeout=30)
            if status != 0:
                break
        finish(child)
    else:
        pytest.fail("every run ended before the signal")

    text = log.read_text()
    assert status == (143 if terminate else 130), text[-3000:]
    assert "Traceback" not in text and "Exception ignored" not in text
    (line,) = [line for line in text.splitlines() if line.startswith("stopped by")]
    assert line.startswith("stopped by SIGTERM" if terminate else "stopped by Ctrl-C (SIGINT)")
    assert arguments_after_script(continue_command(text), PREPARE_SCRIPT.name) == [*arguments, "--resume"]
    assert not (output / REPORT_NAME).exists()

    assert prepare_script.main([*arguments, "--resume"]) == 0
    assert_same_output(output, long_reference)


def test_the_command_given_after_sigterm_is_the_users_own_with_resume(long_corpus, processor_dir, long_reference,
                                                                       tmp_path):
    """As a user runs it: a fresh interpreter on the script, SIGTERM, then what the printed command does."""
    arguments = prepare_arguments(long_corpus, tmp_path / "out", tmp_path / "cache", processor_dir)
    with open(tmp_path / "run.log", "w") as log:
        process = subprocess.Popen([sys.executable, str(PREPARE_SCRIPT), *arguments], stdout=log, stderr=log, cwd=ROOT)
        while process.poll() is None and not (tmp_path / "out" / ARGUMENTS_NAME).exists():
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        status = process.wait(60)
    text = (tmp_path / "run.log").read_text()
    if status == 0:
        pytest.skip("the run ended before SIGTERM came")
    assert status == 143 and "Traceback" not in text, text[-3000:]
    assert continue_command(text) == [sys.executable, str(PREPARE_SCRIPT), *arguments, "--resume"]
    assert prepare_script.main([*arguments, "--resume"]) == 0  # in this process: a second interpreter costs 10 s
    assert_same_output(tmp_path / "out", long_reference)


def test_a_full_disk_stops_with_one_line_and_nothing_finished_is_lost(corpus, processor_dir, reference, tmp_path):
    arguments = prepare_arguments(corpus, tmp_path / "out", tmp_path / "cache", processor_dir)
    largest_shard = max(path.stat().st_size for path in reference.rglob("data-*.arrow"))
    limit = largest_shard // 2
    child = start_child(lambda: prepare_script.main(arguments), tmp_path / "run.log", file_size_limit=limit)
    status = finish(child)
    text = (tmp_path / "run.log").read_text()
    assert status == 2, text[-3000:]
    (line,) = [line for line in text.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: stopped: File too large while writing to '{tmp_path / 'out'}' and "
                           f"'{tmp_path / 'cache'}'")
    assert "Traceback" not in text
    assert arguments_after_script(continue_command(text), PREPARE_SCRIPT.name) == [*arguments, "--resume"]
    assert entries_written(tmp_path / "cache") > 0, "nothing was finished before the disk filled up"
    left = list(maps_folder(tmp_path / "cache").glob("tmp*"))  # datasets keeps a map's file when it cannot finish it

    assert prepare_script.main([*arguments, "--resume"]) == 0
    assert not any(path.exists() for path in left)
    assert_same_output(tmp_path / "out", reference)


def test_leftovers_of_dead_runs_are_removed_but_never_while_another_run_lives(corpus, processor_dir, reference,
                                                                              tmp_path, caplog):
    arguments = prepare_arguments(corpus, tmp_path / "out", tmp_path / "cache", processor_dir)
    assert prepare_script.main(arguments) == 0
    maps = maps_folder(tmp_path / "cache")
    left_in_cache = maps / "tmpk1lled00"  # what a killed map leaves: its file, before the rename
    left_in_output = tmp_path / "out" / "train" / "data-00000-of-00002.arrow.partial"

    ready, release = multiprocessing.get_context("fork").Event(), multiprocessing.get_context("fork").Event()

    def another_live_run() -> int:
        with MapCache(maps):  # what every run holds for its life
            ready.set()
            release.wait(60)
        return 0

    live = start_child(another_live_run, tmp_path / "live.log")
    try:
        assert ready.wait(30)
        left_in_cache.write_bytes(b"half a shard")
        left_in_output.write_bytes(b"half a link")
        assert prepare_script.main([*arguments, "--resume"]) == 0
        assert left_in_cache.exists(), "removed while another run may have been writing it"
        assert not left_in_output.exists()  # the output is locked by one run: its partial files are a dead run's
    finally:
        release.set()
        assert finish(live) == 0

    caplog.clear()
    assert prepare_script.main([*arguments, "--resume"]) == 0
    assert not left_in_cache.exists()
    assert f"removed 1 unfinished cache files of interrupted runs from {maps}" in warnings_of(caplog)
    assert_same_output(tmp_path / "out", reference)


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_killed_before_it_wrote_its_arguments_left_an_empty_output(resume, corpus, processor_dir, reference,
                                                                         tmp_path):
    """Killed between making the folder and writing prepare_arguments.json: only scratch files are there."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / f"{ARGUMENTS_NAME}.partial").write_text('{"input_dir": ')
    (tmp_path / "out" / ".write_probe.partial").write_bytes(b"")
    arguments = prepare_arguments(corpus, tmp_path / "out", tmp_path / "cache", processor_dir)
    assert prepare_script.main([*arguments, "--resume"] if resume else arguments) == 0
    assert_same_output(tmp_path / "out", reference)


# --- 8. --overwrite -------------------------------------------------------------------------------


def report_of(output: Path) -> dict:
    return json.loads((output / REPORT_NAME).read_text())


def test_a_run_killed_during_overwrite_leaves_the_old_output_or_the_new_one(long_corpus, processor_dir,
                                                                            long_reference, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(long_reference, output, copy_function=os.link)  # an earlier output of ours, max_history 2
    new = prepare_arguments(long_corpus, output, tmp_path / "cache", processor_dir, "--overwrite")
    new[new.index("--max_history") + 1] = "1"
    seen = set()
    for entries in (1, 3, 6, 10, 15):
        child = start_child(lambda: prepare_script.main(new), tmp_path / "run.log")
        if wait_until(lambda: entries_written(tmp_path / "cache") >= entries, child):
            child.kill()
        finish(child)
        assert verify_output(output).ok  # whole, whichever it is
        seen.add(report_of(output)["arguments"]["max_history"])
    assert 2 in seen, "no kill came before the new output was in place"
    assert prepare_script.main(new) == 0
    assert report_of(output)["arguments"]["max_history"] == 1
    assert verify_output(output).ok
    assert not list(tmp_path.glob(".out.*")), "a sibling of a killed run was left"


@pytest.mark.parametrize("new_output_complete", [True, False])
def test_an_overwrite_cut_between_its_two_renames_is_finished_by_the_next_run(new_output_complete, corpus,
                                                                             processor_dir, reference, tmp_path,
                                                                             caplog):
    """The one moment when neither is in place: `.out.old` is the old output, `.out.partial` the new one."""
    old_arguments = prepare_arguments(corpus, tmp_path / "out", tmp_path / "cache", processor_dir)
    new_arguments = [*old_arguments]
    new_arguments[new_arguments.index("--max_history") + 1] = "1"
    assert prepare_script.main(old_arguments) == 0
    os.replace(tmp_path / "out", sibling(tmp_path / "out", "old"))
    assert prepare_script.main([*new_arguments[:3], str(tmp_path / "new"), *new_arguments[4:]]) == 0
    os.replace(tmp_path / "new", sibling(tmp_path / "out", "partial"))
    if not new_output_complete:
        (sibling(tmp_path / "out", "partial") / REPORT_NAME).unlink()

    caplog.clear()
    arguments = new_arguments if new_output_complete else old_arguments
    assert prepare_script.main([*arguments, "--resume"]) == 0
    restored = ".out.partial" if new_output_complete else ".out.old"
    finished = f"{tmp_path / 'out'}: an interrupted replacement is finished ({restored} put in place)"
    assert finished in warnings_of(caplog)
    assert report_of(tmp_path / "out")["arguments"]["max_history"] == (1 if new_output_complete else 2)
    if not new_output_complete:
        assert_same_output(tmp_path / "out", reference)
    assert verify_output(tmp_path / "out").ok
    assert not list(tmp_path.glob(".out.*"))


# --- the codes format -----------------------------------------------------------------------------


def test_codes_format_a_damaged_shard_is_named_and_repaired(processor_dir, tmp_path, caplog, capsys):
    from transforms.testing.offline import build_tiny_codec

    corpus = tmp_path / "corpus"  # a smaller one: encoding is the slow part
    create_demo_corpus(corpus, languages=("en",), conversations_per_language=4, turns=(2, 3), seconds=(0.2, 0.4))
    build_tiny_codec().save_pretrained(tmp_path / "codec")
    codes = ["--format", "codes", "--codec_model_id", str(tmp_path / "codec"), "--device", "cpu", "--no_quality_checks"]
    arguments = prepare_arguments(corpus, tmp_path / "out", tmp_path / "cache", processor_dir, *codes)
    assert prepare_script.main(arguments) == 0
    shutil.copytree(tmp_path / "out", tmp_path / "clean")  # copies, not links: the damage below stays in "out"
    shard = first_data_file(tmp_path / "out")
    flip_a_byte(shard)
    capsys.readouterr()
    assert verify_script.main(["--output_dir", str(tmp_path / "out")]) == 1
    assert f"FAIL train/{shard.name}: damaged" in capsys.readouterr().out

    caplog.clear()
    assert prepare_script.main([*arguments, "--resume"]) == 0
    assert len([message for message in warnings_of(caplog) if message.startswith("cache file ")]) == 1
    assert_same_output(tmp_path / "out", tmp_path / "clean")


# --- push_to_hub.py --to_dir ------------------------------------------------------------------------


def push_arguments(corpus: Path, target: Path, cache: Path, *extra: str) -> list[str]:
    return ["--input_dir", str(corpus), "--to_dir", str(target), "--cache_dir", str(cache),
            "--validation_fraction", "0.25", "--test_fraction", "0.25", "--max_shard_size", "20KB", *extra]


def test_to_dir_is_locked_and_the_leftovers_of_a_killed_run_are_removed(corpus, tmp_path, caplog, capsys):
    push_to_hub = load_script("push_to_hub.py")
    target = tmp_path / "repo"
    arguments = push_arguments(corpus, target, tmp_path / "cache")
    ready = multiprocessing.get_context("fork").Event()
    holder = start_child(lambda: hold_lock_until_killed(target, ready), tmp_path / "holder.log")
    assert ready.wait(30)
    assert push_to_hub.main(arguments) == 2
    assert f"--to_dir '{target}' is in use by another run: process {holder.pid} on " in capsys.readouterr().err
    holder.kill()  # the lock file stays, as after a SIGKILL of push_to_hub
    holder.join()
    (sibling(target, "partial") / "data").mkdir(parents=True)  # and so does its half-written repository
    (sibling(target, "partial") / "data" / "shard.parquet").write_bytes(b"half")

    caplog.clear()
    assert push_to_hub.main(arguments) == 0
    messages = warnings_of(caplog)
    assert any(f"took over the lock of process {holder.pid}" in message for message in messages)
    assert f"removing {sibling(target, 'partial')}, left by an interrupted run" in messages
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache", "holder.log", "repo"]
    assert datasets.load_dataset(str(target), "all", cache_dir=str(tmp_path / "load"))["train"].num_rows > 0


def test_sigterm_during_to_dir_leaves_nothing_half_written_and_the_same_command_continues(corpus, tmp_path):
    push_to_hub = load_script("push_to_hub.py")
    for attempt in range(3):
        target = tmp_path / f"repo{attempt}"
        arguments = push_arguments(corpus, target, tmp_path / "cache")
        child = start_child(lambda: push_to_hub.main(arguments), tmp_path / "push.log")
        if wait_until(lambda: sibling(target, "partial").exists(), child):
            os.kill(child.pid, signal.SIGTERM)
            if finish(child, timeout=30) != 0:
                break
        finish(child)
    else:
        pytest.fail("every run ended before the signal")
    text = (tmp_path / "push.log").read_text()
    assert child.exitcode == 143 and "Traceback" not in text, text[-3000:]
    assert arguments_after_script(continue_command(text), "push_to_hub.py") == arguments
    assert not target.exists() and not list(tmp_path.glob(f".{target.name}.*"))

    assert push_to_hub.main(arguments) == 0
    assert datasets.load_dataset(str(target), "all", cache_dir=str(tmp_path / "load"))["train"].num_rows > 0
