"""The dataset card of a published repository: YAML metadata, statistics, histogram figures.

    description = RawCorpusDescription(settings=..., versions=..., problems=..., skipped_languages=...)
    card = description.render(layouts, configs, repo_id="me/my-dataset")
    card.text          # README.md: YAML `configs`/`dataset_info` + what a user wants before downloading
    card.figures       # {"figures/turn_seconds.png": b"\\x89PNG..."}

Every number and figure is computed here from the rows that are published (never from a separate
summary), so the card cannot disagree with the data. The prose is in `templates/raw.md` and
`templates/prepared.md` (Jinja, rendered by `DatasetCard.from_template` below the YAML header of
`card_data`); they get plain values from here. Figures are drawn by `figures.py` (matplotlib); each
carries its bin edges and counts in a PNG text chunk, which `figures.read_histogram_png` reads back.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from csm_synthetic.audio import DEFAULT_SAMPLING_RATE
from csm_synthetic.splits import SPLITS, split_rank
from transforms.pipeline.info import MIMI_FRAME_RATE, format_description, published_arguments
from transforms.pipeline.options import CODES_FORMAT, PROCESSOR_FORMAT  # prepare's --format values

from .figures import histogram, histogram_png

DATA_DIR = "data"  # the Parquet shards: data/<config>/<split>-NNNNN-of-MMMMM.parquet


def shard_path(config: str, split: str, index: int, count: int) -> str:
    """Shard `index` of the `count` of a split, relative to the repository folder."""
    return f"{DATA_DIR}/{config}/{split}-{index:05d}-of-{count:05d}.parquet"


def split_pattern(config: str, split: str) -> str:
    """The card's `data_files` glob of a split's shards."""
    return f"{DATA_DIR}/{config}/{split}-*"


FIGURES_DIR = "figures"
CARD_TAG = "csm-synthetic"  # marks a repository written by this project (checked before replacing one)
REPO_PLACEHOLDER = "<your-name>/<dataset-name>"
TEMPLATES = Path(__file__).parent / "templates"  # the prose of the cards (Jinja)
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")  # what the Hub accepts in the `language` metadata field


# --- the YAML header -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitFiles:
    split: str
    patterns: tuple[str, ...]  # data_files globs, relative to the repository root
    num_examples: int
    num_bytes: int  # uncompressed Arrow size
    download_bytes: int  # size of the Parquet files


@dataclass(frozen=True)
class ConfigLayout:
    """A config as the card's YAML declares it."""

    name: str
    features: datasets.Features
    splits: tuple[SplitFiles, ...]
    default: bool = False


def card_data(layouts: Sequence[ConfigLayout], languages: Sequence[str], pretty_name: str) -> DatasetCardData:
    """The YAML header: what `load_dataset` reads (configs, features, splits) and what the Hub indexes."""
    num_rows = max(sum(split.num_examples for split in layout.splits) for layout in layouts)
    data = DatasetCardData(
        pretty_name=pretty_name,
        language=[code for code in languages if _LANGUAGE_CODE.match(code)] or None,
        task_categories=["text-to-speech"],
        tags=[CARD_TAG, "synthetic", "conversational", "speech", "csm"],
        size_categories=[size_category(num_rows)],
    )
    infos = {}
    for layout in layouts:
        info = DatasetInfo(config_name=layout.name, features=layout.features, splits=datasets.SplitDict())
        for split in layout.splits:
            info.splits.add(
                datasets.SplitInfo(name=split.split, num_bytes=split.num_bytes, num_examples=split.num_examples)
            )
        info.download_size = sum(split.download_bytes for split in layout.splits)
        info.dataset_size = sum(split.num_bytes for split in layout.splits)
        infos[layout.name] = info
    DatasetInfosDict(infos).to_dataset_card_data(data)
    MetadataConfigs({layout.name: config_entry(layout) for layout in layouts}).to_dataset_card_data(data)
    return data


def config_entry(layout: ConfigLayout) -> dict:
    entry: dict = {
        "data_files": [
            {"split": split.split, "path": split.patterns[0] if len(split.patterns) == 1 else list(split.patterns)}
            for split in layout.splits
        ]
    }
    if layout.default:
        entry["default"] = True
    return entry


def size_category(num_rows: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
    ]
    for bound, name in bounds:
        if num_rows < bound:
            return name
    return "100M<n<1B"


# --- statistics of the published rows ------------------------------------------------------------


@dataclass(frozen=True)
class GroupCounts:
    conversations: int
    rows: int
    speakers: int  # (conversation, speaker) pairs: speaker ids are local to a conversation
    seconds: float

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def group_counts(conversation_ids: np.ndarray, speakers: np.ndarray, seconds: np.ndarray) -> GroupCounts:
    return GroupCounts(
        conversations=len(set(conversation_ids.tolist())),
        rows=len(conversation_ids),
        speakers=len(set(zip(conversation_ids.tolist(), speakers.tolist()))),
        seconds=float(np.sum(seconds, dtype=np.float64)),
    )


def read_columns(dataset: datasets.Dataset, names: Sequence[str]) -> pa.Table:
    """Only the named columns, as Arrow (the audio or sample arrays are never read)."""
    return dataset.select_columns(list(names)).with_format("arrow")[:]


def numpy_column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def distribution(values: np.ndarray) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    if not array.size:
        return {}
    return {
        "min": float(array.min()),
        "mean": float(array.mean()),
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "max": float(array.max()),
    }


# --- the sample formats of a prepared output ----------------------------------------------------


def processor_target_seconds(audio_seconds: np.ndarray, cutoffs: pa.ChunkedArray) -> np.ndarray:
    """Processor format: each sample's last (target) turn's share of its audio, from the cumulative
    `input_values_cutoffs` in samples (-1 = padding)."""
    seconds = np.zeros(len(audio_seconds), dtype=np.float64)
    for row, (total_seconds, ends) in enumerate(zip(audio_seconds, cutoffs.to_pylist())):
        ends = [end for end in ends if end >= 0]
        if not ends or ends[-1] <= 0:
            continue
        start = ends[-2] if len(ends) > 1 else 0
        seconds[row] = total_seconds * (ends[-1] - start) / ends[-1]
    return seconds


def codes_target_seconds(audio_seconds: np.ndarray, audio_codes: pa.ChunkedArray) -> np.ndarray:
    """Codes format: each sample's last (target) segment of `audio_codes`, in frames at Mimi's frame rate
    (exact to a frame: a turn's last frame may be partly padding). Only list offsets are read, no code."""
    frames = []
    for chunk in audio_codes.chunks:
        segments = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
        lengths = np.append(pc.list_value_length(chunk.flatten()).to_numpy(zero_copy_only=False), 0)
        frames.append(np.where(segments > 0, lengths[np.cumsum(segments) - 1], 0))  # a row without segments: 0
    return np.concatenate(frames or [np.zeros(0)]).astype(np.float64) / MIMI_FRAME_RATE


@dataclass(frozen=True)
class SampleFormat:
    """One of prepare's sample formats (its `--format`), as the card reads it."""

    name: str
    segments_column: str  # a list per row, an entry per audio segment, the target turn's last
    target_seconds: Callable[[np.ndarray, pa.ChunkedArray], np.ndarray]  # (audio_seconds, that column) -> seconds


SAMPLE_FORMATS = (
    SampleFormat(PROCESSOR_FORMAT, "input_values_cutoffs", processor_target_seconds),
    SampleFormat(CODES_FORMAT, "audio_codes", codes_target_seconds),
)


# --- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    text: str  # README.md
    figures: dict[str, bytes] = field(default_factory=dict)  # repository path -> PNG bytes


def render_card(template: str, metadata: DatasetCardData, figures: dict[str, bytes], **values) -> Card:
    """The card of `templates/<template>` (Jinja) with the YAML header of `metadata` and `values`."""
    card = DatasetCard.from_template(metadata, template_path=str(TEMPLATES / template), **values)
    return Card(f"{card.content}\n", figures)


def split_rows(groups: dict[tuple[str, str], GroupCounts]) -> list[tuple]:
    """One table row per (config or language, split): conversations, rows, speakers, hours."""
    return [(name, split, c.conversations, c.rows, c.speakers, f"{c.hours:.3f}") for (name, split), c in groups.items()]


def left_out_splits(layouts: Sequence[ConfigLayout]) -> list[tuple[str, str]]:
    """(config, split) of each standard split a config lacks: no conversation fell into it."""
    return [
        (layout.name, split)
        for layout in layouts
        for split in SPLITS
        if split not in {files.split for files in layout.splits}
    ]


def counts_by_kind(items: Sequence[dict], key: str) -> list[tuple[str, int]]:
    return sorted(Counter(item[key] for item in items).items())


def quality_counts(report: dict) -> list[tuple[str, int, int]]:
    """(check, turns dropped, turns flagged) of the prepare report's quality checks (none in older reports)."""
    counts = report.get("quality", {}).get("counts", {})
    return [(check, numbers["dropped"], numbers["flagged"]) for check, numbers in sorted(counts.items())]


# --- the raw corpus card -------------------------------------------------------------------------


@dataclass(frozen=True)
class RawCorpusDescription:
    """What the card of a raw corpus says beyond the rows: how they were read, and what was left out."""

    settings: dict  # builder settings (split fractions, max turn seconds, sampling rate)
    versions: dict
    problems: tuple[dict, ...]  # `Problem.to_dict()` of every fault the reader found
    dropped_conversations: int  # conversations with no usable turn (all their problems are in `problems`)
    skipped_languages: tuple[str, ...] = ()  # language folders without a usable conversation

    def render(
        self, layouts: Sequence[ConfigLayout], configs: dict[str, dict[str, datasets.Dataset]], repo_id: str | None
    ) -> Card:
        """`configs`: the per-language configs and their splits (the rows written)."""
        columns = ["conversation_id", "speaker", "duration"]
        groups, all_seconds, all_ids, all_speakers = {}, [], [], []
        for language, splits in configs.items():
            for split, dataset in splits.items():
                table = read_columns(dataset, columns)
                ids, speakers = numpy_column(table, "conversation_id"), numpy_column(table, "speaker")
                seconds = numpy_column(table, "duration").astype(np.float64)
                groups[(language, split)] = group_counts(ids, speakers, seconds)
                all_ids.append(ids)
                all_speakers.append(speakers)
                all_seconds.append(seconds)
        ids, speakers, seconds = (np.concatenate(parts) for parts in (all_ids, all_speakers, all_seconds))
        turn_figure = f"{FIGURES_DIR}/turn_seconds.png"
        figures = {turn_figure: histogram_png(histogram(seconds, "turns by duration", "turn duration (seconds)"))}
        languages = list(configs)
        example = next(layout for layout in layouts if not layout.default)
        return render_card(
            "raw.md",
            card_data(layouts, languages, "CSM synthetic conversations (raw turns)"),
            figures,
            languages=languages,
            total=group_counts(ids, speakers, seconds),
            default_config=next(layout.name for layout in layouts if layout.default),
            groups=split_rows(groups),
            turn_figure=turn_figure,
            turn_seconds=distribution(seconds),
            settings=self.settings,
            versions=self.versions,
            dropped_conversations=self.dropped_conversations,
            problem_kinds=counts_by_kind(self.problems, "kind"),
            skipped_languages=self.skipped_languages,
            left_out_splits=left_out_splits(layouts),
            repo=repo_id or REPO_PLACEHOLDER,
            example_config=example.name,
            example_split=example.splits[0].split,
            config_names=[layout.name for layout in layouts],
        )
# --- the prepared samples card -------------------------------------------------------------------

@dataclass(frozen=True)
class PreparedDescription:
    """What the card of prepared samples says beyond the rows: the prepare run's report."""

    report: dict  # prepare_report.json
    sample_format: SampleFormat  # processor or codes
    model_id: str  # the model the training snippet loads (a Hub id with weights)

    def render(
        self, layouts: Sequence[ConfigLayout], configs: dict[str, dict[str, datasets.Dataset]], repo_id: str | None
    ) -> Card:
        ((_, splits),) = configs.items()
        segments = self.sample_format.segments_column
        columns = ["conversation_id", "language", "speaker", "num_tokens", "audio_seconds", segments]
        groups, tokens, turn_seconds, sample_seconds = {}, [], [], []
        for split, dataset in splits.items():
            table = read_columns(dataset, columns)
            ids, speakers = numpy_column(table, "conversation_id"), numpy_column(table, "speaker")
            audio_seconds = numpy_column(table, "audio_seconds").astype(np.float64)
            seconds = self.sample_format.target_seconds(audio_seconds, table.column(segments))
            languages = numpy_column(table, "language")
            for language in sorted(set(languages.tolist())):
                rows = languages == language
                groups[(language, split)] = group_counts(ids[rows], speakers[rows], seconds[rows])
            tokens.append(numpy_column(table, "num_tokens"))
            turn_seconds.append(seconds)
            sample_seconds.append(audio_seconds)
        tokens, turn_seconds, sample_seconds = (np.concatenate(p) for p in (tokens, turn_seconds, sample_seconds))
        groups = dict(sorted(groups.items(), key=lambda item: (item[0][0], split_rank(item[0][1]))))
        tokens_figure, turn_figure = f"{FIGURES_DIR}/sample_tokens.png", f"{FIGURES_DIR}/turn_seconds.png"
        figures = {
            tokens_figure: histogram_png(histogram(tokens, "samples by length", "tokens per sample")),
            turn_figure: histogram_png(
                histogram(turn_seconds, "samples by target turn duration", "target turn duration (seconds)")
            ),
        }
        report = self.report
        counts = report.get("counts", {})
        arguments = published_arguments(report.get("arguments", {}))
        languages = sorted({language for language, _ in groups})
        return render_card(
            "prepared.md",
            card_data(layouts, languages, "CSM synthetic conversations (training samples)"),
            figures,
            sample_format=self.sample_format.name,
            description=format_description(self.sample_format.name, arguments.get("target_sampling_rate", DEFAULT_SAMPLING_RATE)),
            languages=languages,
            num_samples=len(tokens),
            conversations=sum(c.conversations for c in groups.values()),
            speakers=sum(c.speakers for c in groups.values()),
            target_hours=float(np.sum(turn_seconds)) / 3600,
            sample_hours=float(np.sum(sample_seconds)) / 3600,
            groups=split_rows(groups),
            tokens_figure=tokens_figure,
            tokens=distribution(tokens),
            turn_figure=turn_figure,
            turn_seconds=distribution(turn_seconds),
            sample_seconds=distribution(sample_seconds),
            arguments=arguments,
            versions=report.get("versions", {}),
            skipped_samples=counts.get("skipped_samples", len(report.get("skipped", []))),
            skipped_reasons=counts_by_kind(report.get("skipped", []), "reason"),
            problem_count=counts.get("problems", len(report.get("problems", []))),
            problem_kinds=counts_by_kind(report.get("problems", []), "kind"),
            quality_counts=quality_counts(report),
            repo=repo_id or REPO_PLACEHOLDER,
            empty_splits=counts.get("empty_splits", {}),
            example_split="train" if any(split == "train" for _, split in groups) else next(iter(groups))[1],
            model_id=self.model_id,
        )
