"""--engine ray on a local Ray cluster (one for the whole session, `ray_cluster`): the same rows, report,
problems and quality checks as the local engine for both formats (on a corpus with read faults and turns that
the checks drop and flag; trimmed and loudness-normalized audio encoded in the codes format), Parquet shards
that load with the same features and pass verify_shard, resume of the missing shards only (after a real driver
process is killed too), a killed worker's task retried into the same bytes, and the refusals (no Ray, an
unreachable cluster, GPUs the cluster lacks, the ASR check)."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import datasets
import pytest

from conftest import write_conversation
from csm_synthetic.errors import InputError
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.testing.demo import create_demo_corpus
from test_prepare import load_script
from test_quality import write_quality_corpus
from transforms.core.quality import DROPPED, FLAGGED, QualityChecks
from transforms.pipeline.options import ARGUMENTS_NAME, REPORT_NAME, PrepareOptions

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "prepare_dataset_for_training.py"
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="no ray: `uv sync --extra ray` to run")
KEY = [("conversation_id", "ascending"), ("turn_index", "ascending")]
SAME_IN_BOTH = ("counts", "problems", "skipped", "audio", "tokens", "quality")  # the report's sections about the data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Short turns, two languages, every known fault; and test_quality's conversations, one defect each."""
    corpus = create_demo_corpus(tmp_path_factory.mktemp("ray") / "corpus", languages=("en", "de"),
                                conversations_per_language=2, turns=(3, 5), seconds=(0.3, 1.0), with_faults=True)
    write_quality_corpus(corpus.root)
    return corpus


@pytest.fixture(scope="module")
def codec_dir(processor_dir, tmp_path_factory):
    from transforms.core.csm import load_processor
    from transforms.testing.offline import build_tiny_model

    folder = tmp_path_factory.mktemp("codec")
    build_tiny_model(load_processor(processor_dir)).codec_model.save_pretrained(str(folder))
    return str(folder)


def options_for(corpus, output: Path, processor_dir: str, **overrides) -> PrepareOptions:
    values = dict(input_dir=str(corpus.root), output_dir=str(output), model_id=processor_dir,
                  cache_dir=str(output.parent / "cache"), max_history=2, batch_size=3, num_proc=1,
                  corpus=CorpusSettings(validation_fraction=0.2, test_fraction=0.2))
    return PrepareOptions(**{**values, **overrides})


def run_both(corpus, work: Path, processor_dir: str, **overrides) -> tuple[dict, dict]:
    from transforms.pipeline.prepare import prepare
    from transforms.pipeline.ray_engine import prepare_on_ray

    local = prepare(options_for(corpus, work / "local", processor_dir, **overrides))
    on_ray = prepare_on_ray(options_for(corpus, work / "ray", processor_dir, engine="ray", **overrides))
    return local, on_ray


def assert_same_data(work: Path, local: dict, on_ray: dict) -> None:
    loaded = datasets.load_dataset(str(work / "ray"))  # the card's YAML: configs, splits, features
    expected = datasets.load_from_disk(str(work / "local"))
    assert list(loaded) == list(expected)
    for split in expected:
        assert loaded[split].features == expected[split].features
        got, want = (table.sort_by(KEY) for table in (loaded[split].data.table, expected[split].data.table))
        assert got.num_rows == want.num_rows > 0
        assert got.equals(want), split
    for section in SAME_IN_BOTH:
        assert on_ray[section] == local[section], section
    assert on_ray["ray"]["shards_resumed"] == 0


def assert_faults_and_checks_met(report: dict) -> None:
    """The corpus' read faults became problems, and the quality checks dropped and flagged turns."""
    actions = {action for counts in report["quality"]["counts"].values() for action, count in counts.items() if count}
    assert report["counts"]["problems"] > 0 and report["quality"]["corpus"]["repeated_audio"] == 1
    assert actions == {DROPPED, FLAGGED}


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
def test_processor_rows_report_and_problems_equal_the_local_engines(corpus, processor_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("processor")
    local, on_ray = run_both(corpus, work, processor_dir)
    assert_same_data(work, local, on_ray)
    assert_faults_and_checks_met(on_ray)
    files = sorted(path.relative_to(work / "ray").as_posix() for path in (work / "ray").rglob("*") if path.is_file())
    assert "README.md" in files and ARGUMENTS_NAME in files and REPORT_NAME in files
    assert "data/default/train-00000-of-00005.parquet" in files and not [name for name in files if ".partial" in name]
    assert json.loads((work / "ray" / REPORT_NAME).read_text())["ray"] == on_ray["ray"]
    assert on_ray["ray"]["address"] == "local" and on_ray["ray"]["cluster"]["CPU"] >= 1
    assert_audio_stored_plain(work / "ray" / "data" / "default" / "train-00000-of-00005.parquet")
    assert_verified_and_damage_named(work / "ray", on_ray)


def assert_verified_and_damage_named(output: Path, report: dict) -> None:
    """verify_shard checks a Ray output row by row, and names a damaged shard and a stray one."""
    from transforms.pipeline.verify import verify_output

    verified = verify_output(output)
    assert verified.ok, verified.errors
    assert verified.rows == {split: counts["samples"] for split, counts in report["counts"]["by_split"].items()
                             if counts["samples"]}
    shard = sorted((output / "data" / "default").glob("test-*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    shutil.copy(shard, shard.with_name("test-99999-of-99999.parquet"))
    (output / "test").mkdir()
    errors = verify_output(output).errors
    assert errors[:3] == [
        f"data/default/{shard.name}: damaged: its xxh3_128 checksum differs from the one recorded when it was written",
        "test/: a folder that is not part of this output (left by an earlier run?)",
        "data/default/test-99999-of-99999.parquet: a data file this run did not write",
    ]


def assert_audio_stored_plain(path: Path) -> None:
    """Audio without dictionary, compression or statistics (`parquet_shards.writer_options`); the rest as pyarrow's
    defaults."""
    import pyarrow.parquet as pq

    row_group = pq.ParquetFile(path).metadata.row_group(0)
    chunks = {row_group.column(index).path_in_schema: row_group.column(index) for index in range(row_group.num_columns)}
    audio = chunks["input_values.list.element.list.element"]
    assert audio.compression == "UNCOMPRESSED" and not audio.has_dictionary_page and not audio.is_stats_set
    assert chunks["language"].compression == "SNAPPY" and chunks["language"].has_dictionary_page
    assert chunks["language"].is_stats_set and not chunks["input_ids.list.element"].is_stats_set


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
def test_codes_rows_equal_the_local_engines_with_the_codec_in_an_actor(corpus, processor_dir, codec_dir,
                                                                        tmp_path_factory):
    work = tmp_path_factory.mktemp("codes")
    # one turn per codec call in both engines: the same calls, so the same codes to the bit; the audio encoded
    # is the prepared one (edge silence trimmed, loudness normalized)
    local, on_ray = run_both(corpus, work, processor_dir, format="codes", codec_model_id=codec_dir, devices="cpu",
                             encode_batch_size=1, quality=QualityChecks(trim_silence=True), normalize_loudness=-23.0)
    assert_same_data(work, local, on_ray)
    assert_faults_and_checks_met(on_ray)
    assert on_ray["ray"]["codec_actors"] == {"count": 1, "gpu": False}
    from transforms.pipeline.verify import verify_output

    assert verify_output(work / "ray").ok


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
def test_the_asr_check_gives_the_local_engines_transcripts_and_drops(corpus, processor_dir, tmp_path):
    """`--asr_model` in the measuring tasks (here on the cluster's logical GPU share, run on the CPU): the same
    transcripts, error rates, drops and rows as the local engine's. A bound that drops every turn leaves no sample
    and no card, as the local engine leaves no split."""
    from csm_synthetic.builder import load_turns
    from transforms.maps import TurnAudio, map_turn_audio
    from transforms.pipeline.ray_engine import prepare_on_ray
    from transforms.pipeline.verify import verify_output
    from transforms.testing.offline import save_tiny_asr

    asr = str(save_tiny_asr(tmp_path / "asr"))
    turns = load_turns(corpus.root, cache_dir=str(tmp_path / "cache"), validation_fraction=0, test_fraction=0)["train"]
    rates = [rate for rate in map_turn_audio(turns, TurnAudio(asr_model_id=asr), desc="ASR")["cer"] if rate is not None]
    # the tiny model's transcripts are random characters: their median error rate drops some turns, keeps others;
    # one turn per call in both engines, as padding in a batch moves a transcript (as the codec's codes)
    local, on_ray = run_both(corpus, tmp_path, processor_dir, asr_model=asr, asr_batch_size=1,
                             quality=QualityChecks(max_cer=sorted(rates)[len(rates) // 2]))
    assert_same_data(tmp_path, local, on_ray)
    mismatches = [entry for entry in on_ray["quality"]["turns"] if entry["check"] == "asr_mismatch"]
    assert mismatches and on_ray["quality"]["checks"]["asr_model"] == asr
    nothing = prepare_on_ray(options_for(corpus, tmp_path / "none", processor_dir, engine="ray", asr_model=asr,
                                         quality=QualityChecks(max_cer=0.0)))
    assert nothing["counts"]["samples"] == 0
    assert set(nothing["counts"]["empty_splits"]) == set(on_ray["counts"]["by_split"])
    assert not (tmp_path / "none" / "README.md").exists() and verify_output(tmp_path / "none").ok


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
def test_a_manifest_of_spans_gives_the_local_engines_rows(corpus, processor_dir, tmp_path, caplog):
    from test_turn_sources import span_manifest

    folder = tmp_path / "folder"
    for number, speakers in enumerate([[1, 2, 1], [2, 1, 2, 1]]):  # lengths differ: no two turns hold the same audio
        write_conversation(folder, f"en/show/ep{number}", speakers, frames=lambda n: 9_600 + 2_400 * n + 240 * number)
    manifest = span_manifest(folder, tmp_path / "spans")  # each conversation one recording, its turns spans of it
    local, on_ray = run_both(corpus, tmp_path, processor_dir, input_dir=None, input_manifest=str(manifest),
                             quality=QualityChecks.off())
    assert_same_data(tmp_path, local, on_ray)
    assert on_ray["ray"]["shards_written"] == 1  # on the session's 2 CPUs: said
    assert "2 CPUs but 1 shards to write: a shard is one task, so 1 CPUs stay idle" in caplog.text


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
def test_resume_does_only_the_missing_shards_and_writes_the_same_bytes(corpus, processor_dir, tmp_path_factory):
    from transforms.pipeline.ray_engine import prepare_on_ray

    work = tmp_path_factory.mktemp("resume")
    options = options_for(corpus, work / "ray", processor_dir, engine="ray")
    first = prepare_on_ray(options)
    shards = sorted((work / "ray" / "data" / "default").glob("*.parquet"))
    before = {path.name: path.read_bytes() for path in shards}
    # what a killed driver leaves: finished shards, one half-written, no report
    shards[1].unlink()
    shards[2].rename(shards[2].with_name(f".{shards[2].name}.partial"))
    (work / "ray" / REPORT_NAME).unlink()
    with pytest.raises(InputError, match="--max_history: was 2, now 3"):
        prepare_on_ray(options_for(corpus, work / "ray", processor_dir, engine="ray", max_history=3), resume=True)
    resumed = prepare_on_ray(options, resume=True)
    assert resumed["ray"]["shards_written"] == 2 and resumed["ray"]["shards_resumed"] == len(shards) - 2
    assert {path.name: path.read_bytes() for path in (work / "ray" / "data" / "default").glob("*")} == before
    for section in SAME_IN_BOTH:
        assert resumed[section] == first[section], section


@needs_ray
def test_a_killed_driver_resumes_the_missing_shards_into_a_clean_runs_bytes(corpus, processor_dir, tmp_path,
                                                                            ray_cluster):
    """A real driver process, on the session's cluster, killed (SIGKILL) once its first shard is written."""
    from transforms.pipeline.ray_engine import prepare_on_ray

    options = options_for(corpus, tmp_path / "out", processor_dir, engine="ray", batch_size=1)
    clean = prepare_on_ray(options_for(corpus, tmp_path / "clean", processor_dir, engine="ray", batch_size=1))
    arguments = script_arguments(corpus, tmp_path, processor_dir, "--max_history", "2", "--batch_size", "1",
                                 "--validation_fraction", "0.2", "--test_fraction", "0.2", "--ray_address",
                                 ray_cluster.get_runtime_context().gcs_address)
    driver = subprocess.Popen([sys.executable, str(SCRIPT), *arguments], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    shards = tmp_path / "out" / "data" / "default"
    while not list(shards.glob("*.parquet")):
        if driver.poll() is not None:
            pytest.fail(f"the driver ended ({driver.returncode}) before it wrote a shard:\n{driver.stderr.read()}")
        time.sleep(0.01)
    driver.kill()
    driver.wait()
    assert not (tmp_path / "out" / REPORT_NAME).exists()  # killed mid-run
    resumed = prepare_on_ray(options, resume=True)
    total = clean["ray"]["shards_written"]
    assert resumed["ray"]["shards_resumed"] >= 1 and resumed["ray"]["shards_written"] >= 1
    assert resumed["ray"]["shards_resumed"] + resumed["ray"]["shards_written"] == total
    files = {path.name: path.read_bytes() for path in shards.iterdir()}
    assert files == {path.name: path.read_bytes() for path in (tmp_path / "clean" / "data" / "default").iterdir()}
    for section in SAME_IN_BOTH:
        assert resumed[section] == clean[section], section


def task_workers() -> list[int]:
    """Pids of the Ray workers running a task of a pass (Ray titles a worker by its task: `ray::run_step`)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes().startswith(b"ray::run_step"):
                pids.append(int(entry))
        except OSError:  # it ended meanwhile
            pass
    return pids


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
def test_a_worker_killed_mid_task_is_retried_into_a_clean_runs_bytes(corpus, processor_dir, tmp_path):
    from transforms.pipeline.ray_engine import prepare_on_ray

    clean = prepare_on_ray(options_for(corpus, tmp_path / "clean", processor_dir, engine="ray"))
    killed, done = [], threading.Event()

    def kill_the_first_busy_worker():
        while not done.is_set() and not killed:
            for pid in task_workers()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.002)

    killer = threading.Thread(target=kill_the_first_busy_worker)
    killer.start()
    try:
        report = prepare_on_ray(options_for(corpus, tmp_path / "out", processor_dir, engine="ray"))
    finally:
        done.set()
        killer.join()
    assert killed, "no task was running to kill"
    shards = {path.name: path.read_bytes() for path in (tmp_path / "out" / "data" / "default").iterdir()}
    assert shards == {path.name: path.read_bytes() for path in (tmp_path / "clean" / "data" / "default").iterdir()}
    for section in SAME_IN_BOTH:
        assert report[section] == clean[section], section


def prepare_status(arguments: list[str], capsys) -> tuple[int, str]:
    status = load_script(SCRIPT).main(arguments)
    return status, capsys.readouterr().err


def script_arguments(corpus, tmp_path: Path, processor_dir: str, *more: str) -> list[str]:
    return ["--input_dir", str(corpus.root), "--output_dir", str(tmp_path / "out"), "--model_id", processor_dir,
            "--cache_dir", str(tmp_path / "cache"), "--engine", "ray", *more]


def test_without_ray_the_engine_is_refused_naming_the_extra(corpus, processor_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    status, error = prepare_status(script_arguments(corpus, tmp_path, processor_dir), capsys)
    assert status == 2 and "uv sync --extra ray" in error
    assert not (tmp_path / "out").exists()


@needs_ray
def test_an_unreachable_cluster_is_refused_naming_its_address(corpus, processor_dir, tmp_path, capsys):
    status, error = prepare_status(script_arguments(corpus, tmp_path, processor_dir, "--ray_address", "127.0.0.1:9"),
                                   capsys)
    assert status == 2 and "--ray_address '127.0.0.1:9'" in error
    assert not (tmp_path / "out").exists()


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
def test_gpus_the_cluster_lacks_are_refused_before_any_work(corpus, processor_dir, codec_dir, tmp_path, capsys):
    from transforms.pipeline.ray_engine import codec_actors

    status, error = prepare_status(  # the session's cluster declares one GPU
        script_arguments(corpus, tmp_path, processor_dir, "--format", "codes", "--codec_model_id", codec_dir,
                         "--devices", "cuda:0,cuda:1"), capsys)
    assert status == 2 and "asks for GPUs, but the Ray cluster has 1" in error
    assert not (tmp_path / "out").exists()
    options = options_for(corpus, tmp_path / "out", processor_dir, engine="ray", format="codes", devices="cuda")
    with pytest.raises(InputError, match="the Ray cluster has 0"):
        codec_actors(options, {"CPU": 8.0})
    assert codec_actors(options_for(corpus, tmp_path, processor_dir, engine="ray", format="codes"), {"CPU": 8.0}).count == 1
