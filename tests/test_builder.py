"""The datasets builder: aligned rows only, language configs, row order, features, splits that never
leak or move, cache invalidation, and header-only speed on a corpus of a few thousand turns."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest

from csm_synthetic.errors import InputError
from csm_synthetic.settings import CorpusSettings

from conftest import (
    expected_turn_count,
    numbers_in_name,
    rows_by_split,
    script_texts,
    write_conversation,
)
from csm_synthetic.audio import resampled_length
from csm_synthetic.builder import CsmSynthetic, available_configs, corpus_fingerprint, load_turns
from csm_synthetic.testing.demo import create_benchmark_corpus
from csm_synthetic import splits
from csm_synthetic.splits import SPLITS, split_of


def all_rows(rows: dict[str, list[dict]]) -> list[dict]:
    return [row for split in rows.values() for row in split]


def split_of_each_conversation(rows: dict[str, list[dict]]) -> dict[str, str]:
    """conversation id -> its split; fails if a conversation has rows in two splits."""
    found: dict[str, set[str]] = {}
    for split, split_rows in rows.items():
        for row in split_rows:
            found.setdefault(row["conversation_id"], set()).add(split)
    spanning = {cid: splits for cid, splits in found.items() if len(splits) > 1}
    assert not spanning, f"conversations in several splits: {spanning}"
    return {cid: splits.pop() for cid, splits in found.items()}


def write_small_conversations(root: Path, ids: list[str]) -> None:
    for conversation_id in ids:
        write_conversation(root, conversation_id, [1, 2], frames=lambda n: 120 * n)


# --- the demo corpus: alignment ---------------------------------------------------------------------


def test_every_row_is_aligned_with_its_file_and_script_line(demo, demo_rows):
    rows = all_rows(demo_rows)
    assert rows
    for row in rows:
        segments = Path(demo.root) / row["conversation_id"] / "segments"
        path = row["audio"]["path"]
        assert Path(path).parent == segments and row["audio"]["bytes"] is None
        assert numbers_in_name(path) == (row["turn_index"] + 1, row["speaker"] + 1)
        assert (row["speaker"] + 1, row["text"]) == script_texts(segments)[row["turn_index"]]
        assert row["language"] == row["conversation_id"].split("/")[0]


def test_faulty_conversations_yield_nothing_or_a_clean_prefix(demo, demo_rows):
    turns = {}
    for row in all_rows(demo_rows):
        turns.setdefault(row["conversation_id"], []).append(row["turn_index"])
    for written in demo.conversations:
        kept = expected_turn_count(demo, written.conversation_id)
        assert sorted(turns.get(written.conversation_id, [])) == list(range(kept)), written.conversation_id
    assert set(turns) <= {c.conversation_id for c in demo.conversations}


def test_rows_are_the_turns_of_the_reader(demo_corpus, demo_rows):
    by_key = {(row["conversation_id"], row["turn_index"]): row for row in all_rows(demo_rows)}
    assert len(by_key) == sum(len(c.turns) for c in demo_corpus.conversations)
    for conversation in demo_corpus.conversations:
        for turn in conversation.turns:
            row = by_key[(conversation.conversation_id, turn.index)]
            assert row["audio"]["path"] == turn.audio_path
            assert row["duration"] == pytest.approx(turn.duration, rel=1e-6)


def test_features_store_audio_paths_at_the_target_rate(demo_dataset):
    for part in demo_dataset.values():
        audio = part.features["audio"]
        assert isinstance(audio, datasets.Audio) and audio.sampling_rate == 24_000 and audio.decode
        assert part.features["turn_index"] == datasets.Value("int32")
        assert part.features["speaker"] == datasets.Value("int32")


def test_target_sampling_rate_is_configurable(tmp_path):
    write_small_conversations(tmp_path / "corpus", ["en/a"])
    dataset = load_turns(tmp_path / "corpus", cache_dir=str(tmp_path / "cache"), target_sampling_rate=16_000)
    assert dataset["train"].features["audio"].sampling_rate == 16_000


def test_audio_decodes_through_datasets_at_the_target_rate(demo, demo_dataset, demo_corpus):
    """Through the Audio feature (torchcodec + FFmpeg): odd-format files come out mono at 24 kHz."""
    try:
        import torchcodec.decoders  # noqa: F401  (raises RuntimeError, not ImportError, without FFmpeg)
    except (ImportError, RuntimeError, OSError) as error:
        pytest.skip(f"torchcodec cannot decode here: {error}")
    turns = {(c.conversation_id, t.index): t for c in demo_corpus.conversations for t in c.turns}
    part = demo_dataset["train"]
    odd = [i for i, row in enumerate(part.select_columns(["conversation_id", "turn_index"]))
           if turns[(row["conversation_id"], row["turn_index"])].sampling_rate != 24_000
           or turns[(row["conversation_id"], row["turn_index"])].channels != 1]
    assert odd
    try:
        decoded = part[odd[0]]["audio"]
        samples = decoded.get_all_samples()
    except (RuntimeError, OSError) as error:  # FFmpeg libraries missing
        pytest.skip(f"datasets cannot decode audio here: {error}")
    row = part[odd[0]]
    turn = turns[(row["conversation_id"], row["turn_index"])]
    assert samples.sample_rate == 24_000 and samples.data.shape[0] == 1
    assert abs(samples.data.shape[1] - resampled_length(turn.frames, turn.sampling_rate, 24_000)) <= 2


# --- language configs -------------------------------------------------------------------------------


def test_available_configs_are_all_plus_languages(demo):
    languages = sorted({c.language for c in demo.conversations})
    assert available_configs(demo.root) == ["all", *languages]


def test_language_config_yields_only_its_language(demo, tmp_path):
    dataset = load_turns(demo.root, config_name="de", cache_dir=str(tmp_path))
    rows = all_rows(rows_by_split(dataset))
    assert {row["language"] for row in rows} == {"de"}
    assert all(row["conversation_id"].startswith("de/") for row in rows)
    assert len(rows) == sum(c.turns for c in demo.conversations if c.language == "de")


def test_all_config_yields_every_language(demo, demo_rows):
    expected = Counter()
    for conversation in demo.conversations:
        expected[conversation.language] += expected_turn_count(demo, conversation.conversation_id)
    assert Counter(row["language"] for row in all_rows(demo_rows)) == expected
    assert set(expected) == {"en", "de", "fr"}


def test_unknown_config_or_corpus_is_a_clear_error(demo, tmp_path):
    with pytest.raises(ValueError, match=r"no language folder 'xx'.*available configs: \['all', 'de', 'en', 'fr'\]"):
        CsmSynthetic(data_dir=demo.root, config_name="xx", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="'_meta'"):
        CsmSynthetic(data_dir=demo.root, config_name="_meta", cache_dir=str(tmp_path))
    with pytest.raises(InputError, match="no-such-corpus"):
        CsmSynthetic(data_dir=tmp_path / "no-such-corpus", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="data_dir"):
        CsmSynthetic(cache_dir=str(tmp_path))


# --- order ------------------------------------------------------------------------------------------


def test_rows_are_ordered_by_conversation_then_turn(tmp_path):
    corpus = tmp_path / "corpus"
    for conversation_id in ("en/show/ep1", "en/show-2", "en/Show", "en/a.b"):  # string vs path-part order differ
        write_conversation(corpus, conversation_id, [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2],
                           naming="{turn}_speaker{speaker}.wav", frames=lambda n: 24 * n)
    dataset = load_turns(corpus, cache_dir=str(tmp_path / "cache"), validation_fraction=0.0, test_fraction=0.0)
    (rows,) = rows_by_split(dataset).values()
    keys = [(row["conversation_id"], row["turn_index"]) for row in rows]
    assert keys == sorted(keys)
    assert [key[1] for key in keys] == list(range(12)) * 4
    assert [numbers_in_name(row["audio"]["path"])[0] for row in rows] == list(range(1, 13)) * 4


# --- splits -----------------------------------------------------------------------------------------


def test_splits_are_stable_when_the_corpus_grows(tmp_path):
    corpus, cache = tmp_path / "corpus", str(tmp_path / "cache")
    fractions = {"validation_fraction": 0.25, "test_fraction": 0.25}
    first_ids = [f"en/show/{i:03d}" for i in range(40)]
    write_small_conversations(corpus, first_ids)
    before = split_of_each_conversation(rows_by_split(load_turns(corpus, cache_dir=cache, **fractions)))
    assert set(before) == set(first_ids) and set(before.values()) == set(SPLITS)

    new_ids = [f"en/new/{i:03d}" for i in range(40)] + [f"en/show/{i:03d}b" for i in range(20)]
    write_small_conversations(corpus, new_ids)
    after = split_of_each_conversation(rows_by_split(load_turns(corpus, cache_dir=cache, **fractions)))
    assert set(after) == set(first_ids) | set(new_ids)  # rebuilt, not the stale cache
    assert {cid: after[cid] for cid in first_ids} == before
    assert after == {cid: split_of(cid, **fractions) for cid in after}


def test_split_fractions_are_configurable(tmp_path):
    corpus = tmp_path / "corpus"
    write_small_conversations(corpus, [f"en/c{i:02d}" for i in range(30)])
    only_train = load_turns(corpus, cache_dir=str(tmp_path / "a"), validation_fraction=0.0, test_fraction=0.0)
    assert list(only_train) == ["train"] and only_train["train"].num_rows == 60
    only_test = split_of_each_conversation(
        rows_by_split(load_turns(corpus, cache_dir=str(tmp_path / "b"), validation_fraction=0.0, test_fraction=0.99))
    )
    assert "validation" not in only_test.values() and Counter(only_test.values())["test"] > 20
    with pytest.raises(ValueError, match="split fractions"):
        CsmSynthetic(data_dir=corpus, cache_dir=str(tmp_path / "c"), settings=CorpusSettings(validation_fraction=0.6, test_fraction=0.5))
    with pytest.raises(ValueError, match="split fractions"):
        load_turns(corpus, cache_dir=str(tmp_path / "c"), validation_fraction=-0.1)


def test_split_fractions_are_honoured_on_many_ids():
    ids = [f"en/Category/{i:06d}" for i in range(20_000)]
    for validation, test in ((0.05, 0.05), (0.1, 0.2), (0.0, 0.3)):
        counts = Counter(split_of(cid, validation, test) for cid in ids)
        assert counts["validation"] / len(ids) == pytest.approx(validation, abs=0.01)
        assert counts["test"] / len(ids) == pytest.approx(test, abs=0.01)
    assert [split_of(cid, 0.1, 0.2) for cid in ids[:500]] == [split_of(cid, 0.1, 0.2) for cid in ids[:500]]


def test_split_does_not_depend_on_the_process(tmp_path):
    """Same split in a fresh interpreter with another hash seed (no use of Python's salted hash)."""
    ids = [f"de/x/{i}" for i in range(200)]
    # load splits.py on its own: importing the package would pull in datasets (seconds)
    code = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('splits', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "print(','.join(m.split_of(i, 0.2, 0.2) for i in sys.argv[2:]))"
    )
    out = subprocess.run([sys.executable, "-c", code, splits.__file__, *ids], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    assert out.split(",") == [split_of(i, 0.2, 0.2) for i in ids]


# --- cache ------------------------------------------------------------------------------------------


def test_fingerprint_follows_the_files_of_the_config(tmp_path):
    corpus = tmp_path / "corpus"
    write_small_conversations(corpus, ["en/a", "de/a"])
    en, de, everything = (corpus_fingerprint(corpus, langs) for langs in (["en"], ["de"], None))
    assert len({en, de, everything}) == 3
    assert corpus_fingerprint(corpus, ["en"]) == en  # nothing changed

    write_small_conversations(corpus, ["en/b"])
    assert corpus_fingerprint(corpus, ["en"]) != en
    assert corpus_fingerprint(corpus, None) != everything
    assert corpus_fingerprint(corpus, ["de"]) == de  # another language's cache stays valid

    script = corpus / "de/a/segments/vibevoice-podcast-script.txt"
    script.write_text(script.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert corpus_fingerprint(corpus, ["de"]) != de


def test_cache_is_reused_until_the_corpus_changes(tmp_path):
    corpus, cache = tmp_path / "corpus", str(tmp_path / "cache")
    write_small_conversations(corpus, ["en/a", "en/b"])
    first = load_turns(corpus, cache_dir=cache, validation_fraction=0.0, test_fraction=0.0)["train"]
    again = load_turns(corpus, cache_dir=cache, validation_fraction=0.0, test_fraction=0.0)["train"]
    assert again.cache_files == first.cache_files and again.num_rows == 4

    write_small_conversations(corpus, ["en/c"])  # new files
    grown = load_turns(corpus, cache_dir=cache, validation_fraction=0.0, test_fraction=0.0)["train"]
    assert grown.cache_files != first.cache_files
    assert sorted(set(grown["conversation_id"])) == ["en/a", "en/b", "en/c"]

    script = corpus / "en/a/segments/vibevoice-podcast-script.txt"  # an edited line
    script.write_text(script.read_text(encoding="utf-8").replace("Line 2 of en/a.", "A corrected line."),
                      encoding="utf-8")
    edited = load_turns(corpus, cache_dir=cache, validation_fraction=0.0, test_fraction=0.0)["train"]
    assert "A corrected line." in edited["text"] and "Line 2 of en/a." not in edited["text"]

    shutil.rmtree(corpus / "en/b")  # a removed conversation
    shrunk = load_turns(corpus, cache_dir=cache, validation_fraction=0.0, test_fraction=0.0)["train"]
    assert sorted(set(shrunk["conversation_id"])) == ["en/a", "en/c"]


def test_cache_follows_the_config(tmp_path):
    corpus, cache = tmp_path / "corpus", str(tmp_path / "cache")
    write_conversation(corpus, "en/a", [1, 2, 1, 2])  # turn n lasts n * 10 ms
    whole = load_turns(corpus, cache_dir=cache, validation_fraction=0.0, test_fraction=0.0)["train"]
    cut = load_turns(corpus, cache_dir=cache, validation_fraction=0.0, test_fraction=0.0, max_turn_seconds=0.025)
    assert whole.num_rows == 4 and cut["train"]["turn_index"] == [0, 1]
    moved = load_turns(corpus, cache_dir=cache, validation_fraction=0.0, test_fraction=0.99)
    assert list(moved) == [split_of("en/a", 0.0, 0.99)]


# --- speed: headers only ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    """About 2600 turns of 0.5-1 s (20-turn conversations)."""
    return create_benchmark_corpus(tmp_path_factory.mktemp("bench") / "corpus", hours=0.55, seconds=(0.5, 1.0))


def test_building_a_few_thousand_turns_reads_only_headers(benchmark, tmp_path):
    assert benchmark.total_turns >= 2000
    start = time.perf_counter()
    dataset = load_turns(benchmark.root, cache_dir=str(tmp_path))
    elapsed = time.perf_counter() - start
    assert sum(part.num_rows for part in dataset.values()) == benchmark.total_turns
    assert elapsed < 20, f"building {benchmark.total_turns} turns took {elapsed:.1f} s"

    # the Arrow cache holds paths and text, not samples: it is a small fraction of the audio
    arrow_bytes = sum(os.path.getsize(f["filename"]) for part in dataset.values() for f in part.cache_files)
    audio_bytes = sum(p.stat().st_size for p in Path(benchmark.root).rglob("*.wav"))
    assert arrow_bytes < 0.02 * audio_bytes, (arrow_bytes, audio_bytes)
    assert np.mean([row["bytes"] is None for row in
                    dataset["train"].cast_column("audio", datasets.Audio(decode=False))["audio"]]) == 1.0
