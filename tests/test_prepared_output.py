"""What a prepared output says about itself: the format it loads in, its dataset info, its empty splits.

Real prepare pipeline, real `save_to_disk` layout read by `load_from_disk`, real export through the command.
"""

import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard

from csm_synthetic import read_corpus
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.splits import SPLITS
from csm_synthetic.testing.demo import create_demo_corpus
from transforms.core.quality import QualityChecks
from transforms.features import sample_features
from transforms.pipeline.options import REPORT_NAME, PrepareOptions
from transforms.pipeline.prepare import prepare
from transforms.pipeline.report import format_summary
from transforms.testing.offline import build_tiny_codec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import push_to_hub  # noqa: E402 - the command under test

SETTINGS = CorpusSettings(validation_fraction=0.3, test_fraction=0.2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three conversations: under SETTINGS at least one of the three splits gets none (checked below)."""
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    create_demo_corpus(root, languages=("en",), conversations_per_language=3, turns=(2, 3), seconds=(0.3, 0.6))
    return root


def prepared(corpus, processor_dir, folder: Path, **options) -> tuple[Path, dict]:
    output = folder / "out"
    values = dict(input_dir=str(corpus), output_dir=str(output), model_id=processor_dir, cache_dir=str(folder / "cache"),
                  max_history=2, num_proc=1, corpus=SETTINGS,
                  quality=QualityChecks.off())  # the checks would drop the short turns: splits as the ids decide
    return output, prepare(PrepareOptions(**{**values, **options}))


@pytest.fixture(scope="module")
def output(corpus, processor_dir, tmp_path_factory):
    return prepared(corpus, processor_dir, tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def codes_output(corpus, processor_dir, tmp_path_factory):
    codec = tmp_path_factory.mktemp("codec")
    build_tiny_codec().save_pretrained(codec)
    options = dict(format="codes", codec_model_id=str(codec), device="cpu")
    return prepared(corpus, processor_dir, tmp_path_factory.mktemp("codes"), **options)


def used_splits(corpus) -> set[str]:
    return {SETTINGS.split_of(conversation.conversation_id) for conversation in read_corpus(corpus).conversations}


def test_load_from_disk_gives_numpy_rows_of_the_processors_shapes(output):
    folder, _ = output
    loaded = datasets.load_from_disk(str(folder))
    for split in loaded.values():
        assert split.format["type"] == "numpy"
        row = split[0]
        assert row["input_values"].dtype == np.float32 and row["input_values"].shape[0] == 1
        for name in ("input_ids", "attention_mask", "labels", "input_values_cutoffs"):
            assert row[name].dtype == np.int64 and row[name].ndim == 1, name


def test_codes_output_loads_as_python_lists_and_says_it_is_codes(codes_output):
    """Python lists: datasets' numpy formatter converts every frame of codes on its own (2x slower)."""
    folder, report = codes_output
    for name, split in datasets.load_from_disk(str(folder)).items():
        assert split.format["type"] is None
        row = split[0]
        assert isinstance(row["audio_codes"], list) and isinstance(row["input_ids"], list)
        assert split.features["input_ids"].feature.dtype == "int64"  # as in the processor format
        assert split.info.config_name == "codes" and "in the `codes` format" in split.info.description
        assert split.info.splits[name].num_examples == report["counts"]["by_split"][name]["samples"]


def test_dataset_info_describes_the_samples(output):
    folder, report = output
    loaded = datasets.load_from_disk(str(folder))
    for name, split in loaded.items():
        info = split.info
        assert split.split == name
        assert "in the `processor` format" in info.description and "Turns of" not in info.description
        assert "max_history=2" in info.description and str(folder) not in info.description
        assert info.features == sample_features()
        assert info.config_name == "processor" and info.builder_name is None
        assert {split: sizes.num_examples for split, sizes in info.splits.items()} == {
            split: counts["samples"] for split, counts in report["counts"]["by_split"].items()
        }
        assert info.dataset_size == sum(sizes.num_bytes for sizes in info.splits.values())
        on_disk = sum(path.stat().st_size for path in folder.rglob("*.arrow"))
        assert 0.9 * on_disk < info.dataset_size <= on_disk  # the samples' size, not the raw builder's


def test_empty_splits_are_left_out_and_said_in_report_summary_and_card(output, corpus, tmp_path, capsys):
    folder, report = output
    empty = set(SPLITS) - used_splits(corpus)
    assert empty, "the corpus should leave a split empty under SETTINGS"
    assert set(datasets.load_from_disk(str(folder))) == used_splits(corpus)
    reasons = report["counts"]["empty_splits"]
    assert set(reasons) == empty
    assert all("no conversation's id hashed into it" in reason and "3 conversations" in reason for reason in reasons.values())
    summary = format_summary(report)
    for split in empty:
        assert f"{split:<10} empty, not in the output: {reasons[split]}" in summary

    prepared_repo, raw_repo = tmp_path / "prepared_repo", tmp_path / "raw_repo"
    assert push_to_hub.main(["--prepared_dir", str(folder), "--to_dir", str(prepared_repo)]) == 0
    split_arguments = ["--validation_fraction", "0.3", "--test_fraction", "0.2", "--cache_dir", str(tmp_path / "cache")]
    assert push_to_hub.main(["--input_dir", str(corpus), "--to_dir", str(raw_repo), *split_arguments]) == 0
    prepared_card = (prepared_repo / "README.md").read_text(encoding="utf-8")
    raw_card = (raw_repo / "README.md").read_text(encoding="utf-8")
    for split in empty:
        assert f"- `{split}`: {reasons[split]}" in prepared_card
        assert f"`{split}` of `all`" in raw_card
    for repo in (prepared_repo, raw_repo):
        declared = {entry["split"] for config in DatasetCard.load(repo / "README.md").data.configs
                    for entry in config["data_files"]}
        assert declared == used_splits(corpus)


def test_a_split_whose_turns_all_get_no_sample_is_left_out_with_why(corpus, processor_dir, tmp_path):
    folder, report = prepared(corpus, processor_dir, tmp_path, max_tokens=8)  # no turn fits, even alone
    assert report["counts"]["samples"] == 0 and report["counts"]["skipped_samples"] > 0
    reasons = report["counts"]["empty_splits"]
    assert set(reasons) == set(SPLITS)
    for split in used_splits(corpus):
        conversations = report["counts"]["by_split"][split]["conversations"]
        assert reasons[split] == f"its {conversations} conversations gave no sample (every turn was skipped: see skipped)"
    assert len(datasets.load_from_disk(str(folder))) == 0
    assert json.loads((folder / REPORT_NAME).read_text())["counts"]["empty_splits"] == reasons
