"""Synthetic demo and benchmark corpora in the on-disk layout of the raw podcast corpus.

The layout and its known faults are described in CORPUS.md (the project's corpus specification):
``<root>/<language>/<categories...>/<conversation>/segments/`` holds ``vibevoice-podcast-script.txt``
and one WAV per script line. The demo corpus reproduces the quirks that real corpora have (file-name
spellings, non-padded turn numbers, mixed sample rates, channels and sample types, BOM/CRLF/blank lines
in scripts) and, on request, one conversation per known fault, listed in a manifest so that tests can
check that a reader reports each of them. Some faults only show when the audio is decoded or the text
tokenized (NaN samples, a FLAC whose frames are damaged behind a valid header, a special token in a
script line), and some are no faults but ways of assembling a corpus that a reader must follow (a
conversation folder or a `segments/` folder that is a symbolic link); one is a link cycle.

Everything is drawn from one seeded RNG, so a seed always gives the same file names and the same bytes.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from ..corpus import SCRIPT_NAME, SEGMENTS_DIR

META_FILE = PurePosixPath("_meta/demo_corpus.json")
FAULTY_CATEGORY = "Faulty"
FAULTY_LANGUAGE = "en"
LINKED_DIR = "_linked"  # targets of the symbolic links of the link faults (not a language: starts with "_")
SPECIAL_TOKEN = "<|AUDIO|>"  # CSM's audio placeholder token, written as text into a script line
TOO_LONG_SECONDS = 120.0
_CONTROL_RATE = 200  # Hz, grid of the slowly varying pitch and loudness contours

# The spellings of "turn number N, speaker K" that generator runs have used (see CORPUS.md).
AUDIO_NAME_FORMATS = {
    "padded": "{turn:03d}_speaker{speaker}.wav",  # 001_speaker1.wav, the current spelling
    "unpadded": "{turn}_speaker{speaker}.wav",  # 1_speaker1.wav ... 12_speaker2.wav
    "segment": "segment_{turn:04d}_speaker{speaker}.wav",  # segment_0001_speaker1.wav
    "padded_spk": "{turn:04d}_spk{speaker}.wav",  # 0001_spk1.wav
    "unpadded_spk": "{turn}_spk{speaker}.wav",  # 1_spk1.wav
}

FAULT_KINDS = (
    "count_mismatch_more_audio",
    "count_mismatch_more_text",
    "speaker_mismatch",
    "malformed_line",
    "empty_text",
    "unreadable_audio",
    "empty_audio",
    "too_long_audio",
    "duplicate_turn_number",
    "missing_script",
    "leftover_files",
    # links: the conversation must be read as if the link were its folder (no problem), a cycle reported
    "symlinked_conversation",
    "symlinked_segments",
    "symlink_cycle",
    # found by the prepare steps, which decode the audio and tokenize the text: the conversation is cut there
    "non_finite_audio",
    "out_of_range_audio",
    "corrupt_flac",
    "special_token_in_text",
)

LEFTOVER_FILES = {
    ".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(54),
    "notes.txt": b"TODO: re-run the lines of speaker 2, the voice sounded off.\n",
}


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class InjectedFault:
    conversation_id: str
    turn_index: int | None  # 0-based script turn; None when the fault concerns the whole conversation
    kind: str


@dataclass(frozen=True)
class DemoConversation:
    conversation_id: str  # folder path relative to the corpus root, POSIX form
    language: str
    turns: int  # script lines written (a malformed or empty line counts)
    seconds: float  # total duration of the readable audio written


@dataclass(frozen=True)
class DemoCorpus:
    root: Path
    conversations: list[DemoConversation]
    faults: list[InjectedFault]

    @property
    def total_turns(self) -> int:
        return sum(conversation.turns for conversation in self.conversations)

    @property
    def total_seconds(self) -> float:
        return sum(conversation.seconds for conversation in self.conversations)


@dataclass(frozen=True)
class AudioFormat:
    sample_rate: int = 24_000
    channels: int = 1
    subtype: str = "PCM_16"  # or "FLOAT"


STANDARD_FORMAT = AudioFormat()
ODD_FORMATS = (
    AudioFormat(sample_rate=16_000),
    AudioFormat(sample_rate=44_100),
    AudioFormat(channels=2),
    AudioFormat(subtype="FLOAT"),
    AudioFormat(sample_rate=44_100, channels=2, subtype="FLOAT"),
)


# --------------------------------------------------------------------------- public API


def create_demo_corpus(
    root: str | Path,
    *,
    languages: Sequence[str] = ("en", "de", "fr"),
    conversations_per_language: int = 4,
    turns: tuple[int, int] = (6, 12),
    seconds: tuple[float, float] = (2.0, 12.0),
    with_faults: bool = False,
    seed: int = 0,
) -> DemoCorpus:
    """Write a small corpus with the quirks of real ones under `root` (which must be empty or absent).

    With `with_faults`, one extra conversation per entry of FAULT_KINDS is written under
    ``en/Faulty/`` (for the link faults: a link there, its target under ``_linked/``); the healthy part is
    the same as without faults for the same seed.
    """
    _check_ranges(turns, seconds)
    writer = _CorpusWriter(root, seed)
    writer.write_meta({"kind": "demo", "seed": seed, "languages": list(languages)})
    index = 0
    for language in languages:
        for _ in range(conversations_per_language):
            writer.write_healthy_conversation(language, index, turns, seconds)
            index += 1
    if with_faults:
        for kind in FAULT_KINDS:
            writer.write_faulty_conversation(kind, turns, seconds)
    return writer.corpus()


def create_benchmark_corpus(
    root: str | Path,
    *,
    hours: float = 1.0,
    turns_per_conversation: int = 20,
    seconds: tuple[float, float] = (2.0, 12.0),
    languages: Sequence[str] = ("en",),
    seed: int = 0,
) -> DemoCorpus:
    """Write a healthy corpus of about `hours` of 24 kHz mono PCM_16 audio, `NNN_speakerK.wav` names."""
    _check_ranges((turns_per_conversation, turns_per_conversation), seconds)
    if not languages:
        raise ValueError("languages must name at least one language")
    mean_seconds = (seconds[0] + seconds[1]) / 2
    n_conversations = max(1, round(hours * 3600 / (turns_per_conversation * mean_seconds)))
    writer = _CorpusWriter(root, seed)
    writer.write_meta({"kind": "benchmark", "seed": seed, "hours": hours, "languages": list(languages)})
    for index in range(n_conversations):
        language = languages[index % len(languages)]
        writer.write_plain_conversation(language, turns_per_conversation, seconds)
    return writer.corpus()


def audio_file_name(naming: str, turn_number: int, speaker: int) -> str:
    """File name of 1-based `turn_number` spoken by script speaker `speaker` in one of AUDIO_NAME_FORMATS."""
    return AUDIO_NAME_FORMATS[naming].format(turn=turn_number, speaker=speaker)


def synthesize_speech_like(seconds: float, sample_rate: int, pitch_hz: float, rng: np.random.Generator) -> np.ndarray:
    """A mono float32 signal that looks like speech to a feature extractor: a few harmonics of a slowly
    gliding pitch, amplitude-modulated at a syllable rate with short pauses, plus a little noise."""
    n = round(seconds * sample_rate)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(n, dtype=np.float64) / sample_rate
    # Pitch and loudness change at a few hertz: computing them on a coarse grid and interpolating
    # linearly is several times faster than evaluating them at every sample.
    control_t = np.arange(int(n / sample_rate * _CONTROL_RATE) + 2) / _CONTROL_RATE
    pitch = pitch_hz * (1 + 0.08 * np.sin(2 * np.pi * 0.35 * control_t + rng.uniform(0, 2 * np.pi))
                        + 0.03 * np.sin(2 * np.pi * 1.7 * control_t + rng.uniform(0, 2 * np.pi)))
    cycles = np.interp(t, control_t, _integrate(pitch, _CONTROL_RATE))
    # Keep only the fraction of a cycle before going to float32, which would lose the phase of late samples.
    cycles -= np.floor(cycles)
    phase = cycles.astype(np.float32) * np.float32(2 * np.pi)
    voice = _harmonic_series(phase, n_harmonics=5)
    envelope = np.interp(t, control_t, _syllable_envelope(control_t, n / sample_rate, rng)).astype(np.float32)
    noise = rng.standard_normal(n, dtype=np.float32) * np.float32(0.01)
    return voice * envelope * np.float32(0.3) + noise


# --------------------------------------------------------------------------- internal plan of one conversation


@dataclass(frozen=True)
class _AudioSpec:
    """What to synthesise for one file; the audio itself is drawn from its own seed when written."""
    seconds: float
    pitch_hz: float
    seed: int
    format: AudioFormat = STANDARD_FORMAT
    damage: str = ""  # "", or a key of _DAMAGES: what is wrong with the samples or the file's body

    @property
    def written_seconds(self) -> float:
        return round(self.seconds * self.format.sample_rate) / self.format.sample_rate


@dataclass(frozen=True)
class _Turn:
    speaker: int
    text: str
    audio: _AudioSpec


@dataclass(frozen=True)
class _Style:
    naming: str = "padded"
    bom: bool = False
    crlf: bool = False
    blank_lines: bool = False
    leftovers: bool = False


@dataclass
class _ConversationFiles:
    """The files of one segments/ folder, before writing: faults are injected by editing this."""
    script_lines: list[str] | None
    audio: dict[str, _AudioSpec | bytes]  # bytes: written as they are (garbage)
    leftovers: dict[str, bytes]
    link: str = ""  # "", or a key of _LINKS: how the conversation is reached through a symbolic link

    @classmethod
    def render(cls, turns: list[_Turn], style: _Style) -> _ConversationFiles:
        return cls(
            script_lines=[f"[{turn.speaker}]: {turn.text}" for turn in turns],
            audio={audio_file_name(style.naming, i + 1, turn.speaker): turn.audio for i, turn in enumerate(turns)},
            leftovers=dict(LEFTOVER_FILES) if style.leftovers else {},
        )

    @property
    def seconds(self) -> float:
        return sum(spec.written_seconds for spec in self.audio.values() if isinstance(spec, _AudioSpec))


# --------------------------------------------------------------------------- writer


class _CorpusWriter:
    def __init__(self, root: str | Path, seed: int):
        self.root = Path(root)
        _require_empty_dir(self.root)
        self.rng = np.random.default_rng(seed)
        self.conversations: list[DemoConversation] = []
        self.faults: list[InjectedFault] = []

    def write_healthy_conversation(self, language: str, index: int, turns: tuple[int, int],
                                   seconds: tuple[float, float]) -> None:
        style = _healthy_style(index, self.rng)
        n_turns = turns[1] if _is_forced_unpadded(index) else int(self.rng.integers(turns[0], turns[1] + 1))
        drawn = self._draw_turns(language, n_turns, seconds)
        drawn = _with_formats(drawn, _audio_formats(index, n_turns, self.rng))
        conversation_id = self._new_conversation_id(language, _draw_categories(self.rng, language))
        if style.leftovers:
            self.faults.append(InjectedFault(str(conversation_id), None, "leftover_files"))
        self._write(conversation_id, language, _ConversationFiles.render(drawn, style), style)

    def write_plain_conversation(self, language: str, n_turns: int, seconds: tuple[float, float]) -> None:
        drawn = self._draw_turns(language, n_turns, seconds)
        conversation_id = self._new_conversation_id(language, _draw_categories(self.rng, language))
        self._write(conversation_id, language, _ConversationFiles.render(drawn, _Style()), _Style())

    def write_faulty_conversation(self, kind: str, turns: tuple[int, int], seconds: tuple[float, float]) -> None:
        # At least 3 turns, so that the faulty turn can sit in the middle rather than first.
        n_turns = int(self.rng.integers(max(turns[0], 3), max(turns[1], 3) + 1))
        drawn = self._draw_turns(FAULTY_LANGUAGE, n_turns, seconds)
        files = _ConversationFiles.render(drawn, _Style())
        turn_index = _FAULT_INJECTORS[kind](files, drawn, n_turns // 2, self.rng)
        conversation_id = self._new_conversation_id(FAULTY_LANGUAGE, [FAULTY_CATEGORY])
        self.faults.append(InjectedFault(str(conversation_id), turn_index, kind))
        self._write(conversation_id, FAULTY_LANGUAGE, files, _Style())

    def write_meta(self, content: dict) -> None:
        # Bookkeeping of the generator next to the languages (like the real _meta/); also marks the
        # folder as made by this module, so that a CLI may safely overwrite it.
        path = self.root / META_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"generator": __name__, **content}, indent=2) + "\n", encoding="utf-8")

    def corpus(self) -> DemoCorpus:
        return DemoCorpus(root=self.root, conversations=list(self.conversations), faults=list(self.faults))

    def _draw_turns(self, language: str, n_turns: int, seconds: tuple[float, float]) -> list[_Turn]:
        lexicon = _LEXICONS.get(language, _LEXICONS["en"])
        topic = str(self.rng.choice(lexicon.topics))
        pitch_by_speaker = {1: self.rng.uniform(95, 140), 2: self.rng.uniform(170, 240)}
        speakers = _draw_speaker_sequence(self.rng, n_turns)
        turns = [
            _Turn(
                speaker=speaker,
                text=_draw_text(self.rng, lexicon, i, topic),
                audio=_AudioSpec(
                    seconds=float(self.rng.uniform(*seconds)),
                    pitch_hz=float(pitch_by_speaker[speaker]),
                    seed=int(self.rng.integers(2**63)),
                ),
            )
            for i, speaker in enumerate(speakers)
        ]
        return [replace(turn, text=_text_lasting(turn.text, turn.audio, lexicon)) for turn in turns]

    def _new_conversation_id(self, language: str, categories: Sequence[str]) -> PurePosixPath:
        return PurePosixPath(language, *categories, str(uuid.UUID(bytes=self.rng.bytes(16), version=4)))

    def _write(self, conversation_id: PurePosixPath, language: str, files: _ConversationFiles, style: _Style) -> None:
        folder = self.root / conversation_id
        if files.link == "cycle":  # no conversation: a link to the folder that holds it
            _symlink(folder, folder.parent)
            return
        if files.link == "conversation":  # the conversation folder is a link to the real one
            _write_segments(self.root / LINKED_DIR / conversation_id.name / SEGMENTS_DIR, files, style)
            _symlink(folder, self.root / LINKED_DIR / conversation_id.name)
        elif files.link == "segments":  # its segments/ folder is a link to the real one
            _write_segments(self.root / LINKED_DIR / conversation_id.name, files, style)
            _symlink(folder / SEGMENTS_DIR, self.root / LINKED_DIR / conversation_id.name)
        else:
            _write_segments(folder / SEGMENTS_DIR, files, style)
        n_turns = len(files.script_lines) if files.script_lines is not None else 0
        self.conversations.append(DemoConversation(str(conversation_id), language, n_turns, files.seconds))


def _symlink(link: Path, target: Path) -> None:
    """A relative link, so that the corpus may be moved or copied with its links."""
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link, target_is_directory=True)


def _write_segments(segments: Path, files: _ConversationFiles, style: _Style) -> None:
    segments.mkdir(parents=True)
    if files.script_lines is not None:
        (segments / SCRIPT_NAME).write_bytes(_script_bytes(files.script_lines, style))
    for name, content in files.audio.items():
        if isinstance(content, bytes):
            (segments / name).write_bytes(content)
        else:
            _write_audio(segments / name, content)
    for name, content in files.leftovers.items():
        (segments / name).write_bytes(content)


def _script_bytes(lines: list[str], style: _Style) -> bytes:
    text = ("\n\n" if style.blank_lines else "\n").join(lines) + "\n"
    if style.crlf:
        text = text.replace("\n", "\r\n")
    return (codecs.BOM_UTF8 if style.bom else b"") + text.encode("utf-8")


def _write_audio(path: Path, spec: _AudioSpec) -> None:
    rng = np.random.default_rng(spec.seed)
    mono = synthesize_speech_like(spec.seconds, spec.format.sample_rate, spec.pitch_hz, rng)
    # A second channel that differs a little, so that a downmix is not a no-op.
    frames = mono[:, None] if spec.format.channels == 1 else np.stack([mono, np.float32(0.8) * mono], axis=1)
    if spec.damage:
        frames = _DAMAGES[spec.damage](frames, rng)
    if path.suffix == ".flac":
        path.write_bytes(_flac_bytes(frames, spec.format.sample_rate, damaged=spec.damage == "corrupt_body", rng=rng))
    else:
        _write_wav(path, frames, spec.format)


def _flac_bytes(frames: np.ndarray, sample_rate: int, damaged: bool, rng: np.random.Generator) -> bytes:
    """A 16-bit FLAC file; `damaged`: its middle fifth overwritten with noise, behind a valid header, so that
    reading the header works and decoding the audio fails."""
    buffer = io.BytesIO()
    sf.write(buffer, frames, sample_rate, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    if damaged:
        start, length = 2 * len(data) // 5, len(data) // 5
        data[start : start + length] = rng.bytes(length)
    return bytes(data)


def _with_non_finite_samples(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A few NaN samples and an infinite one in the middle (what a failed float computation leaves)."""
    damaged = frames.copy()
    middle = len(damaged) // 2
    damaged[middle : middle + 8] = np.nan
    damaged[middle + 8] = np.inf
    return damaged


def _with_integer_scale(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The samples as 16-bit integer values in a float file (a wrong scale: far beyond full scale)."""
    return frames * np.float32(32767)


_DAMAGES = {
    "non_finite": _with_non_finite_samples,
    "integer_scale": _with_integer_scale,
    "corrupt_body": lambda frames, rng: frames,  # the samples are fine; the file's body is damaged when written
}


def _write_wav(path: Path, frames: np.ndarray, audio_format: AudioFormat) -> None:
    """A minimal RIFF/WAVE writer. soundfile is not used because libsndfile stamps FLOAT files with the
    current time (PEAK chunk), and the demo corpus must be byte-identical for a seed."""
    if audio_format.subtype == "PCM_16":
        data = np.round(np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
        format_tag, extra_chunks, fmt_extension = 1, b"", b""
    elif audio_format.subtype == "FLOAT":
        data = frames.astype("<f4")
        format_tag, fmt_extension = 3, struct.pack("<H", 0)
        extra_chunks = _riff_chunk(b"fact", struct.pack("<I", len(frames)))  # required for non-PCM WAV
    else:
        raise ValueError(f"unsupported subtype {audio_format.subtype!r}")
    channels, rate = frames.shape[1], audio_format.sample_rate
    block_align = channels * data.itemsize
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block_align, block_align, 8 * data.itemsize)
    payload = data.tobytes()
    body = b"WAVE" + _riff_chunk(b"fmt ", fmt + fmt_extension) + extra_chunks + b"data" + struct.pack("<I", len(payload))
    with open(path, "wb") as file:
        file.write(b"RIFF" + struct.pack("<I", len(body) + len(payload)) + body)
        file.write(payload)


def _riff_chunk(chunk_id: bytes, content: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(content)) + content


# --------------------------------------------------------------------------- quirks of healthy conversations


# Special name spellings at odd indices up to 7, so that even a one-language corpus shows the first ones.
_SCHEDULED_NAMINGS = {1: "unpadded", 3: "segment", 5: "padded_spk", 7: "unpadded_spk"}


def _is_forced_unpadded(index: int) -> bool:
    # That conversation gets the most turns, so that with >= 10 turns name order != number order.
    return _SCHEDULED_NAMINGS.get(index) == "unpadded"


def _healthy_style(index: int, rng: np.random.Generator) -> _Style:
    return _Style(
        naming=_naming_for(index, rng),
        bom=index % 3 == 1,
        crlf=index % 4 == 2,
        blank_lines=index % 5 == 3,
        leftovers=index % 6 == 4,
    )


def _naming_for(index: int, rng: np.random.Generator) -> str:
    if index < 8:
        return _SCHEDULED_NAMINGS.get(index, "padded")
    namings = list(AUDIO_NAME_FORMATS)
    weights = [0.6] + [0.4 / (len(namings) - 1)] * (len(namings) - 1)
    return str(rng.choice(namings, p=weights))


def _audio_formats(index: int, n_turns: int, rng: np.random.Generator) -> list[AudioFormat]:
    """The first conversation carries every odd format once (turn 1 stays standard); elsewhere a file
    is odd by a small chance."""
    if index == 0:
        odd = list(ODD_FORMATS[: max(0, n_turns - 1)])
        return [STANDARD_FORMAT, *odd] + [STANDARD_FORMAT] * (n_turns - 1 - len(odd))
    return [
        ODD_FORMATS[int(rng.integers(len(ODD_FORMATS)))] if rng.random() < 0.04 else STANDARD_FORMAT
        for _ in range(n_turns)
    ]


def _with_formats(turns: list[_Turn], formats: list[AudioFormat]) -> list[_Turn]:
    return [replace(turn, audio=replace(turn.audio, format=fmt)) for turn, fmt in zip(turns, formats, strict=True)]


# --------------------------------------------------------------------------- faults


def _padded_name(turns: list[_Turn], index: int, speaker: int | None = None) -> str:
    return audio_file_name("padded", index + 1, turns[index].speaker if speaker is None else speaker)


def _copy_with_new_seed(spec: _AudioSpec, rng: np.random.Generator) -> _AudioSpec:
    return replace(spec, seed=int(rng.integers(2**63)))


def _inject_more_audio(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    extra_speaker = 3 - turns[-1].speaker
    files.audio[audio_file_name("padded", len(turns) + 1, extra_speaker)] = _copy_with_new_seed(turns[-1].audio, rng)
    return None


def _inject_more_text(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    # The gap is in the middle: pairing the sorted lists would shift every later turn.
    del files.audio[_padded_name(turns, middle)]
    return middle


def _inject_speaker_mismatch(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    spec = files.audio.pop(_padded_name(turns, middle))
    files.audio[_padded_name(turns, middle, speaker=3 - turns[middle].speaker)] = spec
    return middle


def _inject_malformed_line(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.script_lines[middle] = f"Speaker {turns[middle].speaker}: {turns[middle].text}"
    return middle


def _inject_empty_text(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.script_lines[middle] = "[2]:   "
    files.audio[_padded_name(turns, middle, speaker=2)] = files.audio.pop(_padded_name(turns, middle))
    return middle


def _inject_unreadable_audio(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.audio[_padded_name(turns, middle)] = b"this is not a wav file\n" + rng.bytes(4096)
    return middle


def _inject_empty_audio(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.audio[_padded_name(turns, middle)] = replace(turns[middle].audio, seconds=0.0)
    return middle


def _inject_too_long_audio(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.audio[_padded_name(turns, middle)] = replace(turns[middle].audio, seconds=TOO_LONG_SECONDS)
    return middle


def _inject_duplicate_turn_number(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    duplicate = audio_file_name("unpadded", middle + 1, turns[middle].speaker)
    if duplicate in files.audio:  # from turn 100 on, padded and unpadded spellings coincide
        duplicate = audio_file_name("segment", middle + 1, turns[middle].speaker)
    files.audio[duplicate] = _copy_with_new_seed(turns[middle].audio, rng)
    return middle


def _inject_missing_script(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.script_lines = None
    return None


def _inject_leftover_files(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.leftovers = dict(LEFTOVER_FILES)
    return None


def _inject_symlinked_conversation(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.link = "conversation"
    return None


def _inject_symlinked_segments(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.link = "segments"
    return None


def _inject_symlink_cycle(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.link = "cycle"
    return None


def _inject_non_finite_audio(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    float_format = replace(turns[middle].audio.format, subtype="FLOAT")
    files.audio[_padded_name(turns, middle)] = replace(turns[middle].audio, format=float_format, damage="non_finite")
    return middle


def _inject_out_of_range_audio(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    float_format = replace(turns[middle].audio.format, subtype="FLOAT")
    files.audio[_padded_name(turns, middle)] = replace(turns[middle].audio, format=float_format, damage="integer_scale")
    return middle


def _inject_corrupt_flac(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    name = _padded_name(turns, middle)
    del files.audio[name]
    files.audio[name.removesuffix(".wav") + ".flac"] = replace(turns[middle].audio, damage="corrupt_body")
    return middle


def _inject_special_token(files: _ConversationFiles, turns: list[_Turn], middle: int, rng) -> int | None:
    files.script_lines[middle] = f"[{turns[middle].speaker}]: {turns[middle].text} Listen: {SPECIAL_TOKEN}"
    return middle


_FaultInjector = Callable[[_ConversationFiles, list[_Turn], int, np.random.Generator], int | None]
_FAULT_INJECTORS: dict[str, _FaultInjector] = {
    "count_mismatch_more_audio": _inject_more_audio,
    "count_mismatch_more_text": _inject_more_text,
    "speaker_mismatch": _inject_speaker_mismatch,
    "malformed_line": _inject_malformed_line,
    "empty_text": _inject_empty_text,
    "unreadable_audio": _inject_unreadable_audio,
    "empty_audio": _inject_empty_audio,
    "too_long_audio": _inject_too_long_audio,
    "duplicate_turn_number": _inject_duplicate_turn_number,
    "missing_script": _inject_missing_script,
    "leftover_files": _inject_leftover_files,
    "symlinked_conversation": _inject_symlinked_conversation,
    "symlinked_segments": _inject_symlinked_segments,
    "symlink_cycle": _inject_symlink_cycle,
    "non_finite_audio": _inject_non_finite_audio,
    "out_of_range_audio": _inject_out_of_range_audio,
    "corrupt_flac": _inject_corrupt_flac,
    "special_token_in_text": _inject_special_token,
}
assert tuple(_FAULT_INJECTORS) == FAULT_KINDS


# --------------------------------------------------------------------------- text


@dataclass(frozen=True)
class _Lexicon:
    welcome: str
    topics: tuple[str, ...]
    openers: tuple[str, ...]
    subjects: tuple[str, ...]
    verbs: tuple[str, ...]
    objects: tuple[str, ...]
    reactions: tuple[str, ...]
    categories: tuple[str, ...]
    subcategories: tuple[str, ...]


_LEXICONS = {
    "en": _Lexicon(
        welcome="Welcome back to the show, today we are talking about {topic}.",
        topics=("artificial intelligence", "climate science", "medieval history", "urban gardening",
                "space travel", "coffee culture"),
        openers=("So", "Well", "Honestly", "Right", "You know", "Actually"),
        subjects=("the new study", "our guest", "this approach", "the whole industry", "every listener",
                  "that old idea", "the community"),
        verbs=("changes", "challenges", "explains", "reshapes", "questions", "simplifies"),
        objects=("how we think about it", "the way people learn", "everything we knew", "the basics",
                 "a lot of old assumptions", "the size of the problem"),
        reactions=("That's a great point.", "I hadn't thought of it that way.", "Exactly!",
                   "Interesting, tell me more.", "Hmm, I'm not so sure about that."),
        categories=("Technology", "Science", "History", "Culture", "Business"),
        subcategories=("Interviews", "Weekly", "Deep_Dives", "2024"),
    ),
    "de": _Lexicon(
        welcome="Willkommen zu unserer heutigen Folge über {topic}.",
        topics=("künstliche Intelligenz", "Klimaforschung", "die Geschichte Europas", "Stadtgärten",
                "Raumfahrt", "Kaffeekultur"),
        openers=("Also", "Naja", "Ehrlich gesagt", "Genau", "Weißt du", "Übrigens"),
        subjects=("die neue Studie", "unser Gast", "dieser Ansatz", "die ganze Branche", "fast jeder Hörer",
                  "die alte Idee", "die Gemeinschaft"),
        verbs=("verändert", "erklärt", "hinterfragt", "vereinfacht", "prägt", "überrascht"),
        objects=("unser ganzes Weltbild", "die Grundlagen der Forschung", "fast alles, was wir wussten",
                 "die Art, wie wir lernen", "viele alte Gewohnheiten", "die Größe des Problems"),
        reactions=("Das ist ein guter Punkt.", "Darüber habe ich noch nie nachgedacht.", "Genau!",
                   "Spannend, erzähl mehr.", "Hm, da bin ich mir nicht so sicher."),
        categories=("Technik", "Wissenschaft", "Geschichte", "Kultur"),
        subcategories=("Gespräche", "Wöchentlich", "Hintergründe"),
    ),
    "fr": _Lexicon(
        welcome="Bienvenue dans notre épisode d'aujourd'hui. Le thème : {topic}.",
        topics=("l'intelligence artificielle", "la science du climat", "l'histoire médiévale",
                "les jardins urbains", "l'exploration spatiale", "la culture du café"),
        openers=("Alors", "Eh bien", "Honnêtement", "En fait", "Tu sais", "Voilà"),
        subjects=("la nouvelle étude", "notre invité", "cette approche", "toute l'industrie",
                  "chaque auditeur", "cette vieille idée", "la communauté"),
        verbs=("change", "explique", "remet en question", "simplifie", "façonne", "révèle"),
        objects=("notre façon de penser", "les bases de la recherche", "presque tout ce qu'on savait",
                 "la manière dont on apprend", "beaucoup d'idées reçues", "l'ampleur du problème"),
        reactions=("C'est un très bon point.", "Je n'y avais jamais pensé.", "Exactement !",
                   "Intéressant, dis-m'en plus.", "Hmm, je n'en suis pas si sûr."),
        categories=("Technologie", "Sciences", "Histoire", "Société"),
        subcategories=("Entretiens", "Hebdo", "Décryptages"),
    ),
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _draw_text(rng: np.random.Generator, lexicon: _Lexicon, turn_index: int, topic: str) -> str:
    if turn_index == 0:
        return lexicon.welcome.format(topic=topic)
    sentences = [_pick(rng, lexicon.reactions)] if rng.random() < 0.35 else []
    sentences += [_draw_sentence(rng, lexicon) for _ in range(int(rng.integers(1, 3)))]
    return " ".join(sentences)


def _text_lasting(text: str, audio: _AudioSpec, lexicon: _Lexicon) -> str:
    """`text` cut or continued to what a speaker says in `audio.seconds` (11-14 letters a second, as TTS
    speech goes), so that the speaking-rate check sees a healthy corpus. Drawn from the audio's own seed:
    the corpus' other draws (ids, durations, faults) stay as they were."""
    rng = np.random.default_rng([audio.seed, 1])
    target = audio.seconds * rng.uniform(11.0, 14.0)
    source, words, letters = text.split(), [], 0
    while not words or letters < target:
        if not source:
            source = _draw_sentence(rng, lexicon).split()
        word = source.pop(0)
        words.append(word)
        letters += sum(character.isalpha() for character in word)
    fitted = " ".join(words)
    return fitted if fitted[-1] in ".!?" else fitted.rstrip(",") + "."


def _draw_sentence(rng: np.random.Generator, lexicon: _Lexicon) -> str:
    clause = f"{_pick(rng, lexicon.subjects)} {_pick(rng, lexicon.verbs)} {_pick(rng, lexicon.objects)}."
    if rng.random() < 0.5:
        clause = f"{_pick(rng, lexicon.openers)}, {clause}"
    return clause[0].upper() + clause[1:]


def _draw_speaker_sequence(rng: np.random.Generator, n_turns: int) -> list[int]:
    """Mostly alternating 1, 2, 1, ...; sometimes the same speaker twice in a row."""
    speakers = [1]
    for _ in range(n_turns - 1):
        speakers.append(speakers[-1] if rng.random() < 0.15 else 3 - speakers[-1])
    return speakers


def _draw_categories(rng: np.random.Generator, language: str) -> list[str]:
    lexicon = _LEXICONS.get(language, _LEXICONS["en"])
    depth = int(rng.choice([0, 1, 1, 2]))
    return [_pick(rng, lexicon.categories), _pick(rng, lexicon.subcategories)][:depth]


# --------------------------------------------------------------------------- signal helpers


def _harmonic_series(phase: np.ndarray, n_harmonics: int) -> np.ndarray:
    """sum_k sin(k * phase) / k, by the Chebyshev recurrence sin(k x) = 2 cos x sin((k-1) x) - sin((k-2) x)
    (one sin and one cos instead of one sin per harmonic)."""
    two_cos = np.float32(2) * np.cos(phase)
    previous, current = np.zeros_like(phase), np.sin(phase)
    total = current.copy()
    for k in range(2, n_harmonics + 1):
        previous, current = current, two_cos * current - previous
        total += current / np.float32(k)
    return total


def _integrate(rate: np.ndarray, sample_rate: int) -> np.ndarray:
    """Running integral of a rate (in cycles per second) sampled at `sample_rate`, starting at 0."""
    return np.concatenate([[0.0], np.cumsum(rate[:-1])]) / sample_rate


def _syllable_envelope(t: np.ndarray, duration: float, rng: np.random.Generator) -> np.ndarray:
    """About 4.5 syllables a second with a varying rate, short pauses between phrases, 10 ms fades."""
    rate = 4.5 * (1 + 0.25 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 2 * np.pi)))
    syllables = 0.5 - 0.5 * np.cos(2 * np.pi * _integrate(rate, _CONTROL_RATE) + rng.uniform(0, 2 * np.pi))
    pauses = 0.5 + 0.5 * np.tanh(6 * np.sin(2 * np.pi * 0.45 * t + rng.uniform(0, 2 * np.pi)) + 3)
    fade = np.clip(np.minimum(t, duration - t) / 0.01, 0.0, 1.0)
    return syllables * pauses * fade


# --------------------------------------------------------------------------- checks


def _check_ranges(turns: tuple[int, int], seconds: tuple[float, float]) -> None:
    if not 1 <= turns[0] <= turns[1]:
        raise ValueError(f"turns must be 1 <= min <= max, got {turns}")
    if not 0 < seconds[0] <= seconds[1]:
        raise ValueError(f"seconds must be 0 < min <= max, got {seconds}")


def _require_empty_dir(root: Path) -> None:
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory")
