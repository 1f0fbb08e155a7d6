import importlib.util
import os
import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
import soundfile as sf

import numpy as np

from csm_synthetic.testing.demo import (
    FAULT_KINDS,
    LINKED_DIR,
    SCRIPT_NAME,
    SPECIAL_TOKEN,
    TOO_LONG_SECONDS,
    create_benchmark_corpus,
    create_demo_corpus,
)

AUDIO_NAME = re.compile(r"^(?:segment_)?(\d+)_(?:speaker|spk)(\d+)\.(?:wav|flac)$")
SCRIPT_LINE = re.compile(r"^\[(\d+)\]:\s*(.*)$")
SHORT_TURNS = (0.2, 0.6)  # seconds; keeps the tests fast


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return create_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", seconds=SHORT_TURNS, with_faults=True)


def segments_of(corpus, conversation_id: str) -> Path:
    return corpus.root / conversation_id / "segments"


def script_lines(segments: Path) -> list[str]:
    text = (segments / SCRIPT_NAME).read_bytes().decode("utf-8-sig")
    return [line for line in text.splitlines() if line.strip()]


def audio_files(segments: Path) -> dict[int, list[tuple[int, str]]]:
    """turn number -> [(speaker, file name)], ordered by number rather than by name."""
    by_turn: dict[int, list[tuple[int, str]]] = {}
    for path in segments.glob("*"):
        if path.suffix not in (".wav", ".flac"):
            continue
        turn, speaker = AUDIO_NAME.match(path.name).groups()
        by_turn.setdefault(int(turn), []).append((int(speaker), path.name))
    return dict(sorted(by_turn.items()))


def healthy_ids(corpus) -> list[str]:
    broken = {fault.conversation_id for fault in corpus.faults if fault.kind != "leftover_files"}
    return [c.conversation_id for c in corpus.conversations if c.conversation_id not in broken]


def fault_of(corpus, kind: str):
    (fault,) = [f for f in corpus.faults if f.kind == kind and f.conversation_id.startswith("en/Faulty/")]
    return fault


def all_file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_same_files_and_bytes(tmp_path):
    first = create_demo_corpus(tmp_path / "a", seconds=SHORT_TURNS, with_faults=True, seed=7)
    second = create_demo_corpus(tmp_path / "b", seconds=SHORT_TURNS, with_faults=True, seed=7)
    other = create_demo_corpus(tmp_path / "c", seconds=SHORT_TURNS, seed=8)

    assert all_file_bytes(first.root) == all_file_bytes(second.root)
    assert first.conversations == second.conversations and first.faults == second.faults
    assert set(all_file_bytes(first.root)).isdisjoint(set(all_file_bytes(other.root)) - {"_meta/demo_corpus.json"})


def test_healthy_part_does_not_depend_on_faults(tmp_path, corpus):
    without_faults = create_demo_corpus(tmp_path / "corpus", seconds=SHORT_TURNS)
    assert without_faults.conversations == [c for c in corpus.conversations if "/Faulty/" not in c.conversation_id]


def test_layout_pairs_every_script_line_with_one_wav(corpus):
    assert {c.language for c in corpus.conversations} == {"en", "de", "fr"}
    assert (corpus.root / "_meta").is_dir()
    depths = Counter(len(Path(c.conversation_id).parts) - 2 for c in corpus.conversations)
    assert {0, 1, 2} <= set(depths)  # categories: none, one or two levels
    for conversation_id in healthy_ids(corpus):
        segments = segments_of(corpus, conversation_id)
        lines = script_lines(segments)
        files = audio_files(segments)
        record = next(c for c in corpus.conversations if c.conversation_id == conversation_id)
        assert len(lines) == len(files) == record.turns
        assert list(files) == list(range(1, len(lines) + 1))
        for line, ((speaker, _name),) in zip(lines, files.values()):
            assert int(SCRIPT_LINE.match(line).group(1)) == speaker


def test_speakers_sometimes_repeat(corpus):
    repeats = 0
    for conversation_id in healthy_ids(corpus):
        speakers = [SCRIPT_LINE.match(line).group(1) for line in script_lines(segments_of(corpus, conversation_id))]
        repeats += sum(a == b for a, b in pairwise(speakers))
    assert repeats > 0


def test_all_name_spellings_and_unpadded_numbers_out_of_name_order(corpus):
    names = [p.name for c in healthy_ids(corpus) for p in segments_of(corpus, c).glob("*.wav")]
    for example in ("001_speaker1.wav", "1_speaker1.wav", "segment_0001_speaker1.wav", "0001_spk1.wav", "1_spk1.wav"):
        assert example in names
    out_of_order = [
        c for c in healthy_ids(corpus)
        if sorted(p.name for p in segments_of(corpus, c).glob("*.wav"))
        != [name for entries in audio_files(segments_of(corpus, c)).values() for _, name in entries]
    ]
    assert out_of_order


def test_mixed_sample_rates_channels_and_subtypes(corpus):
    infos = [sf.info(p) for c in healthy_ids(corpus) for p in segments_of(corpus, c).glob("*.wav")]
    formats = Counter((i.samplerate, i.channels, i.subtype) for i in infos)
    assert {i.samplerate for i in infos} >= {16000, 24000, 44100}
    assert {i.channels for i in infos} == {1, 2}
    assert {i.subtype for i in infos} == {"PCM_16", "FLOAT"}
    assert formats[(24000, 1, "PCM_16")] > 0.8 * len(infos)


def test_script_quirks(corpus):
    raw = [(segments_of(corpus, c) / SCRIPT_NAME).read_bytes() for c in healthy_ids(corpus)]
    assert any(r.startswith(b"\xef\xbb\xbf") for r in raw)
    assert any(b"\r\n" in r for r in raw)
    assert any(b"\n\n" in r.replace(b"\r\n", b"\n") for r in raw)
    assert any("ü".encode() in r or "ö".encode() in r for r in raw)  # German umlauts
    assert any("é".encode() in r for r in raw)


def test_leftovers_in_healthy_conversations_are_in_the_manifest(corpus):
    leftover_ids = {f.conversation_id for f in corpus.faults if f.kind == "leftover_files"}
    assert set(healthy_ids(corpus)) & leftover_ids
    for conversation_id in leftover_ids:
        assert (segments_of(corpus, conversation_id) / ".DS_Store").is_file()
        assert (segments_of(corpus, conversation_id) / "notes.txt").is_file()


def test_one_faulty_conversation_per_kind(corpus):
    faulty = Counter(f.kind for f in corpus.faults if "/Faulty/" in f.conversation_id)
    assert faulty == Counter(FAULT_KINDS)
    for fault in corpus.faults:
        if fault.turn_index is not None:
            assert fault.turn_index > 0


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_is_on_disk(corpus, kind):
    fault = fault_of(corpus, kind)
    segments = segments_of(corpus, fault.conversation_id)
    files = audio_files(segments)
    lines = script_lines(segments) if (segments / SCRIPT_NAME).exists() else []
    turn = None if fault.turn_index is None else fault.turn_index + 1
    paths = {n: segments / name for n, entries in files.items() for _, name in entries}

    if kind == "count_mismatch_more_audio":
        assert len(files) == len(lines) + 1
    elif kind == "count_mismatch_more_text":
        assert len(files) == len(lines) - 1 and turn not in files
    elif kind == "speaker_mismatch":
        assert files[turn][0][0] != int(SCRIPT_LINE.match(lines[fault.turn_index]).group(1))
    elif kind == "malformed_line":
        assert not SCRIPT_LINE.match(lines[fault.turn_index]) and len(files) == len(lines)
    elif kind == "empty_text":
        raw_lines = (segments / SCRIPT_NAME).read_text(encoding="utf-8").splitlines()
        assert raw_lines[fault.turn_index] == "[2]:   " and files[turn][0][0] == 2
    elif kind == "unreadable_audio":
        with pytest.raises(sf.LibsndfileError):
            sf.info(paths[turn])
    elif kind == "empty_audio":
        assert sf.info(paths[turn]).frames == 0
    elif kind == "too_long_audio":
        durations = {n: sf.info(p).duration for n, p in paths.items()}
        assert durations.pop(turn) == pytest.approx(TOO_LONG_SECONDS)
        assert max(durations.values()) <= SHORT_TURNS[1] + 0.01
    elif kind == "duplicate_turn_number":
        assert len(files[turn]) == 2 and len(files) == len(lines)
    elif kind == "missing_script":
        assert not (segments / SCRIPT_NAME).exists() and files
    elif kind == "leftover_files":
        assert (segments / ".DS_Store").is_file() and (segments / "notes.txt").is_file()
    elif kind == "symlinked_conversation":
        folder = corpus.root / fault.conversation_id
        assert folder.is_symlink() and folder.resolve().parent == (corpus.root / LINKED_DIR).resolve()
        assert not Path(os.readlink(folder)).is_absolute()  # the corpus can be moved with its links
        assert len(files) == len(lines) > 0
    elif kind == "symlinked_segments":
        assert segments.is_symlink() and not segments.parent.is_symlink()
        assert segments.resolve().parent == (corpus.root / LINKED_DIR).resolve()
        assert len(files) == len(lines) > 0
    elif kind == "symlink_cycle":
        link = corpus.root / fault.conversation_id
        assert link.is_symlink() and link.resolve() == link.parent.resolve()
    elif kind == "non_finite_audio":
        samples, _ = sf.read(paths[turn], dtype="float32")
        assert 0 < np.count_nonzero(~np.isfinite(samples)) < len(samples) and sf.info(paths[turn]).subtype == "FLOAT"
    elif kind == "out_of_range_audio":
        samples, _ = sf.read(paths[turn], dtype="float32")
        assert np.all(np.isfinite(samples)) and np.max(np.abs(samples)) > 100
    elif kind == "corrupt_flac":
        assert paths[turn].suffix == ".flac" and sf.info(paths[turn]).frames > 0  # the header reads
        with pytest.raises(sf.LibsndfileError):
            sf.read(paths[turn])
    elif kind == "special_token_in_text":
        assert SPECIAL_TOKEN in lines[fault.turn_index] and len(files) == len(lines)
    else:
        pytest.fail(f"no check for {kind}")


def test_benchmark_corpus_is_plain_24k_mono_pcm16(tmp_path):
    corpus = create_benchmark_corpus(tmp_path / "bench", hours=0.08, seconds=(0.5, 1.5))
    assert len(corpus.conversations) == 288 // 20 and not corpus.faults
    for conversation in corpus.conversations:
        segments = segments_of(corpus, conversation.conversation_id)
        assert conversation.turns == 20 == len(script_lines(segments))
        assert sorted(p.name for p in segments.glob("*.wav")) == [f"{i:03d}_speaker{s}.wav" for i, s in zip(
            range(1, 21), (int(SCRIPT_LINE.match(line).group(1)) for line in script_lines(segments)))]
        for path in segments.glob("*.wav"):
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")


def load_cli():
    path = Path(__file__).resolve().parents[1] / "scripts" / "create_dummy_data.py"
    spec = importlib.util.spec_from_file_location("create_dummy_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_refuses_non_empty_dir_and_overwrites_only_its_own(tmp_path, capsys):
    cli = load_cli()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert cli.main(["--output_dir", str(foreign)]) == 2
    assert cli.main(["--output_dir", str(foreign), "--overwrite"]) == 2
    assert (foreign / "keep.txt").exists()

    own = tmp_path / "own"
    args = ["--output_dir", str(own), "--conversations_per_language", "1", "--min_seconds", "0.2", "--max_seconds", "0.4"]
    assert cli.main(args) == 0
    assert cli.main(args) == 2
    assert cli.main([*args, "--overwrite"]) == 0
    assert "Wrote 3 conversations" in capsys.readouterr().out
