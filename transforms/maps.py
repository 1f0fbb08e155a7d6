"""`datasets` adapters of the core steps: each a `.map` over rows, cached by fingerprint.

    turns = load_turns("synthetic-dataset", "en")["train"]          # the builder's turn rows
    samples = map_samples(measure_turns(turns), ContextualSamples(model_id="unsloth/csm-1b", max_history=5))
    # codes format: map_samples(encode_turns(turns, "kyutai/mimi"), CodesSamples(model_id=...))

Step by step (what `map_samples` does, and what the prepare pipeline runs per shard):

    with_audio = measure_turns(turns)             # + num_samples (or encode_turns: + audio_codes too)
    conversations = group_conversations(with_audio)   # one row per conversation, per-turn lists
    planned = plan_conversations(conversations, transform.plan)   # + each turn's window, or why it has none
    samples = build_samples(planned, transform)   # one sample per planned window

The transforms are frozen dataclasses of plain values, so `datasets` can hash them and cache each map.
Turns that get no sample are data, not silence: `planned["skipped"]` lists them with a reason, and
`planned["problems"]` the bad turn (unreadable or non-finite audio, special tokens in the text) before
which a conversation is cut. Bad audio never raises: `TurnAudio` records it in the turn's row.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import datasets
import numpy as np
import pyarrow as pa
from datasets.fingerprint import Hasher
from datasets.utils.tqdm import are_progress_bars_disabled

from csm_synthetic.audio import DEFAULT_SAMPLING_RATE, load_audio
from csm_synthetic.audio_checks import TurnFault, check_turn_audio, decoding_fault
from csm_synthetic.measures import TurnMeasures, measure_turn

from .arrow import samples_table
from .core.asr import DEFAULT_ASR_BATCH_SIZE
from .core.audio_prep import AudioPreparation, apply_preparation
from .core.csm import DEFAULT_CODEC_MODEL_ID, DEFAULT_MODEL_ID, load_processor
from .core.plan import ConversationText, plan_conversation, window_start_column, windows_of
from .core.quality import (
    DROPPED,
    CheckResult,
    ConversationMeasures,
    CorpusQuality,
    QualityChecks,
    character_error_rate,
    turn_checks,
)
from .core.windows import DEFAULT_MAX_TOKENS
from .features import (
    PER_CONVERSATION,
    codes_sample_features,
    conversation_features,
    planned_features,
    sample_features,
    turn_audio_features,
)

ENCODE_WINDOW = 4096  # turns per map batch when encoding: sorted by length across it, so codec calls pad little
MEASURE_BATCH_SIZE = 64  # turns per map batch when only measuring
PLAN_BATCH_SIZE = 16  # conversations per map batch of the plan
WRITER_BATCH_SIZE = 16  # rows of multi-MB audio per Arrow record batch: bounds memory while writing
CODES_FORMAT_VERSION = "1"  # part of the encoding cache key: bump when the codes of a turn change meaning
TURN_AUDIO_VERSION = "3"  # part of TurnAudio's cache key: bump when its columns or checks change


_IMPORTING_PROCESS = os.getpid()


def one_torch_thread_in_forked_workers() -> None:
    """Let torch compute on one thread in a `num_proc` worker of `.map`.

    The workers are forked; a parent that already ran torch (resampling, encoding) leaves its OpenMP
    thread pool behind, and a forked child that enters it hangs for ever. One thread per worker is also
    what `num_proc` workers want: the cores are shared between them.
    """
    torch = sys.modules.get("torch")
    if torch is not None and os.getpid() != _IMPORTING_PROCESS and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


# --- turns: each turn's audio, decoded once -------------------------------------------------------


@contextmanager
def quiet_datasets_progress() -> Iterator[None]:
    """Silence the bar of every `.map`: a pipeline of many small maps shows one bar over its shards instead."""
    was_disabled = are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def audio_name(audio: dict) -> str:
    """The file name of a row's audio reference, for messages."""
    return os.path.basename(audio.get("path") or "") or "embedded audio"


def read_turn_audio(
    audio: dict, sampling_rate: int, start: float | None = None, end: float | None = None
) -> tuple[np.ndarray | None, TurnFault | None]:
    """A turn's samples at `sampling_rate` from the row's audio reference (a path or embedded bytes; the span
    `start`-`end` seconds of it when given), and their fault (None when fine). Bad audio is a fault, never an
    exception: the conversation gets cut there."""
    try:
        samples = load_audio(audio["bytes"] if audio.get("bytes") else audio["path"], sampling_rate, start, end)
    except (RuntimeError, OSError, ValueError, EOFError) as error:  # soundfile: several types for one cause
        return None, decoding_fault(audio_name(audio), error)
    return samples, check_turn_audio(samples, sampling_rate, audio_name(audio))


def turn_spans(batch: dict[str, list]) -> list[tuple[float | None, float | None]]:
    """Each turn's (start, end) seconds in its file (None, None: the whole file; also for rows without the columns)."""
    count = len(batch["audio"])
    return list(zip(batch.get("start") or [None] * count, batch.get("end") or [None] * count))


def decode_turn(audio: dict, sampling_rate: int, where: str, start: float | None = None, end: float | None = None) -> np.ndarray:
    """The samples of a turn that `TurnAudio` found fine (a fault now means its file changed since)."""
    samples, fault = read_turn_audio(audio, sampling_rate, start, end)
    if fault is not None:
        raise ValueError(f"{where}: {fault.message} (the file changed while preparing?)")
    return samples


@dataclass(frozen=True)
class PreparedTurn:
    """What the per-turn step learns from one turn's decoded samples (see `prepare_turn`)."""

    fault: TurnFault | None = None  # None: the audio is fine
    measures: TurnMeasures | None = None  # the quality measures of the decoded samples (None with a fault)
    decision: tuple[int, int, np.float32] = (0, 0, np.float32(1.0))  # (offset, num_samples, gain): `AudioPreparation`
    audio: np.ndarray | None = None  # the prepared samples (None with a fault: nothing to train on)


def prepare_turn(
    audio: dict, span: tuple[float | None, float | None], text: str, sampling_rate: int, preparation: AudioPreparation
) -> PreparedTurn:
    """The per-turn work, the same for every format: decode the turn once, check it, measure it, prepare its audio."""
    samples, fault = read_turn_audio(audio, sampling_rate, *span)
    if fault is not None:
        return PreparedTurn(fault)
    decision = preparation.decide(samples, sampling_rate)
    return PreparedTurn(None, measure_turn(samples, sampling_rate, text), decision, apply_preparation(samples, *decision))


@dataclass(frozen=True)
class TurnAudio:
    """`.map` transform over turn rows (batched), where each turn is decoded once (`prepare_turn`). Adds:

    - `num_samples`, `audio_offset`, `gain`: the turn's prepared audio (`AudioPreparation`: edge silence trimmed,
      loudness normalized) as a part of its decoded samples, times a gain;
    - `problem_kind` and `problem` (null when the audio is fine);
    - the quality measures (`csm_synthetic.measures.measure_turn`) and, with an ASR model, `asr_text` and `cer`;
    - with a codec, `audio_codes` of the prepared audio (null for a turn with a problem: it is not encoded).

    With a codec, the turns of a map batch (a window of `ENCODE_WINDOW` turns) are encoded together by the
    encoder pool of `transforms.encoders`: codec calls of turns sorted by length, on every device of
    `devices`, each turn prepared (`prepare_turn`) ahead in threads. Both formats get the same columns from the
    same per-turn work.
    """

    sampling_rate: int = DEFAULT_SAMPLING_RATE
    codec_model_id: str | None = None  # None: only measure
    devices: str = "auto"  # a --devices value: where the codec (and the ASR model, on the first) runs
    budget_seconds: float | None = None  # padded audio per codec call (None: the device type's default)
    max_batch_turns: int | None = None  # turns per codec call at most (None: the budget decides)
    allow_tf32: bool = False  # TF32 matmuls and convolutions on a GPU: faster, more near-tie codes flip
    preparation: AudioPreparation = AudioPreparation()
    asr_model_id: str | None = None
    asr_batch_size: int = DEFAULT_ASR_BATCH_SIZE

    def __call__(self, batch: dict[str, list]) -> dict:
        one_torch_thread_in_forked_workers()
        # each column taken once, here: a map batch formats columns lazily, not thread-safely
        audio, spans, texts = batch["audio"], turn_spans(batch), batch["text"]
        turns: list[PreparedTurn] = [PreparedTurn()] * len(audio)
        keep_audio = self.asr_model_id is not None  # the ASR pass needs the prepared audio after the codec's

        def read(row: int) -> np.ndarray | None:
            """Turn `row`'s prepared samples, or None when they cannot be trained on (its fault is in `turns`)."""
            turn = prepare_turn(audio[row], spans[row], texts[row], self.sampling_rate, self.preparation)
            turns[row] = turn if keep_audio else replace(turn, audio=None)
            return turn.audio

        codes = None
        if self.codec_model_id is None:
            for row in range(len(audio)):
                read(row)
        else:
            codes = self.encode(read, batch["duration"])
        columns = turn_columns(turns)
        columns.update(self.asr_columns([turn.audio for turn in turns], texts))
        if codes is not None:
            columns["audio_codes"] = codes
        return columns

    def asr_columns(self, audios: list[np.ndarray | None], texts: list[str]) -> dict[str, list]:
        """`asr_text` and `cer` of each turn (null without an ASR model, and for a turn with a problem)."""
        transcripts: list[str | None] = [None] * len(audios)
        if self.asr_model_id is not None:
            from .core.asr import load_asr, transcribe
            from .encoders import resolve_devices

            present = [row for row, audio in enumerate(audios) if audio is not None]
            asr = load_asr(self.asr_model_id, resolve_devices(self.devices, single=True)[0])
            for row, text in zip(present, transcribe(asr, [audios[row] for row in present], self.sampling_rate,
                                                      self.asr_batch_size)):
                transcripts[row] = text
        return {
            "asr_text": transcripts,
            "cer": [None if heard is None else character_error_rate(text, heard) for heard, text in zip(transcripts, texts)],
        }

    def encode(self, read, durations: list[float]) -> list[np.ndarray | None]:
        """Each turn's codes (None where `read` gives no audio). The codec calls are planned from the headers'
        durations, so no audio is read before its call is near; reading runs in threads."""
        from .encoders import encoder_pool

        planned_lengths = np.rint(np.asarray(durations, dtype=np.float64) * self.sampling_rate)
        _, codes = encoder_pool(self.encoder_settings()).encode(
            read, planned_lengths, self.budget_seconds, self.max_batch_turns
        )
        return codes

    def encoder_settings(self):
        from .encoders import EncoderSettings, resolve_devices

        devices = resolve_devices(self.devices)
        return EncoderSettings(self.codec_model_id, devices, self.sampling_rate, self.allow_tf32)

    def fingerprint(self, turns: datasets.Dataset) -> str:
        """The cache key: the turns, the rate, the preparation and the models' weights (and TF32, which changes
        codes) - not the devices, the budget or the batch sizes, which move codes by float rounding at most: a run
        on other devices reuses it."""
        identity = [turns._fingerprint, self.sampling_rate, TURN_AUDIO_VERSION, self.preparation]
        if self.codec_model_id is not None:
            from .core.codec import codec_identity

            identity += [CODES_FORMAT_VERSION, codec_identity(self.codec_model_id)]
            if self.allow_tf32:
                identity.append("tf32")
        if self.asr_model_id is not None:
            from .core.codec import codec_identity  # a model's identity: Hub id, or a folder's files

            identity += ["asr", codec_identity(self.asr_model_id)]
        return Hasher.hash(identity)


def turn_columns(turns: list[PreparedTurn]) -> dict[str, list | np.ndarray]:
    """The per-turn step's columns of each turn but the codes and the ASR's: its prepared audio, fault, measures."""
    return {
        "num_samples": np.array([turn.decision[1] for turn in turns], dtype=np.int32),
        "audio_offset": np.array([turn.decision[0] for turn in turns], dtype=np.int32),
        "gain": np.array([turn.decision[2] for turn in turns], dtype=np.float32),
        "problem_kind": [None if turn.fault is None else turn.fault.kind for turn in turns],
        "problem": [None if turn.fault is None else turn.fault.message for turn in turns],
        **measure_columns([turn.measures for turn in turns]),
    }


def measure_columns(measures: list[TurnMeasures | None]) -> dict[str, list]:
    """The measures of each turn as columns (null for a turn with a problem)."""
    return {
        name: [None if found is None else getattr(found, name) for found in measures]
        for name in TurnMeasures.__dataclass_fields__
    }


def map_turn_audio(turns: datasets.Dataset, transform: TurnAudio, desc: str) -> datasets.Dataset:
    if transform.max_batch_turns is not None and transform.max_batch_turns < 1:
        raise ValueError(f"max_batch_turns must be at least 1 (got {transform.max_batch_turns})")
    turns = turns.cast_column("audio", datasets.Audio(decode=False))
    encoding = transform.codec_model_id is not None
    return turns.map(
        transform,
        batched=True,
        batch_size=ENCODE_WINDOW if encoding else MEASURE_BATCH_SIZE,
        features=turn_audio_features(turns.features, with_codes=encoding),
        new_fingerprint=transform.fingerprint(turns),
        desc=desc,
    )


def measure_turns(
    turns: datasets.Dataset, sampling_rate: int = DEFAULT_SAMPLING_RATE, desc: str = "Reading turns"
) -> datasets.Dataset:
    """The builder's turn rows with `num_samples`: each turn's length at `sampling_rate`, from its decoded audio."""
    return map_turn_audio(turns, TurnAudio(sampling_rate), desc)


def encode_turns(
    turns: datasets.Dataset,
    codec_model_id: str = DEFAULT_CODEC_MODEL_ID,
    devices: str = "auto",
    budget_seconds: float | None = None,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    allow_tf32: bool = False,
    desc: str = "Encoding turns",
) -> datasets.Dataset:
    """The builder's turn rows with `num_samples` and each turn's Mimi codes, every turn encoded once.

    `devices`: `auto` (every visible GPU, else the CPU), `cpu`, `cuda`, `cuda:N` or a comma list (one encoder
    process per entry); `budget_seconds`: padded audio per codec call (default by device type).
    """
    transform = TurnAudio(sampling_rate, codec_model_id, devices, budget_seconds, allow_tf32=allow_tf32)
    return map_turn_audio(turns, transform, desc)


# --- conversations ---------------------------------------------------------------------------------


def _group_turn_table(table: pa.Table) -> pa.Table:
    """Rows ordered by conversation then turn -> one row per conversation with per-turn lists."""
    ids = np.asarray(table.column("conversation_id").to_pylist(), dtype=object)
    turn_index = table.column("turn_index").to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=np.int64)
    if len(set(ids[starts])) != len(starts):
        raise ValueError("turns must be ordered by conversation: some conversation's turns are not contiguous")
    steps = np.diff(turn_index)
    within = np.ones(len(steps), dtype=bool)
    within[starts[1:] - 1] = False
    gaps = np.flatnonzero(within & (steps != 1))
    if len(gaps):
        row = gaps[0] + 1
        raise ValueError(
            f"conversation {ids[row]}: turn {turn_index[row]} follows turn {turn_index[row - 1]}; "
            "context windows need every turn, in order"
        )
    offsets = pa.array(np.r_[starts, len(ids)].astype(np.int32))
    columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name in PER_CONVERSATION:
            columns[name] = column.take(pa.array(starts))
        else:
            columns[name] = pa.ListArray.from_arrays(offsets, column)
    return pa.table(columns)


def group_conversations(turns: datasets.Dataset, desc: str = "Grouping turns into conversations") -> datasets.Dataset:
    """Turn rows as one row per conversation, audio left encoded (paths or bytes)."""
    turns = turns.cast_column("audio", datasets.Audio(decode=False))
    return turns.with_format("arrow").map(
        _group_turn_table,
        batched=True,
        batch_size=None,  # needs whole conversations; the rows carry no audio samples, only references
        features=conversation_features(turns.features),
        desc=desc,
    ).with_format(None)


def conversation_text(row: dict) -> ConversationText:
    return ConversationText(row["conversation_id"], row["language"], row["turn_index"], row["speaker"], row["text"])


def audio_faults(row: dict) -> list[TurnFault | None]:
    """Each turn's audio fault, from the `problem_kind` / `problem` columns of `TurnAudio` (none without them)."""
    kinds, messages = row.get("problem_kind"), row.get("problem")
    if kinds is None:
        return []
    return [None if kind is None else TurnFault(kind, message) for kind, message in zip(kinds, messages)]


def problem_record(problem) -> dict:
    """A problem as a row of a conversation's `problems` column: its `to_dict()` without the conversation id."""
    return {name: value for name, value in problem.to_dict().items() if name != "conversation_id"}


def rows_of(batch: dict[str, list]) -> Iterator[dict]:
    """The rows of a batched `.map` call, one dict per row."""
    for position in range(len(batch["conversation_id"])):
        yield {name: values[position] for name, values in batch.items()}


@dataclass(frozen=True)
class PlanWindows:
    """`.map` transform over conversation rows with `num_samples` (batched): each turn's window or skip, the
    `problems` of the first bad turn (audio fault, special tokens in its text, or a quality check that drops it),
    where it cuts the conversation (`plan_conversation`), and the failed quality checks up to there (`quality`).

    `checks` (None: none) and `corpus` (the corpus decisions: medians, repeated audio) are parameters, so the
    cache of a plan is keyed by them."""

    model_id: str = DEFAULT_MODEL_ID
    max_history: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    sampling_rate: int = DEFAULT_SAMPLING_RATE
    checks: QualityChecks | None = None
    corpus: CorpusQuality = CorpusQuality()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        processor = load_processor(self.model_id)
        columns: dict[str, list] = {
            "rendered": [], "message_tokens": [], "window_start": [], "skipped": [], "problems": [], "quality": []
        }
        first_with = self.corpus.first_with()
        for row in rows_of(batch):
            conversation = conversation_text(row)
            results = self.quality_results(row, first_with)
            faults = with_dropped_turns(audio_faults(row), results, len(conversation.texts))
            plan = plan_conversation(
                processor, conversation, row["num_samples"], self.max_history, self.max_tokens, faults
            )
            columns["rendered"].append(plan.rendered)
            columns["message_tokens"].append(plan.message_tokens)
            columns["window_start"].append(window_start_column(plan.steps, len(plan.rendered)))
            columns["problems"].append([problem_record(problem) for problem in plan.problems])
            columns["skipped"].append(
                [
                    {
                        "turn_index": conversation.turn_indices[skip.turn_index],
                        "reason": skip.reason,
                        "detail": f"{skip.num_tokens} tokens alone, more than max_tokens {self.max_tokens}",
                    }
                    for skip in plan.skips
                ]
            )
            columns["quality"].append(quality_records(conversation, results, plan))
        return columns

    def quality_results(self, row: dict, first_with: dict[str, tuple[str, int]]) -> list[CheckResult]:
        if self.checks is None:
            return []
        return turn_checks(conversation_measures(row), self.checks, self.corpus, self.sampling_rate, first_with)


def conversation_measures(row: dict) -> ConversationMeasures:
    """A conversation row's measured columns (`TurnAudio`'s)."""
    return ConversationMeasures(
        conversation_id=row["conversation_id"],
        language=row["language"],
        turn_indices=row["turn_index"],
        texts=row["text"],
        num_samples=row["num_samples"],
        cer=row.get("cer") or (),
        **{name: row[name] for name in TurnMeasures.__dataclass_fields__},
    )


def with_dropped_turns(
    faults: list[TurnFault | None], results: list[CheckResult], num_turns: int
) -> list[TurnFault | None]:
    """Each turn's fault, a dropping check (its first) becoming the fault of a turn that has none."""
    merged = list(faults) if faults else [None] * num_turns
    for result in results:
        if result.action == DROPPED and merged[result.position] is None:
            merged[result.position] = TurnFault(result.check, result.message)
    return merged


def quality_records(conversation: ConversationText, results: list[CheckResult], plan) -> list[dict]:
    """The failed checks of the turns before the cut, and the check that cut, as rows of the `quality` column."""
    cut = len(plan.steps)
    cut_by = {problem.kind for problem in plan.problems}
    return [
        {
            "turn_index": conversation.turn_indices[result.position],
            "check": result.check,
            "value": result.value,
            "action": result.action,
            "detail": result.message,
        }
        for result in results
        if result.position < cut or (result.position == cut and result.check in cut_by)
    ]


def plan_conversations(
    conversations: datasets.Dataset, plan: PlanWindows, desc: str = "Planning windows"
) -> datasets.Dataset:
    return conversations.map(
        plan,
        batched=True,
        batch_size=PLAN_BATCH_SIZE,
        features=planned_features(conversations.features),
        desc=desc,
    )


# --- samples ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowedSamples:
    """What both sample formats share: the processor, the window rule, the audio rate."""

    model_id: str = DEFAULT_MODEL_ID
    max_history: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    sampling_rate: int = DEFAULT_SAMPLING_RATE

    @property
    def plan(self) -> PlanWindows:
        """The plan step these samples are built from (no quality checks: `PlanWindows.checks`)."""
        return PlanWindows(self.model_id, self.max_history, self.max_tokens, self.sampling_rate)


@dataclass(frozen=True)
class ContextualSamples(WindowedSamples):
    """`.map` transform over planned conversation rows (batched): one processor-format sample per window."""

    depth_decoder_labels_ratio: float = 1.0
    seed: int = 0  # fixes the -101 draws of depth_decoder_labels_ratio < 1, so reruns give the same rows

    @staticmethod
    def features() -> datasets.Features:
        return sample_features()

    def __call__(self, batch: dict[str, list]) -> pa.Table:
        from .core.samples import processor_samples  # torch: only where samples are made

        one_torch_thread_in_forked_workers()
        processor = load_processor(self.model_id)
        samples = []
        for row in rows_of(batch):
            conversation = conversation_text(row)
            windows = windows_of(row["window_start"], row["message_tokens"])
            audios = prepared_audios(conversation, row, needed_turns(windows), self.sampling_rate)
            samples += processor_samples(
                processor,
                conversation,
                row["rendered"],
                audios,
                windows,
                self.sampling_rate,
                self.depth_decoder_labels_ratio,
                self.seed,
            )
        return samples_table(columns_of(samples, self.features()), self.features())


@dataclass(frozen=True)
class CodesSamples(WindowedSamples):
    """`.map` transform over planned conversation rows of encoded turns (batched): one codes-format sample per window.

    Same windows, metadata, `input_ids` and `attention_mask` as `ContextualSamples` with the same arguments.
    """

    @staticmethod
    def features() -> datasets.Features:
        return codes_sample_features()

    def __call__(self, batch: dict[str, list]) -> pa.Table:
        from .core.codes import codes_samples

        processor = load_processor(self.model_id)
        samples = []
        for row in rows_of(batch):
            windows = windows_of(row["window_start"], row["message_tokens"])
            used = max((window.target for window in windows), default=-1) + 1  # a bad turn from there on: no codes
            codes = [np.asarray(values, dtype=np.int16) for values in row["audio_codes"][:used]]
            samples += codes_samples(
                processor, conversation_text(row), row["rendered"], row["num_samples"][:used], codes, windows,
                self.sampling_rate,
            )
        return samples_table(columns_of(samples, self.features()), self.features())


def prepared_audios(conversation: ConversationText, row: dict, turns: set[int], sampling_rate: int) -> list:
    """The prepared samples of the `turns` (positions) of a conversation row, decoded again and prepared as
    `TurnAudio` decided (`audio_offset`, `num_samples`, `gain`); None for the other turns."""
    spans = turn_spans(row)
    return [
        apply_preparation(
            decode_turn(row["audio"][position], sampling_rate, conversation.where(position), *spans[position]),
            row["audio_offset"][position],
            row["num_samples"][position],
            row["gain"][position],
        )
        if position in turns
        else None
        for position in range(len(row["audio"]))
    ]


def needed_turns(windows) -> set[int]:
    """The turns some window holds: only their audio is decoded."""
    return {turn for window in windows for turn in range(window.start, window.target + 1)}


def columns_of(samples: Sequence[dict], features: datasets.Features) -> dict[str, list]:
    return {name: [sample[name] for sample in samples] for name in features}


def build_samples(
    planned: datasets.Dataset,
    transform: ContextualSamples | CodesSamples,
    num_proc: int | None = None,
    desc: str = "Building samples",
) -> datasets.Dataset:
    """The one `.map` that makes samples: a conversation per call, 16 rows per Arrow record batch."""
    return planned.map(
        transform,
        batched=True,
        batch_size=1,
        remove_columns=planned.column_names,
        features=transform.features(),
        writer_batch_size=WRITER_BATCH_SIZE,
        num_proc=num_proc if num_proc and num_proc > 1 and len(planned) > 1 else None,
        desc=desc,
    )


def map_samples(
    turns_with_audio: datasets.Dataset, transform: ContextualSamples | CodesSamples, num_proc: int | None = None
) -> datasets.Dataset:
    """Samples of `measure_turns` (processor format) or `encode_turns` (codes format) rows: group, plan, build."""
    planned = plan_conversations(group_conversations(turns_with_audio), transform.plan)
    return build_samples(planned, transform, num_proc)
