"""Publishing to the Hub: `--to_dir` round trips through `load_dataset`, the card matches the data, and the
upload path runs against a fake Hub (a local HTTP server: the network boundary) with real datasets, builder
and huggingface_hub code. Nothing here decodes audio, so FFmpeg is not needed."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import datasets
import huggingface_hub
import numpy as np
import pytest
import yaml
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard
from PIL import Image
from transformers import TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from csm_synthetic.builder import available_configs, load_turns
from csm_synthetic.corpus import read_corpus
from csm_synthetic.errors import ExitCode
from csm_synthetic.folders import FolderLock
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.testing.demo import create_demo_corpus
from transforms.core.csm import DEFAULT_MODEL_ID
from transforms.export.card import REPO_PLACEHOLDER
from transforms.export.content import raw_corpus_content
from transforms.export.figures import BAR_COLOR, read_histogram_png
from transforms.export.repository import inspect_repository, stage_repository
from transforms.testing.offline import (
    build_offline_processor,
    build_tiny_codec,
    build_tiny_model,
    save_offline_processor,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import prepare_dataset_for_training  # prepared outputs are made through the command, whose flags are stable
import push_to_hub  # the script is the command under test

REPO_ID = "me/corpus"
SPLIT_SETTINGS = {"validation_fraction": 0.3, "test_fraction": 0.3}  # a tiny corpus still gets several splits
SPLIT_ARGUMENTS = ["--validation_fraction", "0.3", "--test_fraction", "0.3"]
SHARD_NAME = re.compile(r"^data/(?P<config>[^/]+)/(?P<split>\w+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hub")


@pytest.fixture(scope="module")
def corpus(work) -> Path:
    create_demo_corpus(
        work / "corpus",
        languages=("en", "de"),
        conversations_per_language=3,
        turns=(2, 4),
        seconds=(0.2, 0.5),
        with_faults=True,
    )
    return work / "corpus"


@pytest.fixture(scope="module")
def cache_dir(work) -> str:
    """The builder's cache (building it needs no FFmpeg: the builder stores audio paths without torchcodec)."""
    return str(work / "cache")


@pytest.fixture(scope="module")
def raw_repo(work, corpus, cache_dir) -> Path:
    target = work / "raw_repo"
    arguments = [
        "--input_dir",
        str(corpus),
        "--to_dir",
        str(target),
        "--repo_id",
        REPO_ID,  # named in the card
        "--cache_dir",
        cache_dir,
        "--max_shard_size",
        "40KB",
    ]
    assert push_to_hub.main(arguments + SPLIT_ARGUMENTS) == 0
    return target


@pytest.fixture(scope="module")
def model_dir(work) -> Path:
    """Offline processor and a tiny random CSM model in one folder: what `from_pretrained` loads."""
    folder = save_offline_processor(work / "model")
    build_tiny_model(build_offline_processor()).save_pretrained(str(folder))
    return folder


@dataclass(frozen=True)
class Prepared:
    sample_format: str  # prepare's --format
    output: Path  # prepare's --output_dir
    repo: Path  # its repository, written with --to_dir


@pytest.fixture(scope="module", params=["processor", "codes"])
def prepared(request, work, corpus, cache_dir, model_dir) -> Prepared:
    """A prepared output of each sample format (made by the prepare command) and its published repository."""
    sample_format, output = request.param, work / f"prepared_{request.param}"
    arguments = ["--input_dir", str(corpus), "--output_dir", str(output), "--model_id", str(model_dir)]
    arguments += ["--cache_dir", cache_dir, "--batch_size", "4", "--num_proc", "1", *SPLIT_ARGUMENTS]
    arguments += ["--no_quality_checks"]  # the corpus' turns are short, its texts unrelated to them
    if sample_format == "codes":
        codec = work / "codec"  # a tiny Mimi with the tiny model's 4 codebooks
        build_tiny_codec().save_pretrained(str(codec))
        arguments += ["--format", "codes", "--codec_model_id", str(codec), "--device", "cpu"]
    assert prepare_dataset_for_training.main(arguments) == 0
    repo = work / f"{sample_format}_repo"
    assert push_to_hub.main(["--prepared_dir", str(output), "--to_dir", str(repo), "--max_shard_size", "200KB"]) == 0
    return Prepared(sample_format, output, repo)


def load_repo(repo: Path, config: str | None, work: Path) -> datasets.DatasetDict:
    return datasets.load_dataset(str(repo), config, cache_dir=str(work / "load_cache"))


def without_decoding(dataset: datasets.Dataset) -> datasets.Dataset:
    return dataset.cast_column("audio", datasets.Audio(decode=False))


def card_of(repo: Path) -> DatasetCard:
    return DatasetCard.load(repo / "README.md")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def table_count(text: str, label: str) -> int:
    match = re.search(rf"^\| {re.escape(label)} \| (\d+) \|$", text, flags=re.MULTILINE)
    assert match, f"no row {label!r} in the card"
    return int(match.group(1))


# --- the raw corpus ------------------------------------------------------------------------------


def test_raw_round_trip_gives_the_builder_rows_features_and_splits(raw_repo, corpus, cache_dir, work):
    configs = available_configs(corpus)
    assert configs == ["all", "de", "en"]
    for config in configs:
        source = load_turns(corpus, config, cache_dir=cache_dir, **SPLIT_SETTINGS)
        loaded = load_repo(raw_repo, config, work)
        assert list(loaded) == list(source), config
        for split in source:
            assert loaded[split].features == source[split].features
            assert isinstance(loaded[split].features["audio"], datasets.Audio)
            expected, actual = without_decoding(source[split]), without_decoding(loaded[split])
            assert actual.remove_columns("audio").to_list() == expected.remove_columns("audio").to_list()
            for stored, original in zip(actual["audio"], expected["audio"]):
                assert stored["bytes"] == Path(original["path"]).read_bytes()  # embedded, not a path
                assert stored["path"] == Path(original["path"]).name
    default = load_repo(raw_repo, None, work)
    assert {split: len(rows) for split, rows in default.items()} == {
        split: len(rows) for split, rows in load_repo(raw_repo, "all", work).items()
    }


def test_raw_repository_layout_shards_and_yaml(raw_repo):
    files = sorted(path.relative_to(raw_repo).as_posix() for path in raw_repo.rglob("*") if path.is_file())
    shards = [SHARD_NAME.match(path) for path in files if path.startswith("data/")]
    assert all(shards) and {match["config"] for match in shards} == {"de", "en"}  # `all` reuses their shards
    by_split = Counter((match["config"], match["split"]) for match in shards)
    assert max(by_split.values()) > 1, "--max_shard_size 40KB should split something"
    for match in shards:
        assert int(match["count"]) == by_split[match["config"], match["split"]] > int(match["index"])
    assert set(files) - {match.string for match in shards} == {"README.md", "figures/turn_seconds.png"}

    data = card_of(raw_repo).data
    configs = {entry["config_name"]: entry for entry in data.configs}
    assert list(configs) == ["all", "de", "en"] and configs["all"].get("default") is True
    assert "csm-synthetic" in data.tags and data.language == ["de", "en"]
    infos = {info["config_name"]: info for info in data.dataset_info}
    for name, entry in configs.items():
        assert [split["name"] for split in infos[name]["splits"]] == [item["split"] for item in entry["data_files"]]


def test_raw_card_numbers_and_figure_match_the_data(raw_repo, corpus, work):
    rows = load_repo(raw_repo, "all", work)
    durations = np.concatenate([np.asarray(rows[split]["duration"], dtype=np.float64) for split in rows])
    conversations = {cid for split in rows for cid in rows[split]["conversation_id"]}
    text = (raw_repo / "README.md").read_text(encoding="utf-8")
    assert table_count(text, "turns") == len(durations)
    assert table_count(text, "conversations") == len(conversations)
    speakers = {pair for split in rows for pair in zip(rows[split]["conversation_id"], rows[split]["speaker"])}
    assert table_count(text, "speakers") == len(speakers)
    problems = Counter(problem.kind for problem in read_corpus(corpus).problems)
    assert problems, "the demo corpus has faults"
    for kind, count in problems.items():
        assert table_count(text, kind) == count

    png = (raw_repo / "figures" / "turn_seconds.png").read_bytes()
    hist = read_histogram_png(png)
    counts, _ = np.histogram(durations, bins=len(hist.counts), range=(hist.edges[0], hist.edges[-1]))
    assert list(hist.counts) == counts.tolist() and hist.total == len(durations)
    assert hist.edges[0] == pytest.approx(durations.min()) and hist.edges[-1] == pytest.approx(durations.max())
    assert_bars_show_counts(png, hist.counts)


def assert_bars_show_counts(png: bytes, counts) -> None:
    """Measure the bars in the image: left to right, their heights in pixels grow in line with the counts."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    is_bar = np.all(pixels == np.array([int(BAR_COLOR[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8), axis=2)
    columns = np.flatnonzero(is_bar.any(axis=0))
    bars = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)  # white edges part the bars
    heights = [int(is_bar[:, bar[len(bar) // 2]].sum()) for bar in bars]
    shown = [count for count in counts if count]  # an empty bin has no bar
    assert len(heights) == len(shown)
    if len(set(shown)) > 1:
        scale, offset = np.polyfit(shown, heights, 1)
        assert scale > 0 and abs(offset) < 6  # a few pixels go to the bars' white edges and the x axis
        assert np.max(np.abs(np.polyval((scale, offset), shown) - heights)) < 1.5
    else:
        assert len(set(heights)) == 1


def test_raw_card_loading_snippet_runs(raw_repo, work, monkeypatch, capsys):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(work / "snippet_cache"))
    (snippet,) = python_blocks((raw_repo / "README.md").read_text(encoding="utf-8"))
    assert f'load_dataset("{REPO_ID}"' in snippet
    exec(snippet.replace(REPO_ID, str(raw_repo)), {})  # noqa: S102 - the card's own snippet
    assert re.search(r"\(\d+,(\s*\d*)\) \d+$", capsys.readouterr().out.strip())  # samples shape, rate


def test_staging_twice_gives_identical_bytes(corpus, cache_dir, work):
    """Re-running an interrupted upload rebuilds the same files, so huggingface_hub skips what is committed."""
    content = raw_corpus_content(corpus, cache_dir=cache_dir, settings=CorpusSettings(**SPLIT_SETTINGS))
    first = stage_repository(content, work / "stage_a", max_shard_size="40KB")
    second = stage_repository(content, work / "stage_b", max_shard_size="40KB")
    assert first.files == second.files
    for path in first.files:
        assert (first.folder / path).read_bytes() == (second.folder / path).read_bytes(), path


def test_to_dir_never_leaves_a_partial_or_replaces_foreign_folders(corpus, cache_dir, work, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    base = ["--input_dir", str(corpus), "--cache_dir", cache_dir, *SPLIT_ARGUMENTS]
    assert push_to_hub.main(base + ["--to_dir", str(foreign)]) == ExitCode.USAGE
    assert push_to_hub.main(base + ["--to_dir", str(foreign), "--overwrite"]) == ExitCode.USAGE
    assert "not written by this tool" in capsys.readouterr().err
    assert [path.name for path in foreign.iterdir()] == ["notes.txt"]

    copy = tmp_path / "corpus"
    subprocess.run(["cp", "-r", str(corpus), str(copy)], check=True)
    content = raw_corpus_content(copy, cache_dir=str(tmp_path / "cache"), settings=CorpusSettings(**SPLIT_SETTINGS))
    next(copy.rglob("*_speaker1.wav")).unlink()  # a file vanishes while the repository is written
    target = tmp_path / "repo"
    with pytest.raises(FileNotFoundError):
        stage_repository(content, target)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache", "corpus", "foreign"]  # no partial left


# --- prepared samples ----------------------------------------------------------------------------


def test_prepared_round_trip_gives_the_same_samples(prepared, work):
    source = datasets.load_from_disk(str(prepared.output))
    loaded = load_repo(prepared.repo, None, work)
    assert list(loaded) == list(source)
    for split in source:
        assert loaded[split].features == source[split].features
        assert loaded[split].to_list() == source[split].to_list()
    assert ("audio_codes" in source[split].features) == (prepared.sample_format == "codes")
    data = card_of(prepared.repo).data
    assert [entry["config_name"] for entry in data.configs] == ["default"]


def test_prepared_card_shows_the_report_and_token_lengths(prepared, work):
    report = json.loads((prepared.output / "prepare_report.json").read_text())
    text = (prepared.repo / "README.md").read_text(encoding="utf-8")
    loaded = load_repo(prepared.repo, None, work)
    tokens = np.concatenate([np.asarray(loaded[split]["num_tokens"]) for split in loaded])
    assert table_count(text, "samples") == len(tokens) == report["counts"]["samples"]
    assert f"| sample format | {prepared.sample_format} |" in text
    assert f"in the `{prepared.sample_format}` format" in text
    assert f"`{report['arguments']['max_tokens']}`" in text and f"`{report['versions']['transformers']}`" in text
    assert str(prepared.output) not in text  # local paths are not published
    for kind, count in Counter(problem["kind"] for problem in report["problems"]).items():
        assert table_count(text, kind) == count

    png = (prepared.repo / "figures" / "sample_tokens.png").read_bytes()
    hist = read_histogram_png(png)
    counts, _ = np.histogram(tokens, bins=len(hist.counts), range=(hist.edges[0], hist.edges[-1]))
    assert list(hist.counts) == counts.tolist()
    assert (hist.edges[0], hist.edges[-1]) == (tokens.min(), tokens.max())
    assert_bars_show_counts(png, hist.counts)


def test_prepared_card_target_turn_durations_are_those_of_the_target_turns(prepared, corpus, cache_dir, work):
    """Measured from each format's own columns (audio cutoffs, or codes frames), checked against the corpus."""
    turns = load_turns(corpus, cache_dir=cache_dir, **SPLIT_SETTINGS)
    duration = {
        (row["conversation_id"], row["turn_index"]): row["duration"]
        for split in turns
        for row in turns[split].select_columns(["conversation_id", "turn_index", "duration"]).to_list()
    }
    samples = load_repo(prepared.repo, None, work)
    targets = np.array(
        [
            duration[key]
            for split in samples
            for key in zip(samples[split]["conversation_id"], samples[split]["turn_index"])
        ]
    )
    hist = read_histogram_png((prepared.repo / "figures" / "turn_seconds.png").read_bytes())
    assert hist.total == len(targets)
    frame = 1 / 12.5  # a codes turn counts whole Mimi frames: up to one frame more than its audio
    low, high = (-1e-3, 1e-3) if prepared.sample_format == "processor" else (-1e-3, frame)
    assert low <= hist.edges[0] - targets.min() <= high and low <= hist.edges[-1] - targets.max() <= high


def short_training(*args, **kwargs):
    """The card's `TrainingArguments`, cut to two CPU steps without logging or checkpoints."""
    kwargs.update(max_steps=2, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
    return REAL_TRAINING_ARGUMENTS(*args, **kwargs)


REAL_TRAINING_ARGUMENTS = TrainingArguments


def test_prepared_card_training_snippet_runs(prepared, model_dir, work, monkeypatch, tmp_path):
    """The snippet batches with the project's collator and groups by length, with transformers' own names."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(work / "snippet_cache"))
    # the module the snippet imports from: importing CsmProcessor puts a new `transformers` in sys.modules
    monkeypatch.setattr(sys.modules["transformers"], "TrainingArguments", short_training)
    monkeypatch.chdir(tmp_path)  # the snippet's output folder
    text = (prepared.repo / "README.md").read_text(encoding="utf-8")
    assert "batches of one" not in text
    (snippet,) = python_blocks(text)
    assert f'from_pretrained("{DEFAULT_MODEL_ID}")' in snippet  # prepared with a local folder: the CSM default
    snippet = snippet.replace(REPO_PLACEHOLDER, str(prepared.repo)).replace(f'"{DEFAULT_MODEL_ID}"', repr(str(model_dir)))
    namespace = {}
    exec(snippet, namespace)  # noqa: S102 - the card's own snippet
    trainer = namespace["trainer"]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2 and all(np.isfinite(losses))
    assert trainer.args.per_device_train_batch_size > 1
    sampler = trainer.get_train_dataloader().batch_sampler.sampler
    assert isinstance(sampler, LengthGroupedSampler)
    train = load_repo(prepared.repo, None, work)["train"]
    assert not isinstance(sampler.lengths, list), "lengths were computed by reading every row, not the column"
    assert list(sampler.lengths) == list(train["num_tokens"])


@pytest.mark.parametrize(
    "flag, prepared_with, expected",
    [
        (None, None, DEFAULT_MODEL_ID),  # prepared with a local folder (the fixture's)
        (None, "sesame/csm-1b", "sesame/csm-1b"),  # prepared with a Hub id: that model
        ("me/my-csm", None, "me/my-csm"),  # --model_id
    ],
)
def test_prepared_card_snippet_loads_the_model_id_flag_or_a_hub_id(
    prepared, work, tmp_path, flag, prepared_with, expected
):
    source = prepared.output
    if prepared_with:
        source = tmp_path / "prepared"
        subprocess.run(["cp", "-al", str(prepared.output), str(source)], check=True)
        report = json.loads((source / "prepare_report.json").read_text())
        report["arguments"]["model_id"] = prepared_with
        (source / "prepare_report.json").unlink()  # a hard link to the original's
        (source / "prepare_report.json").write_text(json.dumps(report))
    arguments = ["--prepared_dir", str(source), "--to_dir", str(tmp_path / "repo")]
    assert push_to_hub.main(arguments + (["--model_id", flag] if flag else [])) == 0
    (snippet,) = python_blocks((tmp_path / "repo" / "README.md").read_text(encoding="utf-8"))
    assert snippet.count(f'from_pretrained("{expected}")') == 2  # processor and model


def test_model_id_is_refused_for_the_raw_corpus(corpus, tmp_path, capsys):
    arguments = ["--input_dir", str(corpus), "--to_dir", str(tmp_path / "repo"), "--model_id", "me/my-csm"]
    assert push_to_hub.main(arguments) == ExitCode.USAGE
    assert "only with --prepared_dir" in capsys.readouterr().err


def test_prepared_card_declares_the_samples_features_and_sizes(prepared):
    """The export's `dataset_info` (the card's YAML) describes the samples, as the output's own does."""
    source = datasets.load_from_disk(str(prepared.output))
    info = DatasetInfosDict.from_dataset_card_data(card_of(prepared.repo).data)["default"]
    output_info = next(iter(source.values())).info
    assert info.features == output_info.features
    assert {name: split.num_examples for name, split in info.splits.items()} == {
        name: split.num_examples for name, split in output_info.splits.items()
    }
    assert info.dataset_size == sum(split.num_bytes for split in info.splits.values()) == output_info.dataset_size
    text = (prepared.repo / "README.md").read_text(encoding="utf-8")
    assert output_info.description.split("\n\n")[0] in text  # the same description of the format


# --- the upload path, up to the network boundary -------------------------------------------------


class FakeHub:
    """Just enough of the Hub's HTTP API for create_repo / upload_folder / upload_file / list_repo_tree."""

    def __init__(self, *, token_valid=True, preupload_status=200, files=None, drop_on_commit=()):
        self.token_valid, self.preupload_status, self.drop_on_commit = token_valid, preupload_status, drop_on_commit
        self.files: dict[str, bytes] = dict(files or {})
        self.exists = bool(files)
        self.requests: list[tuple[str, str, bytes]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, method: str, path: str, body: bytes):
        repo = "/api/datasets/me/corpus"
        if path == "/api/whoami-v2":
            if not self.token_valid:
                return 401, {"error": "Invalid credentials in Authorization header"}, {}
            return 200, {"name": "me", "auth": {"accessToken": {"role": "write"}}}, {}
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}, {}
        if method == "POST" and path == "/api/repos/create":
            self.exists = True
            return 200, {"url": f"{self.url}/datasets/me/corpus"}, {}
        if not self.exists and path.startswith(repo):
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        if method == "GET" and path in (repo, f"{repo}/revision/main"):
            return 200, self.info(), {}
        if method == "GET" and path.startswith(f"{repo}/tree/main"):
            return (
                200,
                [
                    {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for p, b in sorted(self.files.items())
                ],
                {},
            )
        if method == "POST" and path == f"{repo}/preupload/main":
            if self.preupload_status != 200:
                return self.preupload_status, {"error": "You don't have the rights to write to this repository"}, {}
            files = json.loads(body)["files"]
            return (
                200,
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                {},
            )
        if method == "POST" and path == f"{repo}/commit/main":
            self.commit(body)
            return (
                200,
                {"commitUrl": f"{self.url}/datasets/me/corpus/commit/1", "commitOid": "1" * 40, "pullRequestUrl": None},
                {},
            )
        return 404, {"error": f"not in the fake hub: {method} {path}"}, {}

    def info(self) -> dict:
        card = self.files.get("README.md", b"").decode()
        card_data = yaml.safe_load(card.split("---")[1]) if card.startswith("---") else None
        return {
            "id": "me/corpus",
            "sha": "1" * 40,
            "private": False,
            "cardData": card_data,
            "siblings": [{"rfilename": path} for path in sorted(self.files)],
        }

    def commit(self, body: bytes) -> None:
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file" and item["value"]["path"] not in self.drop_on_commit:
                self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                self.files.pop(item["value"]["path"], None)

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def handle_request(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urlparse(self.path).path
                hub.requests.append((self.command, path, body))
                status, payload, headers = hub.answer(self.command, path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {
                    "Content-Type": "application/json",
                    "Content-Length": str(len(data)),
                    **headers,
                }.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = handle_request

        return Handler


@pytest.fixture
def fake_hub(monkeypatch):
    hubs = []

    def start(**kwargs) -> FakeHub:
        hub = FakeHub(**kwargs)
        hubs.append(hub)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
        return hub

    yield start
    for hub in hubs:
        hub.close()


def upload_arguments(corpus: Path, cache_dir: str, staging: Path, *extra: str, shard_size: str = "40KB") -> list[str]:
    return [
        "--input_dir",
        str(corpus),
        "--repo_id",
        REPO_ID,
        "--cache_dir",
        cache_dir,
        "--staging_dir",
        str(staging),
        "--max_shard_size",
        shard_size,
        *SPLIT_ARGUMENTS,
        *extra,
    ]


def staged_folders(staging: Path) -> list[Path]:
    return sorted(staging.glob("*/repository")) if staging.exists() else []


def test_upload_goes_through_and_the_hub_holds_exactly_the_to_dir_repository(
    fake_hub, corpus, cache_dir, raw_repo, tmp_path, capsys
):
    hub = fake_hub()
    assert push_to_hub.main(upload_arguments(corpus, cache_dir, tmp_path / "staging", "--private")) == 0
    expected = {path: (raw_repo / path).read_bytes() for path in inspect_repository(raw_repo).files}
    assert hub.files == expected
    create = next(json.loads(body) for method, path, body in hub.requests if path == "/api/repos/create")
    assert create["visibility"] == "private" and create["type"] == "dataset"
    paths = [path for _, path, _ in hub.requests]
    assert paths.index("/api/validate-yaml") < paths.index("/api/datasets/me/corpus/preupload/main")  # card first
    commits = [body for method, path, body in hub.requests if path.endswith("/commit/main")]
    assert b"README.md" not in commits[0] and b'"path": "README.md"' in commits[-1]  # the card goes last
    assert staged_folders(tmp_path / "staging") == []  # the staging folder is removed after success
    assert f"to {hub.url}/datasets/me/corpus" in capsys.readouterr().out

    # again with larger shards: the repository is updated and the shards of the first upload are gone
    assert push_to_hub.main(upload_arguments(corpus, cache_dir, tmp_path / "staging", shard_size="1MB")) == 0
    shards = [SHARD_NAME.match(path) for path in hub.files if path.startswith("data/")]
    assert shards and all(match and match["count"] == "00001" for match in shards)
    assert set(hub.files) - {match.string for match in shards} == {"README.md", "figures/turn_seconds.png"}


def test_upload_reports_an_incomplete_upload(fake_hub, corpus, cache_dir, raw_repo, tmp_path, capsys):
    lost = sorted(inspect_repository(raw_repo).files)[1]
    fake_hub(drop_on_commit=(lost,))
    assert push_to_hub.main(upload_arguments(corpus, cache_dir, tmp_path / "staging")) == ExitCode.REMOTE
    error = capsys.readouterr().err
    assert "incomplete" in error and lost in error and "--staged_dir" in error
    (kept,) = staged_folders(tmp_path / "staging")
    assert inspect_repository(kept).files == inspect_repository(raw_repo).files  # kept, complete, reusable


def test_upload_permission_denied_after_complete_staging(fake_hub, corpus, cache_dir, raw_repo, tmp_path, capsys):
    hub = fake_hub(preupload_status=403)
    assert push_to_hub.main(upload_arguments(corpus, cache_dir, tmp_path / "staging")) == ExitCode.AUTH
    assert "permission denied (403)" in capsys.readouterr().err
    preupload = next(json.loads(body) for method, path, body in hub.requests if path.endswith("/preupload/main"))
    data_and_figures = {path for path in inspect_repository(raw_repo).files if path != "README.md"}
    assert {item["path"] for item in preupload["files"]} == data_and_figures  # the upload began with every file
    assert hub.files == {}


def test_upload_refuses_a_repository_with_another_layout(fake_hub, corpus, cache_dir, tmp_path, capsys):
    other = {"README.md": b"---\nconfigs:\n- config_name: default\n  data_files: train.csv\n---\n", "train.csv": b"a\n"}
    hub = fake_hub(files=other)
    assert push_to_hub.main(upload_arguments(corpus, cache_dir, tmp_path / "staging")) == ExitCode.REMOTE
    error = capsys.readouterr().err
    assert "another layout" in error and "train.csv" in error and "--force" in error
    assert hub.files == other and staged_folders(tmp_path / "staging") == []  # refused before any work


def hold_lock_then_die(folder: Path, ready) -> None:
    with FolderLock(folder, "--staging_dir"):
        ready.set()
        time.sleep(60)


def test_upload_removes_the_staging_folder_of_a_killed_upload_but_not_one_kept_for_staged_dir(
    fake_hub, corpus, cache_dir, tmp_path, caplog
):
    staging = tmp_path / "staging"
    killed, kept = staging / "csm-hub-killed", staging / "csm-hub-kept"
    (killed / "repository" / "data").mkdir(parents=True)
    (kept / "repository").mkdir(parents=True)  # kept after a failed upload: its lock was released
    ready = multiprocessing.get_context("fork").Event()
    upload = multiprocessing.get_context("fork").Process(target=hold_lock_then_die, args=(killed, ready))
    upload.start()
    assert ready.wait(30)
    upload.kill()  # SIGKILL while staging: its lock stays beside the folder
    upload.join()

    fake_hub()
    assert push_to_hub.main(upload_arguments(corpus, cache_dir, staging)) == 0
    assert not killed.exists() and staged_folders(staging) == [kept / "repository"]
    assert sorted(path.name for path in staging.iterdir()) == ["csm-hub-kept"]  # no lock left either
    assert f"removing {killed}, the staging folder of an upload that was killed" in caplog.messages


def test_upload_with_a_rejected_token(fake_hub, corpus, tmp_path, capsys):
    fake_hub(token_valid=False)
    assert push_to_hub.main(upload_arguments(corpus, str(tmp_path / "cache"), tmp_path / "staging")) == ExitCode.AUTH
    assert "rejected the token (401" in capsys.readouterr().err
    assert staged_folders(tmp_path / "staging") == []


def test_upload_without_a_token(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    assert push_to_hub.main(upload_arguments(corpus, str(tmp_path / "cache"), tmp_path / "staging")) == ExitCode.AUTH
    assert "no Hugging Face token: set HF_TOKEN or run `hf auth login`" in capsys.readouterr().err
    assert staged_folders(tmp_path / "staging") == []


def test_upload_without_network_as_a_command(corpus, tmp_path):
    with contextlib.closing(socket.socket()) as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{closed_port}", "HF_TOKEN": "hf_fake_token"}
    arguments = upload_arguments(corpus, str(tmp_path / "cache"), tmp_path / "staging")
    command = [sys.executable, str(ROOT / "scripts" / "push_to_hub.py"), *arguments]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == ExitCode.NETWORK, result.stderr
    assert f"cannot reach the Hugging Face Hub at http://127.0.0.1:{closed_port}" in result.stderr
    assert staged_folders(tmp_path / "staging") == []
