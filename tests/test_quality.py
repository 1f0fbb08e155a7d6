"""Quality checks (issue 13, 3-4): measures of real signals, corpus decisions, and a prepare run over a corpus
with one defect per conversation - a too short turn, a TTS that skipped words (speaking rate), long edge
silence, clipping, a near-silent turn, audio repeated from another turn - each counted by reason, listed per
turn with its measured value, and a dropped turn cutting its conversation just before it. Trimming,
loudness normalization and the ASR agreement check (a tiny random CTC model: plumbing, not figures).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from csm_synthetic.corpus import SCRIPT_NAME, ProblemKind
from csm_synthetic.measures import measure_turn
from transforms.core.quality import (
    CLIPPING,
    DROPPED,
    DUPLICATE_AUDIO,
    EDGE_SILENCE,
    FLAGGED,
    NEAR_SILENT,
    SPEAKING_RATE,
    TOO_SHORT,
    CorpusQuality,
    ConversationMeasures,
    QualityChecks,
    character_error_rate,
    corpus_quality,
    turn_checks,
)
from transforms.pipeline.options import REPORT_NAME
from transforms.pipeline.report import format_summary
from transforms.pipeline.verify import verify_output

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import prepare_dataset_for_training  # noqa: E402

RATE = 24_000
LETTERS_PER_SECOND = 15.0


def noise(seconds: float, seed: int, amplitude: float = 0.1) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(round(seconds * RATE))).astype(np.float32)


def text_of(letters: int, seed: int) -> str:
    """A text of `letters` letters in words of five."""
    rng = np.random.default_rng(seed)
    word_letters = rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=letters)
    words = ["".join(word_letters[start : start + 5]) for start in range(0, letters, 5)]
    return " ".join(words).capitalize() + "."


# --- measures ------------------------------------------------------------------------------------


def test_measures_of_known_signals(tmp_path):
    speech = noise(1.6, seed=1)
    samples = np.concatenate([np.zeros(round(0.7 * RATE), np.float32), speech, np.zeros(round(1.2 * RATE), np.float32)])
    measures = measure_turn(samples, RATE, "abcde " * 6)
    assert measures.leading_silence == pytest.approx(0.7, abs=0.01)
    assert measures.trailing_silence == pytest.approx(1.2, abs=0.01)
    assert measures.speaking_rate == pytest.approx(30 / 1.6, rel=0.02)  # letters per second of speech
    assert measures.clipped_share == 0
    expected_level = 10 * np.log10(np.mean(np.square(samples, dtype=np.float64)))
    assert measures.level_db == pytest.approx(expected_level, abs=1e-6)

    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32)
    assert measure_turn(tone, RATE, "x").level_db == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    clipped = tone.copy()
    clipped[::50] = 1.0
    assert measure_turn(clipped, RATE, "x").clipped_share == pytest.approx(1 / 50, abs=1e-4)

    # the same audio as WAV and as FLAC hashes the same; other audio does not
    pcm = np.round(speech * 32767).astype(np.int16)  # (soundfile's WAV and FLAC writers round floats differently)
    sf.write(tmp_path / "a.wav", pcm, RATE, subtype="PCM_16")
    sf.write(tmp_path / "a.flac", pcm, RATE, subtype="PCM_16")
    from csm_synthetic.audio import load_audio

    wav, flac = (measure_turn(load_audio(str(tmp_path / name)), RATE, "x") for name in ("a.wav", "a.flac"))
    assert wav.audio_hash == flac.audio_hash != measure_turn(speech[1:], RATE, "x").audio_hash


def test_corpus_decisions_take_medians_per_language_and_the_first_of_repeated_audio():
    quality = corpus_quality(
        ["b", "a", "a", "c", "c"],
        [0, 0, 1, 0, 1],
        ["en", "en", "en", "de", "de"],
        ["x" * 30, "x" * 30, "x" * 5, "x" * 30, "x" * 30],
        [10.0, 20.0, 99.0, 12.0, None],
        ["h1", "h2", "h1", "h3", None],
    )
    assert quality.rate_medians == (("de", 12.0), ("en", 15.0))  # the 5-letter text says nothing of a rate
    assert quality.duplicates == (("h1", "a", 1),)  # of b/0 and a/1, a/1 comes first
    assert quality.first_with() == {"h1": ("a", 1)}


def measures(rates, **overrides) -> ConversationMeasures:
    n = len(rates)
    values = dict(
        conversation_id="c", language="en", turn_indices=list(range(n)), texts=["x" * 30] * n, num_samples=[RATE] * n,
        leading_silence=[0.0] * n, trailing_silence=[0.0] * n, clipped_share=[0.0] * n, level_db=[-20.0] * n,
        audio_hash=[f"h{i}" for i in range(n)], speaking_rate=list(rates),
    )
    values.update(overrides)
    return ConversationMeasures(**values)


def test_turn_decisions_follow_thresholds_and_flag_only():
    corpus = CorpusQuality(rate_medians=(("en", 15.0),))
    found = turn_checks(measures([15.0, 25.0, 40.0, 5.0]), QualityChecks(), corpus, RATE)
    assert [(r.position, r.check, r.action) for r in found] == [
        (1, SPEAKING_RATE, FLAGGED), (2, SPEAKING_RATE, DROPPED), (3, SPEAKING_RATE, DROPPED)
    ]
    assert found[1].value == 40.0 and "2.67 times off the en median 15.0" in found[1].message
    flag_only = turn_checks(measures([15.0, 40.0]), QualityChecks(flag_only=(SPEAKING_RATE,)), corpus, RATE)
    assert [(r.position, r.action) for r in flag_only] == [(1, FLAGGED)]
    assert turn_checks(measures([15.0, 40.0]), QualityChecks.off(), corpus, RATE) == []
    short = turn_checks(measures([15.0], num_samples=[RATE // 4], level_db=[-70.0]), QualityChecks(), corpus, RATE)
    assert [(r.check, r.value) for r in short] == [(TOO_SHORT, 0.25), (NEAR_SILENT, -70.0)]


def test_character_error_rate():
    assert character_error_rate("Hello, World!", "hello world") == 0.0
    assert character_error_rate("abcd", "abxd") == 0.25
    assert character_error_rate("abcd", "") == 1.0
    assert character_error_rate("ab", "abab") == 1.0  # two insertions per two characters


# --- a prepare run over a corpus with one defect per conversation -----------------------------------

DEFECTS = {  # conversation -> (turn with the defect, the check, what it does)
    "en/short": (2, TOO_SHORT, DROPPED),
    "en/skipped_words": (1, SPEAKING_RATE, DROPPED),
    "en/rushed": (2, SPEAKING_RATE, FLAGGED),
    "en/silence": (1, EDGE_SILENCE, FLAGGED),
    "en/clipped": (1, CLIPPING, DROPPED),
    "en/quiet": (2, NEAR_SILENT, DROPPED),
    "en/repeated": (1, DUPLICATE_AUDIO, DROPPED),
}
TURNS = 4


def turn_audio(conversation: str, turn: int, seconds: float, seed: int) -> tuple[np.ndarray, str]:
    """A turn's samples and its text, with the defect of DEFECTS where it belongs."""
    defect = DEFECTS.get(conversation, (None, None, None))
    text = text_of(round(LETTERS_PER_SECOND * seconds), seed)
    samples = noise(seconds, seed)
    if turn != defect[0]:
        return samples, text
    if defect[1] == TOO_SHORT:
        return noise(0.3, seed), "Yes."
    if defect[1] == SPEAKING_RATE and defect[2] == DROPPED:  # the TTS spoke a third of the text
        return samples, text_of(round(LETTERS_PER_SECOND * seconds * 3), seed)
    if defect[1] == SPEAKING_RATE:
        return samples, text_of(round(LETTERS_PER_SECOND * seconds * 1.7), seed)
    if defect[1] == EDGE_SILENCE:
        return np.concatenate([np.zeros(round(1.5 * RATE), np.float32), samples]), text
    if defect[1] == CLIPPING:
        samples[::50] = 1.0
        return samples, text
    if defect[1] == NEAR_SILENT:
        return noise(seconds, seed, amplitude=0.0005), text
    return samples, text


def write_quality_corpus(root: Path) -> None:
    """en/clean plus one conversation per defect; en/repeated's defect turn has the audio of en/clean turn 2."""
    for number, conversation in enumerate(["en/clean", *DEFECTS]):
        segments = root / conversation / "segments"
        segments.mkdir(parents=True)
        lines = []
        for turn in range(TURNS):
            seed = 100 * number + turn
            samples, text = turn_audio(conversation, turn, 1.6 + 0.3 * turn, seed)
            speaker = 1 + turn % 2
            if DEFECTS.get(conversation) == (turn, DUPLICATE_AUDIO, DROPPED):
                samples, _ = turn_audio("en/clean", 2, 1.6 + 0.3 * 2, 2)
            sf.write(segments / f"{turn + 1:03d}_speaker{speaker}.wav", samples, RATE, subtype="PCM_16")
            lines.append(f"[{speaker}]: {text}")
        (segments / SCRIPT_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("quality")
    write_quality_corpus(folder / "corpus")
    return folder


def run(work: Path, name: str, processor_dir: str, *flags: str) -> tuple[dict, datasets.DatasetDict]:
    output = work / name
    arguments = ["--input_dir", str(work / "corpus"), "--output_dir", str(output), "--model_id", processor_dir,
                 "--cache_dir", str(work / "cache"), "--num_proc", "1", "--validation_fraction", "0",
                 "--test_fraction", "0", *flags]
    assert prepare_dataset_for_training.main(arguments) == 0
    assert verify_output(output).ok
    return json.loads((output / REPORT_NAME).read_text()), datasets.load_from_disk(str(output))


def sample_turns(samples: datasets.DatasetDict) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for row in samples["train"].select_columns(["conversation_id", "turn_index"]).to_list():
        found.setdefault(row["conversation_id"], []).append(row["turn_index"])
    return found


@pytest.fixture(scope="module")
def default_run(work, processor_dir):
    return run(work, "default", processor_dir)


def test_every_defect_is_counted_listed_and_dropped_or_flagged(default_run, capsys):
    report, samples = default_run
    quality = report["quality"]
    entries = {(e["conversation_id"], e["turn_index"], e["check"], e["action"]) for e in quality["turns"]}
    assert entries == {(conversation, *defect) for conversation, defect in DEFECTS.items()}
    assert quality["counts"] == {
        CLIPPING: {FLAGGED: 0, DROPPED: 1}, DUPLICATE_AUDIO: {FLAGGED: 0, DROPPED: 1},
        EDGE_SILENCE: {FLAGGED: 1, DROPPED: 0}, NEAR_SILENT: {FLAGGED: 0, DROPPED: 1},
        SPEAKING_RATE: {FLAGGED: 1, DROPPED: 1}, TOO_SHORT: {FLAGGED: 0, DROPPED: 1},
    }
    assert quality["corpus"]["speaking_rate_medians"]["en"] == pytest.approx(LETTERS_PER_SECOND, rel=0.05)
    values = {e["check"]: e["value"] for e in quality["turns"]}
    assert values[TOO_SHORT] == pytest.approx(0.3)
    assert values[EDGE_SILENCE] == pytest.approx(1.5, abs=0.01)
    assert values[CLIPPING] == pytest.approx(1 / 50, rel=0.01)
    assert values[NEAR_SILENT] < -60
    repeated = next(e for e in quality["turns"] if e["check"] == DUPLICATE_AUDIO)
    assert "en/clean turn 2" in repeated["detail"]

    expected = {"en/clean": list(range(TURNS))}
    for conversation, (turn, check, action) in DEFECTS.items():
        expected[conversation] = list(range(turn if action == DROPPED else TURNS))
        if action == DROPPED:  # a problem of the check's kind and the cut, at that turn
            kinds = {p["kind"] for p in report["problems"]
                     if p["conversation_id"] == conversation and p["turn_index"] == turn}
            assert kinds == {check, ProblemKind.TRUNCATED}, conversation
    assert {c: t for c, t in sample_turns(samples).items() if t} == {c: t for c, t in expected.items() if t}
    print(format_summary(report))
    summary = capsys.readouterr().out
    assert "quality checks: 5 dropped (each cuts its conversation), 2 flagged" in summary
    assert f"{SPEAKING_RATE}: 1 dropped, 1 flagged" in summary


def test_the_dataset_card_carries_the_counts(work, default_run):
    import push_to_hub

    assert push_to_hub.main(["--prepared_dir", str(work / "default"), "--to_dir", str(work / "repo")]) == 0
    card = (work / "repo" / "README.md").read_text()
    assert "| check | dropped | flagged |" in card
    assert f"| {SPEAKING_RATE} | 1 | 1 |" in card and f"| {EDGE_SILENCE} | 0 | 1 |" in card


def test_flag_only_keeps_every_turn_and_new_thresholds_replan_from_the_cache(work, processor_dir, default_run):
    report, samples = run(work, "flag_only", processor_dir, "--flag_only", "all")
    assert {e["action"] for e in report["quality"]["turns"]} == {FLAGGED}
    assert len(report["quality"]["turns"]) == len(DEFECTS)
    assert all(len(turns) == TURNS for turns in sample_turns(samples).values())
    assert len(samples["train"]) == TURNS * (len(DEFECTS) + 1) > len(default_run[1]["train"])

    off, samples = run(work, "off", processor_dir, "--no_quality_checks")
    assert off["quality"]["turns"] == [] and len(samples["train"]) == TURNS * (len(DEFECTS) + 1)


def segment_lengths(row: dict) -> list[int]:
    cutoffs = [c for c in row["input_values_cutoffs"] if c >= 0]
    return list(np.diff([0, *cutoffs]))


def test_trimmed_silence_and_normalized_loudness_are_the_samples_audio(work, processor_dir, default_run):
    pyloudnorm = pytest.importorskip("pyloudnorm")
    report, samples = run(work, "trim_loudness", processor_dir, "--trim_silence", "--normalize_loudness", "-23",
                          "--max_history", "0")
    assert EDGE_SILENCE not in report["quality"]["counts"]  # trimmed instead of flagged
    rows = {(r["conversation_id"], r["turn_index"]): r for r in samples["train"].to_list()}
    default_rows = {(r["conversation_id"], r["turn_index"]): r for r in default_run[1]["train"].to_list()}
    trimmed, untrimmed = rows["en/silence", 1], default_rows["en/silence", 1]
    assert segment_lengths(untrimmed)[-1] - segment_lengths(trimmed)[-1] == round(0.5 * RATE)  # 1.5 s down to 1.0 s
    meter = pyloudnorm.Meter(RATE)
    for row in rows.values():
        audio = np.asarray(row["input_values"], dtype=np.float64)[0]  # (1, samples): the processor's row
        assert meter.integrated_loudness(audio) == pytest.approx(-23.0, abs=0.2)


def test_the_codes_format_keeps_the_same_turns_and_encodes_the_trimmed_audio(work, processor_dir):
    from transforms.testing.offline import build_tiny_codec

    build_tiny_codec().save_pretrained(str(work / "codec"))
    codes_report, codes = run(work, "codes_trim", processor_dir, "--trim_silence", "--format", "codes",
                              "--codec_model_id", str(work / "codec"), "--device", "cpu")
    report, processed = run(work, "processor_trim", processor_dir, "--trim_silence")
    assert codes_report["quality"] == report["quality"] and codes_report["problems"] == report["problems"]
    assert sample_turns(codes) == sample_turns(processed)
    row = next(r for r in codes["train"].to_list() if (r["conversation_id"], r["turn_index"]) == ("en/silence", 1))
    trimmed_samples = round((1.5 + 1.9 - 0.5) * RATE)  # 1.5 s of silence trimmed down to 1.0 s
    assert len(row["audio_codes"][-1]) == -(-trimmed_samples // 1920)  # Mimi frames of the trimmed audio


def test_quality_arguments_are_refused_before_any_work(work, processor_dir, tmp_path, capsys):
    for flags, message in [
        (["--flag_only", "spelling"], "no check ['spelling']"),
        (["--speaking_rate_drop", "0.5"], "--speaking_rate_drop is a factor"),
        (["--trim_silence", "--max_edge_silence", "none"], "--trim_silence trims silence down to"),
        (["--normalize_loudness", "12"], "--normalize_loudness is a loudness in LUFS"),
    ]:
        arguments = ["--input_dir", str(work / "corpus"), "--output_dir", str(tmp_path / "out"), "--model_id",
                     processor_dir, *flags]
        assert prepare_dataset_for_training.main(arguments) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


# --- the ASR agreement check: plumbing, batching, caching, reporting ---------------------------------


@pytest.fixture(scope="module")
def asr_dir(tmp_path_factory) -> str:
    from transforms.testing.offline import save_tiny_asr

    return str(save_tiny_asr(tmp_path_factory.mktemp("asr")))


def test_asr_transcribes_every_turn_in_batches_once(work, asr_dir):
    from csm_synthetic.builder import load_turns
    from transforms.core.asr import load_asr
    from transforms.maps import TurnAudio, map_turn_audio

    turns = load_turns(work / "corpus", cache_dir=str(work / "cache"), validation_fraction=0, test_fraction=0)["train"]
    first = map_turn_audio(turns, TurnAudio(asr_model_id=asr_dir, asr_batch_size=3), desc="ASR")
    rows = first.to_list()
    assert all(isinstance(row["asr_text"], str) for row in rows)
    assert [row["cer"] for row in rows] == pytest.approx(
        [character_error_rate(row["text"], row["asr_text"]) for row in rows]
    )
    # batch of one: each turn alone through the pipeline, in the order of the rows
    asr = load_asr(asr_dir, "cpu")
    from csm_synthetic.audio import load_audio

    alone = [asr({"raw": load_audio(row["audio"]["path"]), "sampling_rate": RATE})["text"] for row in rows[:5]]
    single = map_turn_audio(turns.select(range(5)), TurnAudio(asr_model_id=asr_dir, asr_batch_size=1), desc="ASR")
    assert single["asr_text"] == alone

    again = map_turn_audio(turns, TurnAudio(asr_model_id=asr_dir, asr_batch_size=5), desc="ASR")  # another batch size
    assert again._fingerprint == first._fingerprint and again.cache_files == first.cache_files  # not transcribed again
    assert map_turn_audio(turns, TurnAudio(), desc="no ASR")._fingerprint != first._fingerprint


def test_asr_mismatches_are_reported_and_dropped_above_max_cer(work, processor_dir, asr_dir):
    from csm_synthetic.builder import load_turns
    from transforms.maps import TurnAudio, map_turn_audio

    turns = load_turns(work / "corpus", cache_dir=str(work / "cache"), validation_fraction=0, test_fraction=0)["train"]
    max_cer = float(np.median(map_turn_audio(turns, TurnAudio(asr_model_id=asr_dir), desc="ASR")["cer"]))
    report, samples = run(work, "asr", processor_dir, "--asr_model", asr_dir, "--max_cer", str(max_cer), "--flag_only",
                          ",".join([TOO_SHORT, SPEAKING_RATE, CLIPPING, NEAR_SILENT, DUPLICATE_AUDIO]))
    mismatches = [e for e in report["quality"]["turns"] if e["check"] == "asr_mismatch"]
    assert mismatches and all(e["value"] > max_cer and e["action"] == DROPPED for e in mismatches)
    assert report["quality"]["checks"]["asr_model"] == asr_dir
    assert report["quality"]["counts"]["asr_mismatch"][DROPPED] == len(mismatches)
    first_cut = {e["conversation_id"]: e["turn_index"] for e in reversed(mismatches)}
    assert len(samples["train"]) > 0
    for conversation, turns_kept in sample_turns(samples).items():
        assert max(turns_kept) < first_cut.get(conversation, TURNS)


# --- inspect: the distributions the checks use ----------------------------------------------------


def test_inspect_shows_the_distributions_the_checks_use(work, capsys):
    import inspect_corpus

    from transforms.export.figures import read_histogram_png

    summary_path, plots = work / "summary.json", work / "plots"
    assert inspect_corpus.main(["--input_dir", str(work / "corpus"), "--plots", str(plots), "--json",
                                str(summary_path)]) == 0
    printed = capsys.readouterr().out
    assert "quality measures (every turn decoded):" in printed and "speaking_rate" in printed
    measures = json.loads(summary_path.read_text())["measures"]
    en = measures["by_language"]["en"]
    turns = TURNS * (len(DEFECTS) + 1)
    assert {numbers["count"] for numbers in en.values()} == {turns}
    assert en["duration"]["edges"][0] == pytest.approx(0.3)  # the too short turn
    assert en["leading_silence"]["edges"][-1] == pytest.approx(1.5, abs=0.01)
    assert en["clipped_share"]["edges"][-1] == pytest.approx(1 / 50, rel=0.01)
    assert en["level_db"]["edges"][0] < -60
    assert en["speaking_rate"]["p50"] == pytest.approx(LETTERS_PER_SECOND, rel=0.1)
    assert measures["repeated_audio_turns"] == 1
    figures = sorted(path.name for path in plots.iterdir())
    assert figures == sorted(f"en_{name}.png" for name in en)
    for name in en:
        assert read_histogram_png((plots / f"en_{name}.png").read_bytes()).total == turns
