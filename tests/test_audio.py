"""Decoding with soundfile: downmix to mono, resampling to 24 kHz with a known length, PCM_16 and FLOAT,
paths and bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from conftest import broken_audio_turns
from csm_synthetic.audio import DEFAULT_SAMPLING_RATE, audio_header, load_audio, resample, resampled_length


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("subtype, tolerance", [("FLOAT", 1e-7), ("PCM_16", 2 / 32768)])
def test_stereo_is_downmixed_to_the_mean(tmp_path, subtype, tolerance):
    left = tone(300, 0.5, 24_000)
    right = tone(710, 0.5, 24_000, amplitude=0.3)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 24_000, subtype=subtype)
    mono = load_audio(str(path))
    assert mono.dtype == np.float32 and mono.ndim == 1
    np.testing.assert_allclose(mono, (left + right) / 2, atol=tolerance)


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_16"])
def test_mono_at_the_target_rate_is_returned_as_written(tmp_path, subtype):
    samples = tone(440, 0.3, 24_000)
    path = tmp_path / "mono.wav"
    sf.write(path, samples, 24_000, subtype=subtype)
    np.testing.assert_allclose(load_audio(path), samples, atol=1e-7 if subtype == "FLOAT" else 1 / 32768)


@pytest.mark.parametrize("rate", [16_000, 44_100, 22_050, 48_000, 8_000])
@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_16"])
def test_resampling_to_24k_keeps_length_and_pitch(tmp_path, rate, subtype):
    samples = tone(440, 0.77, rate)  # an odd length, so the rounding of the length matters
    path = tmp_path / "tone.wav"
    sf.write(path, samples, rate, subtype=subtype)
    out = load_audio(path)
    exact = math.ceil(len(samples) * DEFAULT_SAMPLING_RATE / rate)  # independent of the library's formula
    assert len(out) == resampled_length(len(samples), rate, DEFAULT_SAMPLING_RATE) == exact
    assert out.dtype == np.float32
    assert peak_frequency(out, DEFAULT_SAMPLING_RATE) == pytest.approx(440, abs=3)
    middle = slice(len(out) // 4, 3 * len(out) // 4)  # away from the filter's edges
    assert np.sqrt(np.mean(out[middle] ** 2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)


def test_stereo_44k_float_is_downmixed_and_resampled(tmp_path):
    left, right = tone(440, 0.5, 44_100), tone(440, 0.5, 44_100, amplitude=0.1)
    path = tmp_path / "stereo44.wav"
    sf.write(path, np.stack([left, right], axis=1), 44_100, subtype="FLOAT")
    out = load_audio(path)
    assert out.shape == (resampled_length(len(left), 44_100, 24_000),)
    middle = slice(len(out) // 4, 3 * len(out) // 4)
    assert np.sqrt(np.mean(out[middle] ** 2)) == pytest.approx(0.3 / math.sqrt(2), rel=0.02)


def test_bytes_decode_like_the_file(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, np.stack([tone(200, 0.4, 16_000), tone(500, 0.4, 16_000)], axis=1), 16_000, subtype="PCM_16")
    from_path = load_audio(str(path))
    np.testing.assert_array_equal(load_audio(path.read_bytes()), from_path)
    np.testing.assert_array_equal(load_audio(bytearray(path.read_bytes())), from_path)


def test_flac_and_other_target_rates(tmp_path):
    path = tmp_path / "x.flac"
    samples = tone(300, 0.5, 24_000)
    sf.write(path, samples, 24_000)
    out = load_audio(path, target_rate=16_000)
    assert len(out) == resampled_length(len(samples), 24_000, 16_000) == 8000
    assert peak_frequency(out, 16_000) == pytest.approx(300, abs=3)


@pytest.mark.parametrize("rate", [8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000])
def test_resampled_length_is_the_length_resample_gives(rate):
    for frames in (1, 2, 3, 7, 159, 160, 161, 441, 1001, 44_099, 44_100, 44_101):
        out = resample(np.zeros(frames, dtype=np.float32), rate, DEFAULT_SAMPLING_RATE)
        assert len(out) == resampled_length(frames, rate, DEFAULT_SAMPLING_RATE), (rate, frames)


def test_every_demo_turn_loads_as_mono_24k_of_the_expected_length(demo, demo_corpus):
    broken = broken_audio_turns(demo)  # decoding them fails or gives broken values on purpose (test_input_faults)
    turns = [t for c in demo_corpus.conversations for t in c.turns if (c.conversation_id, t.index) not in broken]
    formats = {(t.sampling_rate, t.channels) for t in turns}
    assert {16_000, 24_000, 44_100} <= {rate for rate, _ in formats} and {1, 2} <= {ch for _, ch in formats}
    for turn in turns:
        samples = load_audio(turn.audio_path)
        assert samples.dtype == np.float32 and samples.ndim == 1
        assert len(samples) == resampled_length(turn.frames, turn.sampling_rate, DEFAULT_SAMPLING_RATE)
        assert 0 < np.abs(samples).max() <= 1.5


def test_a_header_is_read_again_when_its_file_changes(tmp_path):
    path = str(tmp_path / "turn.wav")
    sf.write(path, np.zeros(2_400, np.float32), DEFAULT_SAMPLING_RATE)
    assert audio_header(path).frames == 2_400
    sf.write(path, np.zeros(4_800, np.float32), 16_000)
    assert (audio_header(path).frames, audio_header(path).samplerate) == (4_800, 16_000)
    (tmp_path / "turn.wav").unlink()
    with pytest.raises(sf.LibsndfileError):
        audio_header(path)  # as soundfile.info
