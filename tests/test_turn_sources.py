"""Other sources of turns than a corpus folder (issue 13, 1-2): a JSONL/CSV manifest (turns may be spans of a
long recording, read by seeking) and a `datasets` dataset of turns (a Hub repository or a folder, audio
embedded or as paths, columns mapped). Each gives the folder's features, splits and problem kinds, and
preparing from it gives the same samples as preparing the folder - also from what push_to_hub.py publishes.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from conftest import write_conversation
from csm_synthetic.audio import load_audio
from csm_synthetic.builder import CsmSynthetic, load_turns, turn_features
from csm_synthetic.corpus import ProblemKind, read_corpus
from csm_synthetic.dataset_input import read_dataset
from csm_synthetic.errors import InputError
from csm_synthetic.manifest import manifest_rows, read_manifest
from csm_synthetic.sources import DatasetSource, ManifestSource
from csm_synthetic.splits import split_of

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import inspect_corpus  # noqa: E402
import prepare_dataset_for_training  # noqa: E402
import push_to_hub  # noqa: E402

RATE = 24_000
FIELDS = ["conversation_id", "turn_index", "speaker", "text", "audio", "start", "end", "language"]
SPLIT_ARGUMENTS = ["--validation_fraction", "0.3", "--test_fraction", "0.3"]


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """Rows as JSONL or CSV (by the suffix); a CSV leaves absent values empty."""
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows({name: "" if row.get(name) is None else row[name] for name in FIELDS} for row in rows)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_noise(path: Path, frames: int, rate: int = RATE, seed: int = 0) -> np.ndarray:
    samples = (0.1 * np.random.default_rng(seed).standard_normal(frames)).astype(np.float32)
    sf.write(path, samples, rate, subtype="PCM_16")
    return samples


def row(conversation_id, turn_index, speaker, text, audio, start=None, end=None, language="en") -> dict:
    return dict(conversation_id=conversation_id, turn_index=turn_index, speaker=speaker, text=text, audio=audio,
                start=start, end=end, language=language)


def keys(problems) -> set[tuple]:
    return {(p.conversation_id, p.turn_index, p.kind) for p in problems}


# --- manifests: the reader ------------------------------------------------------------------------


@pytest.fixture
def episodes(tmp_path) -> Path:
    """Two long recordings (24 kHz WAV, 16 kHz FLAC) in tmp_path/audio."""
    (tmp_path / "audio").mkdir()
    write_noise(tmp_path / "audio" / "ep1.wav", 3 * RATE, seed=1)
    sf.write(tmp_path / "audio" / "ep2.flac", write_noise(tmp_path / "scratch.wav", 2 * 16_000, 16_000, seed=2),
             16_000, subtype="PCM_16")
    return tmp_path


def episode_rows() -> list[dict]:
    return [
        row("show/ep1", 0, 0, "Welcome.", "audio/ep1.wav", 0.0, 1.0),
        row("show/ep1", 1, 1, "Thanks.", "audio/ep1.wav", 1.0, 2.25),
        row("show/ep1", 2, 0, "Bye.", "audio/ep1.wav", 2.25, None),
        row("show/ep2", 1, "1", "Hallo zurück.", "audio/ep2.flac", 0.5, 2.0, "de"),  # rows in any order
        row("show/ep2", 0, "0", "Hallo.", "audio/ep2.flac", None, 0.5, "de"),
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_manifest_gives_spans_of_long_recordings_as_turns(episodes, suffix):
    corpus = read_manifest(write_manifest(episodes / f"turns{suffix}", episode_rows()))
    assert corpus.problems == ()
    assert [(c.conversation_id, c.language) for c in corpus.conversations] == [("show/ep1", "en"), ("show/ep2", "de")]
    ep1, ep2 = corpus.conversations
    assert [(t.index, t.speaker, t.text, t.frames) for t in ep1.turns] == [
        (0, 0, "Welcome.", RATE), (1, 1, "Thanks.", 30_000), (2, 0, "Bye.", 18_000)
    ]
    assert [(t.speaker, t.frames, t.sampling_rate, t.start, t.end) for t in ep2.turns] == [
        (0, 8_000, 16_000, None, 0.5), (1, 24_000, 16_000, 0.5, 2.0)
    ]
    assert all(Path(t.audio_path).is_absolute() for t in ep1.turns + ep2.turns)


@pytest.mark.parametrize("name, rate", [("ep1.wav", RATE), ("ep2.flac", 16_000)])
def test_a_span_decodes_to_exactly_that_part_of_the_file(episodes, name, rate):
    path = episodes / "audio" / name
    whole, _ = sf.read(path, dtype="float32")
    start, end = 0.5, 1.25
    part = episodes / f"part_{name}"
    sf.write(part, whole[round(start * rate):round(end * rate)], rate, subtype="PCM_16")
    span = load_audio(str(path), RATE, start, end)
    np.testing.assert_array_equal(span, load_audio(str(part), RATE))  # resampled the same way
    assert len(span) == round((end - start) * RATE)


def test_manifest_faults_are_problems_naming_conversation_turn_and_line(episodes):
    rows = [
        row("missing_file", 0, 0, "a", "audio/ep1.wav", 0, 1), row("missing_file", 1, 1, "b", "audio/nowhere.wav"),
        row("gap", 0, 0, "a", "audio/ep1.wav", 0, 1), row("gap", 1, 1, "b", "audio/ep1.wav", 1, 2),
        row("gap", 3, 0, "d", "audio/ep1.wav", 2, 3),
        row("repeat", 0, 0, "a", "audio/ep1.wav", 0, 1), row("repeat", 1, 1, "b", "audio/ep1.wav", 1, 2),
        row("repeat", 1, 1, "b2", "audio/ep1.wav", 2, 3),
        row("overlap", 0, 0, "a", "audio/ep1.wav", 0, 1), row("overlap", 1, 1, "b", "audio/ep1.wav", 1, 2.2),
        row("overlap", 2, 0, "c", "audio/ep1.wav", 2.1, 3),
        row("past_end", 0, 0, "a", "audio/ep1.wav", 0, 1), row("past_end", 1, 1, "b", "audio/ep1.wav", 1, 9.5),
        row("types", 0, 0, "a", "audio/ep1.wav", 0, 1), row("types", 1, 1, 42, "audio/ep1.wav", 1, 2),
        row("types", 2, 0, "c", "audio/ep1.wav", "soon", 3),
        row("speaker", 0, 0, "a", "audio/ep1.wav", 0, 1), row("speaker", 1, None, "b", "audio/ep1.wav", 1, 2),
        row("no_order", 0, 0, "a", "audio/ep1.wav", 0, 1), row("no_order", "second", 1, "b", "audio/ep1.wav", 1, 2),
        row("languages", 0, 0, "a", "audio/ep1.wav", 0, 1), row("languages", 1, 1, "b", "audio/ep1.wav", 1, 2, "de"),
        row("fine", 0, 0, "a", "audio/ep1.wav", 0, 1),
    ]
    rows.insert(3, {"turn_index": 0, "text": "whose?"})  # line 4: no conversation
    manifest = write_manifest(episodes / "turns.jsonl", rows)
    with manifest.open("a") as file:
        file.write("{not json\n")  # the last line
    corpus = read_manifest(manifest)

    kept = {c.conversation_id: len(c.turns) for c in corpus.conversations}
    assert kept == {"missing_file": 1, "gap": 2, "repeat": 1, "overlap": 1, "past_end": 1, "types": 1, "speaker": 1,
                    "fine": 1}
    cut = ProblemKind.TRUNCATED
    assert keys(corpus.problems) == {
        ("missing_file", 1, ProblemKind.MISSING_AUDIO), ("missing_file", 1, cut),
        ("gap", 2, ProblemKind.MISSING_TURN), ("gap", 2, cut),
        ("repeat", 1, ProblemKind.DUPLICATE_TURN_NUMBER), ("repeat", 1, cut),
        ("overlap", 1, ProblemKind.OVERLAPPING_SPAN), ("overlap", 1, cut),
        ("past_end", 1, ProblemKind.SPAN_PAST_END), ("past_end", 1, cut),
        ("types", 1, ProblemKind.MALFORMED_ROW), ("types", 2, ProblemKind.MALFORMED_ROW), ("types", 1, cut),
        ("speaker", 1, ProblemKind.UNKNOWN_SPEAKER), ("speaker", 1, cut),
        ("no_order", None, ProblemKind.MALFORMED_ROW),
        ("languages", None, ProblemKind.MIXED_LANGUAGES),
        ("turns.jsonl", None, ProblemKind.MALFORMED_ROW),  # the row without a conversation, the line that is no JSON
    }
    lines = {p.message.split(":")[0] for p in corpus.problems if p.kind == ProblemKind.MALFORMED_ROW}
    assert lines == {"turns.jsonl line 4", f"turns.jsonl line {len(rows) + 1}", "turns.jsonl line 16",
                     "turns.jsonl line 17", "turns.jsonl line 21"}
    by_kind = {p.kind: p.message for p in corpus.problems}
    assert "nowhere.wav" in by_kind[ProblemKind.MISSING_AUDIO] and "line 2" in by_kind[ProblemKind.MISSING_AUDIO]
    assert "turns.jsonl line 8, turns.jsonl line 9" in by_kind[ProblemKind.DUPLICATE_TURN_NUMBER]
    assert "9.5" in by_kind[ProblemKind.SPAN_PAST_END] and "3.000 s" in by_kind[ProblemKind.SPAN_PAST_END]


def test_speaker_labels_are_numbered_in_the_order_they_first_speak(episodes):
    labels = ["SPEAKER_07", "SPEAKER_02", "SPEAKER_07", "SPEAKER_02"]
    rows = [row("talk", n, label, f"line {n}", "audio/ep1.wav", 0.5 * n, 0.5 * n + 0.5) for n, label in enumerate(labels)]
    corpus = read_manifest(write_manifest(episodes / "turns.csv", rows))
    assert [turn.speaker for turn in corpus.conversations[0].turns] == [0, 1, 0, 1]


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("turns.txt", "conversation_id,turn_index\n", "neither JSONL nor CSV"),
        ("turns.jsonl", "conversation_id,turn_index,speaker\nshow,0,0\n", "is not JSONL"),
        ("turns.csv", "conversation_id,turn_index,speaker,text\nshow,0,0,hi\n", "lacks the required columns ['audio']"),
        ("turns.jsonl", '{"conversation_id": "a", "turn_index": 0}\n', "['speaker', 'text', 'audio']"),
    ],
)
def test_a_file_that_is_no_manifest_is_refused_naming_file_and_columns(tmp_path, capsys, name, content, expected):
    manifest = tmp_path / name
    manifest.write_text(content)
    with pytest.raises(InputError, match="manifest .*" + name) as refused:
        read_manifest(manifest)
    assert expected in str(refused.value) and "conversation_id, turn_index, speaker, text, audio" in str(refused.value)
    status = prepare_dataset_for_training.main(["--input_manifest", str(manifest), "--output_dir", str(tmp_path / "out")])
    assert status == 2 and expected in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_the_builder_makes_the_same_features_and_splits_from_a_manifest(episodes):
    source = ManifestSource(str(write_manifest(episodes / "turns.jsonl", episode_rows())))
    assert CsmSynthetic(source=source, cache_dir=str(episodes / "cache")).info.features == turn_features()
    turns = load_turns(source, cache_dir=str(episodes / "cache"), validation_fraction=0.3, test_fraction=0.3)
    for split, part in turns.items():
        assert part.features == turn_features()
        for turn in part.cast_column("audio", datasets.Audio(decode=False)):
            assert split_of(turn["conversation_id"], 0.3, 0.3) == split
    rows = {(r["conversation_id"], r["turn_index"]): r for part in turns.values()
            for r in part.remove_columns("audio").to_list()}
    assert rows["show/ep1", 1]["start"] == 1.0 and rows["show/ep1", 1]["end"] == 2.25
    assert rows["show/ep1", 1]["duration"] == pytest.approx(1.25)
    assert rows["show/ep1", 2]["end"] is None and rows["show/ep2", 0]["start"] is None
    assert load_turns(source, "de", cache_dir=str(episodes / "cache"))["train"]["language"] == ["de", "de"]


def test_a_changed_manifest_or_audio_file_rebuilds_the_builder_cache(episodes):
    manifest = write_manifest(episodes / "turns.jsonl", episode_rows())
    fingerprint = ManifestSource(str(manifest)).fingerprint(None)
    assert ManifestSource(str(manifest)).fingerprint(None) == fingerprint
    write_noise(episodes / "audio" / "ep1.wav", 3 * RATE, seed=9)
    assert ManifestSource(str(manifest)).fingerprint(None) != fingerprint
    changed = ManifestSource(str(write_manifest(manifest, episode_rows()[:-1]))).fingerprint(None)
    assert changed not in (fingerprint, ManifestSource(str(manifest)).fingerprint(["en"]))


def test_a_manifest_is_parsed_again_when_it_changes_and_its_rows_are_each_callers_own(episodes):
    manifest = write_manifest(episodes / "turns.jsonl", episode_rows())
    rows, _ = manifest_rows(manifest)
    rows.clear()  # the next caller's rows are whole
    assert [row.text for row in manifest_rows(manifest)[0]] == [row["text"] for row in episode_rows()]
    changed = episode_rows()
    changed[0]["text"] = "WELCOME."  # a file of the same size
    write_manifest(manifest, changed)
    assert manifest_rows(manifest)[0][0].text == "WELCOME."


# --- the same samples from every source -----------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="module")
def folder_corpus(work) -> Path:
    """A corpus folder of 24 kHz PCM_16 turns: 5 conversations in two languages."""
    root = work / "corpus"
    for number, speakers in enumerate([[1, 2, 1], [2, 1], [1, 2, 1, 2], [1, 2], [2, 1, 2]]):
        language = "en" if number % 2 == 0 else "de"
        # lengths differ between conversations, so that no two turns hold the same audio
        write_conversation(root, f"{language}/show/ep{number}", speakers, frames=lambda n: 4_800 + 2_400 * n + 240 * number)
    return root


def prepare(work: Path, name: str, input_flags: list[str], processor_dir: str) -> dict:
    output = work / name
    arguments = [*input_flags, "--output_dir", str(output), "--model_id", processor_dir, "--cache_dir",
                 str(work / "cache"), "--max_history", "2", "--num_proc", "1", "--no_quality_checks", *SPLIT_ARGUMENTS]
    assert prepare_dataset_for_training.main(arguments) == 0
    return {split: part.data.table for split, part in datasets.load_from_disk(str(output)).items()}


@pytest.fixture(scope="module")
def folder_samples(work, folder_corpus, processor_dir) -> dict:
    return prepare(work, "from_folder", ["--input_dir", str(folder_corpus)], processor_dir)


def span_manifest(folder_corpus: Path, target: Path) -> Path:
    """The folder's conversations as one long recording each, the turns as spans of it (as a diarizer gives them)."""
    rows = []
    (target / "recordings").mkdir(parents=True)
    for conversation in read_corpus(folder_corpus).conversations:
        parts = [sf.read(turn.audio_path, dtype="int16")[0] for turn in conversation.turns]
        recording = target / "recordings" / f"{conversation.conversation_id.replace('/', '_')}.wav"
        sf.write(recording, np.concatenate(parts), RATE, subtype="PCM_16")
        bounds = np.cumsum([0] + [len(part) for part in parts]) / RATE
        rows += [
            row(conversation.conversation_id, turn.index, turn.speaker, turn.text,
                f"recordings/{recording.name}", float(bounds[turn.index]), float(bounds[turn.index + 1]),
                conversation.language)
            for turn in conversation.turns
        ]
    return write_manifest(target / "turns.csv", rows[::-1])  # any row order


def assert_same_samples(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for split in expected:
        assert actual[split].num_rows > 0
        assert actual[split].equals(expected[split]), split


def test_a_manifest_of_spans_prepares_to_the_samples_of_the_folder(work, folder_corpus, folder_samples, processor_dir):
    manifest = span_manifest(folder_corpus, work / "spans")
    assert_same_samples(prepare(work, "from_spans", ["--input_manifest", str(manifest)], processor_dir), folder_samples)


def test_the_published_raw_corpus_prepares_to_the_samples_of_the_folder(
    work, folder_corpus, folder_samples, processor_dir
):
    repo = work / "published"
    arguments = ["--input_dir", str(folder_corpus), "--to_dir", str(repo), "--cache_dir", str(work / "cache")]
    assert push_to_hub.main(arguments + SPLIT_ARGUMENTS) == 0
    from_repo = prepare(work, "from_published", ["--input_dataset", str(repo)], processor_dir)
    assert_same_samples(from_repo, folder_samples)
    stored = list((work / "cache" / "csm_synthetic_audio").rglob("*.wav"))
    assert len(stored) == sum(len(c.turns) for c in read_corpus(folder_corpus).conversations)  # each written once


def test_a_dataset_with_its_own_column_names_and_audio_paths(work, folder_corpus, tmp_path, capsys):
    corpus = read_corpus(folder_corpus)
    turns = [(c, t) for c in corpus.conversations for t in c.turns]
    folder = tmp_path / "theirs"
    datasets.Dataset.from_dict({
        "episode": [c.conversation_id for c, _ in turns],
        "idx": [t.index for _, t in turns],
        "who": [str(t.speaker) for _, t in turns],
        "words": [t.text for _, t in turns],
        "clip": [t.audio_path for _, t in turns],  # absolute paths
        "lang": [c.language for c, _ in turns],
    }).save_to_disk(str(folder))
    mapping = "conversation_id=episode,turn_index=idx,speaker=who,text=words,audio=clip,language=lang"
    source = DatasetSource(str(folder), None, (("conversation_id", "episode"), ("turn_index", "idx"), ("speaker", "who"),
                                               ("text", "words"), ("audio", "clip"), ("language", "lang")))
    from_dataset = source.read(None, 60.0)
    assert from_dataset.problems == () and from_dataset.conversations == corpus.conversations
    assert source.languages() == ["de", "en"]

    assert inspect_corpus.main(["--input_dataset", str(folder), "--columns", mapping]) == 0
    assert f"{len(turns)} turns" in capsys.readouterr().out
    assert inspect_corpus.main(["--input_dataset", str(folder)]) == 2
    refusal = capsys.readouterr().err
    assert "lacks the required columns ['conversation_id', 'turn_index', 'speaker', 'text', 'audio']" in refusal
    assert "'episode'" in refusal  # the columns it has
    assert inspect_corpus.main(["--input_dataset", str(folder), "--columns", "episode=conversation_id"]) == 2
    assert "'episode' is not one of our columns" in capsys.readouterr().err
    with pytest.raises(InputError, match="no folder"):
        read_dataset(str(tmp_path / "nowhere"))
