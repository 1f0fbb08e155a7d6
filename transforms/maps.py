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
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
from datasets.fingerprint import Hasher
from datasets.utils.tqdm import are_progress_bars_disabled

from csm_synthetic.audio import DEFAULT_SAMPLING_RATE, load_audio

from .arrow import samples_table
from .core.audio_checks import TurnFault, check_turn_audio, decoding_fault
from .core.csm import DEFAULT_CODEC_MODEL_ID, DEFAULT_MODEL_ID, load_processor
from .core.plan import ConversationText, plan_conversation, window_start_column, windows_of
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
TURN_AUDIO_VERSION = "2"  # part of TurnAudio's cache key: bump when its columns or checks change


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


def read_turn_audio(audio: dict, sampling_rate: int) -> tuple[np.ndarray | None, TurnFault | None]:
    """A turn's samples at `sampling_rate` from the row's audio reference (a path or embedded bytes), and
    their fault (None when fine). Bad audio is a fault, never an exception: the conversation gets cut there."""
    try:
        samples = load_audio(audio["bytes"] if audio.get("bytes") else audio["path"], sampling_rate)
    except (RuntimeError, OSError, ValueError, EOFError) as error:  # soundfile: several types for one cause
        return None, decoding_fault(audio_name(audio), error)
    return samples, check_turn_audio(samples, sampling_rate, audio_name(audio))


def fault_columns(faults: Sequence[TurnFault | None]) -> dict[str, list]:
    """The `problem_kind` / `problem` columns of turns with these faults (null where the audio is fine)."""
    return {
        "problem_kind": [None if fault is None else fault.kind for fault in faults],
        "problem": [None if fault is None else fault.message for fault in faults],
    }


def decode_turn(audio: dict, sampling_rate: int, where: str) -> np.ndarray:
    """The samples of a turn that `TurnAudio` found fine (a fault now means its file changed since)."""
    samples, fault = read_turn_audio(audio, sampling_rate)
    if fault is not None:
        raise ValueError(f"{where}: {fault.message} (the file changed while preparing?)")
    return samples


@dataclass(frozen=True)
class TurnAudio:
    """`.map` transform over turn rows (batched): adds `num_samples`, `problem_kind` and `problem` (null when
    the audio is fine) and, with a codec, `audio_codes` (null for a turn with a problem: it is not encoded).

    With a codec, the turns of a map batch (a window of `ENCODE_WINDOW` turns) are encoded together by the
    encoder pool of `transforms.encoders`: codec calls of turns sorted by length, on every device of
    `devices`, their audio read ahead in threads.
    """

    sampling_rate: int = DEFAULT_SAMPLING_RATE
    codec_model_id: str | None = None  # None: only measure
    devices: str = "auto"  # a --devices value: where the codec runs
    budget_seconds: float | None = None  # padded audio per codec call (None: the device type's default)
    max_batch_turns: int | None = None  # turns per codec call at most (None: the budget decides)
    allow_tf32: bool = False  # TF32 matmuls and convolutions on a GPU: faster, more near-tie codes flip

    def __call__(self, batch: dict[str, list]) -> dict:
        one_torch_thread_in_forked_workers()
        audio = batch["audio"]  # each column taken once, here: a map batch formats columns lazily, not thread-safely
        faults: list[TurnFault | None] = [None] * len(audio)

        def read(row: int) -> np.ndarray | None:
            """Turn `row`'s samples, or None when they cannot be trained on (its fault is kept in `faults`)."""
            samples, faults[row] = read_turn_audio(audio[row], self.sampling_rate)
            return None if faults[row] else samples

        if self.codec_model_id is None:
            lengths = [0 if samples is None else len(samples) for samples in map(read, range(len(audio)))]
            columns = {"num_samples": np.array(lengths, dtype=np.int32)}
        else:
            num_samples, codes = self.encode(read, batch["duration"])
            columns = {"num_samples": num_samples.astype(np.int32), "audio_codes": codes}
        return {**columns, **fault_columns(faults)}

    def encode(self, read, durations: list[float]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Each turn's length and codes (None where `read` gives no audio). The codec calls are planned from the
        headers' durations, so no audio is read before its call is near; reading runs in threads."""
        from .encoders import encoder_pool

        planned_lengths = np.rint(np.asarray(durations, dtype=np.float64) * self.sampling_rate)
        return encoder_pool(self.encoder_settings()).encode(
            read, planned_lengths, self.budget_seconds, self.max_batch_turns
        )

    def encoder_settings(self):
        from .encoders import EncoderSettings, resolve_devices

        devices = resolve_devices(self.devices)
        return EncoderSettings(self.codec_model_id, devices, self.sampling_rate, self.allow_tf32)

    def fingerprint(self, turns: datasets.Dataset) -> str:
        """The cache key: the turns, the rate and the codec's weights (and TF32, which changes codes) - not the
        devices or the budget, which move codes by float rounding: a run on other devices reuses it."""
        identity = [turns._fingerprint, self.sampling_rate, TURN_AUDIO_VERSION]
        if self.codec_model_id is not None:
            from .core.codec import codec_identity

            identity += [CODES_FORMAT_VERSION, codec_identity(self.codec_model_id)]
            if self.allow_tf32:
                identity.append("tf32")
        return Hasher.hash(identity)


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
    """`.map` transform over conversation rows with `num_samples` (batched): each turn's window or skip, and
    the `problems` of the first bad turn (audio fault or special tokens in its text), where it cuts the
    conversation (`plan_conversation`)."""

    model_id: str = DEFAULT_MODEL_ID
    max_history: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        processor = load_processor(self.model_id)
        columns: dict[str, list] = {
            "rendered": [], "message_tokens": [], "window_start": [], "skipped": [], "problems": []
        }
        for row in rows_of(batch):
            conversation = conversation_text(row)
            plan = plan_conversation(
                processor, conversation, row["num_samples"], self.max_history, self.max_tokens, audio_faults(row)
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
        return columns


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
        """The plan step these samples are built from."""
        return PlanWindows(self.model_id, self.max_history, self.max_tokens)


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
            audios = self.read_audios(conversation, row["audio"], needed_turns(windows))
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

    def read_audios(self, conversation: ConversationText, audio: list[dict], turns: set[int]) -> list:
        return [
            decode_turn(reference, self.sampling_rate, conversation.where(position)) if position in turns else None
            for position, reference in enumerate(audio)
        ]


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
