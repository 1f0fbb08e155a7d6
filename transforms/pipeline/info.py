"""What a prepared output says about itself: the samples, not the turns they came from, in the row format
its collator batches fastest.

    info = samples_info(options, {"train": samples, ...})   # description, features, split sizes, arguments
    LOADED_FORMATS[options.format]                          # "numpy" or None (Python lists)

The rows of a prepared output are `.map` results of the corpus builder's turns, so they carry the builder's
info (its description of turns, its sizes, its builder name). `samples_info` describes the samples instead:
the format, the sample features, each split's rows and bytes, `dataset_size`, the corpus' citation,
homepage and license (if any), and the arguments of the run. The published card says the same
(`format_description`).
"""

from __future__ import annotations

import copy

import datasets

from .options import CODES_FORMAT, PROCESSOR_FORMAT, PrepareOptions
from .writer import splits_with_rows

LOCAL_ARGUMENTS = ("input_dir", "output_dir", "cache_dir", "num_proc", "engine")  # paths and machine: not published
# The row format `load_from_disk` gives: what each format's collator batches fastest (scripts/benchmark_loading.py).
LOADED_FORMATS = {
    PROCESSOR_FORMAT: "numpy",  # audio as Python floats is about 10x slower; numpy is one copy of each array
    CODES_FORMAT: None,  # Python lists: datasets' numpy formatter converts every frame of codes on its own, 2x slower
}
PREPARED_DATASET_NAME = "csm_synthetic_prepared"

_SOURCE = (
    "Training samples for Sesame CSM (transformers' CsmForConditionalGeneration) made from synthetic two-speaker "
    "podcast conversations (an LLM wrote each script, the VibeVoice TTS model spoke it) by the csm-synthetic "
    "project's prepare_dataset_for_training.py. Each row is one target turn with the turns before it in its "
    "conversation as context (as many as fit the token budget), tokenized by the CSM processor, in the `{format}` "
    "format: "
)
_COLUMNS = {
    PROCESSOR_FORMAT: (
        "what CsmProcessor.apply_chat_template(..., output_labels=True) returns for the sample's turns, with only "
        "the batch dimension removed: `input_ids`, `attention_mask`, `labels` (tokens,) int64, `input_values` "
        "(1, samples) float32 at {sampling_rate} Hz (the audio of every turn, concatenated) and "
        "`input_values_cutoffs` (turns,) int64 (where each turn's audio ends)."
    ),
    CODES_FORMAT: (
        "`input_ids` and `attention_mask` (tokens,) int64 as the processor makes them, and `audio_codes`: one "
        "(frames, codebooks) int16 array of Mimi codes per audio segment, context turns first, the target turn "
        "last ({frame_rate} frames a second). No audio and no labels: each turn was encoded once while preparing; "
        "train with the project's CodesCollator and CsmForCodesTraining (transforms.training.codes_training)."
    ),
}
_METADATA = (
    " Every row also names its sample: `conversation_id`, `language`, `turn_index` (of the target turn), "
    "`speaker`, `num_context_turns`, `num_tokens` and `audio_seconds` (all audio of the sample, context included)."
)
MIMI_FRAME_RATE = 12.5  # codes format: frames a second (Mimi: 1920 samples a frame at 24 kHz)


def format_description(sample_format: str, sampling_rate: int) -> str:
    """What the rows of a sample format are, in a paragraph (the dataset info's and the card's)."""
    columns = _COLUMNS[sample_format].format(sampling_rate=sampling_rate, frame_rate=MIMI_FRAME_RATE)
    return _SOURCE.format(format=sample_format) + columns + _METADATA


def published_arguments(arguments: dict) -> dict:
    """The arguments of a run without local paths and machine settings."""
    return {name: value for name, value in arguments.items() if name not in LOCAL_ARGUMENTS}


def samples_info(options: PrepareOptions, splits: dict[str, datasets.Dataset]) -> datasets.DatasetInfo:
    """The `DatasetInfo` of the prepared output of `splits` (datasets of samples; the empty ones are left out)."""
    first = next(iter(splits.values()))
    splits = splits_with_rows(splits)
    info = copy.deepcopy(first.info)  # keeps the corpus' citation, homepage and license
    arguments = ", ".join(f"{name}={value!r}" for name, value in published_arguments(options.output_defining()).items())
    info.description = (
        f"{format_description(options.format, options.corpus.target_sampling_rate)}\n\n"
        f"Prepare arguments: {arguments}."
    )
    info.features = first.features
    info.builder_name = None
    info.dataset_name = PREPARED_DATASET_NAME
    info.config_name = options.format
    info.version = None
    info.splits = datasets.SplitDict(dataset_name=PREPARED_DATASET_NAME)
    for name, dataset in splits.items():
        info.splits.add(datasets.SplitInfo(name=name, num_bytes=dataset.data.nbytes, num_examples=len(dataset)))
    info.download_checksums = None
    info.download_size = None
    info.dataset_size = sum(split.num_bytes for split in info.splits.values())
    info.size_in_bytes = info.dataset_size
    return info
