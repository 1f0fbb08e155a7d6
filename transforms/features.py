"""The `datasets` features of every kind of row the transforms make, in one place.

turn rows (the builder's)  --TurnAudio-->  + num_samples, audio_offset, gain, problem_kind, problem, the quality
    measures (leading_silence ... speaking_rate, asr_text, cer) [+ audio_codes]
    --group_conversations-->  one row per conversation, per-turn lists
    --PlanWindows-->  + rendered, message_tokens, window_start, skipped, problems, quality
    --ContextualSamples / CodesSamples-->  samples (`sample_features` / `codes_sample_features`)
"""

from __future__ import annotations

import datasets

PER_CONVERSATION = ("conversation_id", "language")  # one value per conversation row; every other column is per turn
CODES = datasets.List(datasets.List(datasets.Value("int16")))  # one turn's codes: (frames, num_codebooks)
PROCESSOR_ONLY_COLUMNS = ("input_values", "input_values_cutoffs", "labels")
# `csm_synthetic.measures.TurnMeasures` and the ASR agreement, per turn
MEASURE_FEATURES = {
    "leading_silence": datasets.Value("float32"),  # seconds
    "trailing_silence": datasets.Value("float32"),
    "clipped_share": datasets.Value("float32"),
    "level_db": datasets.Value("float32"),
    "audio_hash": datasets.Value("string"),
    "speaking_rate": datasets.Value("float32"),  # letters per second of speech
    "asr_text": datasets.Value("string"),  # with an ASR model only
    "cer": datasets.Value("float32"),
}


def turn_audio_features(turn_features: datasets.Features, with_codes: bool) -> datasets.Features:
    """The builder's turn features (audio as a reference), plus each turn's length, what is wrong with its
    audio (null when nothing) and, for codes, its codes (null for a turn with a problem)."""
    features = datasets.Features(dict(turn_features))
    features["audio"] = datasets.Audio(decode=False)
    features["num_samples"] = datasets.Value("int32")  # at the sampling rate of the samples, after trimming
    features["audio_offset"] = datasets.Value("int32")  # decoded samples trimmed off the start
    features["gain"] = datasets.Value("float32")  # applied to the samples (loudness normalization; else 1)
    features["problem_kind"] = datasets.Value("string")  # a `ProblemKind`
    features["problem"] = datasets.Value("string")  # the message, naming the file
    features.update(MEASURE_FEATURES)  # null for a turn with a problem
    if with_codes:
        features["audio_codes"] = CODES
    return features


def conversation_features(turn_features: datasets.Features) -> datasets.Features:
    """Features of `group_conversations`' rows: per-conversation values, per-turn lists."""
    return datasets.Features(
        {
            name: feature if name in PER_CONVERSATION else datasets.List(feature)
            for name, feature in turn_features.items()
        }
    )


def skip_feature() -> datasets.List:
    return datasets.List(
        {"turn_index": datasets.Value("int32"), "reason": datasets.Value("string"), "detail": datasets.Value("string")}
    )


def problem_feature() -> datasets.List:
    """A conversation's problems found by the steps: `Problem.to_dict()` without the conversation id."""
    return datasets.List(
        {"turn_index": datasets.Value("int32"), "kind": datasets.Value("string"), "problem": datasets.Value("string")}
    )


def quality_feature() -> datasets.List:
    """A conversation's failed quality checks (`transforms.core.quality.CheckResult`)."""
    return datasets.List(
        {
            "turn_index": datasets.Value("int32"),
            "check": datasets.Value("string"),
            "value": datasets.Value("float64"),
            "action": datasets.Value("string"),  # flagged or dropped
            "detail": datasets.Value("string"),
        }
    )


def planned_features(conversation_features: datasets.Features) -> datasets.Features:
    """Conversation rows with their plan: each turn's rendering, token count and window start (-1: no sample),
    the turns skipped for their length, the problems of a bad turn before which the conversation is cut, and the
    failed quality checks of the turns up to it."""
    features = datasets.Features(dict(conversation_features))
    features["rendered"] = datasets.List(datasets.Value("string"))
    features["message_tokens"] = datasets.List(datasets.Value("int32"))
    features["window_start"] = datasets.List(datasets.Value("int32"))
    features["skipped"] = skip_feature()
    features["problems"] = problem_feature()
    features["quality"] = quality_feature()
    return features


def sample_features() -> datasets.Features:
    """Processor-format samples: the processor's columns, as it returns them for the sample's window with only
    the batch dimension removed (values, dtypes and shapes), plus the metadata of the window."""
    return datasets.Features(
        {
            "conversation_id": datasets.Value("string"),
            "language": datasets.Value("string"),
            "turn_index": datasets.Value("int32"),
            "speaker": datasets.Value("int32"),
            "num_context_turns": datasets.Value("int32"),
            "num_tokens": datasets.Value("int32"),
            "audio_seconds": datasets.Value("float32"),  # all audio of the sample, context included
            "input_ids": datasets.List(datasets.Value("int64")),  # (tokens,)
            "attention_mask": datasets.List(datasets.Value("int64")),  # (tokens,)
            "labels": datasets.List(datasets.Value("int64")),  # (tokens,)
            "input_values": datasets.List(datasets.List(datasets.Value("float32"))),  # (1, samples): one channel
            "input_values_cutoffs": datasets.List(datasets.Value("int64")),  # (audio segments,)
        }
    )


def codes_sample_features() -> datasets.Features:
    """The processor format's columns without audio and labels, plus each audio segment's codes."""
    features = {name: feature for name, feature in sample_features().items() if name not in PROCESSOR_ONLY_COLUMNS}
    # one (frames, num_codebooks) array per audio segment of the sample, in order; the last is the target turn
    features["audio_codes"] = datasets.List(CODES)
    return datasets.Features(features)
