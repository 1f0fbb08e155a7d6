"""The dataset card of a published repository: YAML metadata, statistics, histogram figures.

    description = RawCorpusDescription(settings=..., versions=..., problems=..., skipped_languages=...)
    card = description.render(layouts, configs, repo_id="me/my-dataset")
    card.text          # README.md: YAML `configs`/`dataset_info` + what a user wants before downloading
    card.figures       # {"figures/turn_seconds.png": b"\\x89PNG..."}

Every number and figure is computed here from the rows that are published (never from a separate
summary), so the card cannot disagree with the data. Figures are drawn by `figures.py` (matplotlib);
each carries its bin edges and counts in a PNG text chunk, which `figures.read_histogram_png` reads back.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow as pa
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from csm_synthetic.splits import split_rank

from .figures import histogram, histogram_png
from .repository import CARD_TAG, FIGURES_DIR, ConfigLayout

REPO_PLACEHOLDER = "<your-name>/<dataset-name>"
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")  # what the Hub accepts in the `language` metadata field


# --- the YAML header -----------------------------------------------------------------------------


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


def target_turn_seconds(audio_seconds: np.ndarray, cutoffs: pa.ChunkedArray) -> np.ndarray:
    """Duration of each sample's last (target) turn, from its cumulative audio cutoffs (-1 = padding)."""
    seconds = np.zeros(len(audio_seconds), dtype=np.float64)
    for row, (total_seconds, ends) in enumerate(zip(audio_seconds, cutoffs.to_pylist())):
        ends = [end for end in ends if end >= 0]
        if not ends or ends[-1] <= 0:
            continue
        start = ends[-2] if len(ends) > 1 else 0
        seconds[row] = total_seconds * (ends[-1] - start) / ends[-1]
    return seconds


# --- card text helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    text: str  # README.md
    figures: dict[str, bytes] = field(default_factory=dict)  # repository path -> PNG bytes


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def distribution_line(values: np.ndarray, unit: str, digits: int = 2) -> str:
    numbers = distribution(values)
    if not numbers:
        return "no values"
    return ", ".join(f"{name} {value:.{digits}f}{unit}" for name, value in numbers.items())


def counts_table(label: str, groups: dict[tuple[str, str], GroupCounts], row_name: str) -> str:
    rows = [
        (language, split, c.conversations, c.rows, c.speakers, f"{c.hours:.3f}")
        for (language, split), c in groups.items()
    ]
    return markdown_table([label, "split", "conversations", row_name, "speakers", "hours"], rows)


def counts_by_kind(items: Sequence[dict], key: str) -> list[tuple[str, int]]:
    return sorted(Counter(item[key] for item in items).items())


def settings_table(settings: dict, header: str = "setting") -> str:
    return markdown_table([header, "value"], [(f"`{name}`", f"`{value}`") for name, value in settings.items()])


def loading_repo(repo_id: str | None) -> str:
    return repo_id or REPO_PLACEHOLDER


def python_block(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


def figure(path: str, alt: str) -> str:
    return f"![{alt}]({path})"


# --- the raw corpus card -------------------------------------------------------------------------

SPEAKER_NOTE = (
    "Speaker ids (`0`, `1`) are local to a conversation, so speakers are counted once per conversation they speak in."
)


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
        total = group_counts(ids, speakers, seconds)
        turn_hist = histogram(seconds, "turns by duration", "turn duration (seconds)")
        figures = {f"{FIGURES_DIR}/turn_seconds.png": histogram_png(turn_hist)}
        languages = list(configs)
        metadata = card_data(layouts, languages, "CSM synthetic conversations (raw turns)")
        body = self.body(layouts, languages, groups, total, seconds, repo_id)
        return Card(f"---\n{metadata.to_yaml()}\n---\n\n{body}\n", figures)

    def body(self, layouts, languages, groups, total: GroupCounts, seconds, repo_id) -> str:
        default = next(layout.name for layout in layouts if layout.default)
        example = next(layout for layout in layouts if not layout.default)
        problem_kinds = counts_by_kind(self.problems, "kind")
        sections = [
            "# CSM synthetic conversations: raw turns",
            (
                "Synthetic two-speaker podcast conversations: an LLM wrote each script, the VibeVoice TTS model "
                "spoke it, and the result was cut into one audio file per line. One row per usable turn: the "
                "conversation id, the turn's 0-based position, the 0-based speaker id, its text, its audio (the "
                "original file's bytes, embedded) and its duration."
            ),
            "## At a glance",
            markdown_table(
                ["", ""],
                [
                    ("languages", ", ".join(languages)),
                    ("conversations", total.conversations),
                    ("turns", total.rows),
                    ("speakers", total.speakers),
                    ("audio hours", f"{total.hours:.3f}"),
                ],
            ),
            SPEAKER_NOTE,
            "## Configs and splits",
            (
                f"One config per language, and `{default}` (the default) with every language. "
                "A conversation lies in exactly one split, chosen by a hash of its id (the same on every run)."
            ),
            counts_table("config", groups, "turns"),
            "## Turn durations",
            figure(f"{FIGURES_DIR}/turn_seconds.png", "Histogram of turn durations in seconds"),
            f"Turn duration over all {total.rows} turns: {distribution_line(seconds, ' s')}.",
            (
                "Token lengths of training samples depend on the model's processor and on the context length, "
                "so they are not part of this raw corpus: `scripts/prepare_dataset_for_training.py` of the "
                "csm-synthetic project makes contextual CSM training samples of it, and its published card "
                "shows their token lengths."
            ),
            "## How the data was read",
            (
                "The corpus builder of csm-synthetic paired each script line with the audio file of the same "
                "turn number and speaker; audio keeps its original sample rate and channels (the `audio` feature "
                f"decodes to {self.settings.get('target_sampling_rate', 24000)} Hz mono)."
            ),
            settings_table(self.settings),
            settings_table(self.versions, header="package"),
            "## Left out",
            (
                f"{self.dropped_conversations} conversations were dropped entirely (text and audio could be "
                "misaligned, or their first turn was unusable); a bad turn cut its conversation before it. "
                "Problems by kind:"
            ),
            markdown_table(["kind", "count"], problem_kinds) if problem_kinds else "No problems were found.",
        ]
        if self.skipped_languages:
            sections.append(
                "Language folders without any usable conversation: " + ", ".join(self.skipped_languages) + "."
            )
        sections += [
            "## Loading",
            (
                "Decoding the `audio` column through `datasets` needs torchcodec and FFmpeg; the bytes can be "
                "read with soundfile instead:"
            ),
            python_block(
                RAW_SNIPPET.format(
                    repo=loading_repo(repo_id),
                    config=example.name,
                    split=example.splits[0].split,
                    configs=", ".join(layout.name for layout in layouts),
                )
            ),
        ]
        return "\n\n".join(sections)


RAW_SNIPPET = """
import io

import soundfile as sf
from datasets import Audio, load_dataset

turns = load_dataset("{repo}", "{config}", split="{split}")  # configs: {configs}
turns = turns.cast_column("audio", Audio(decode=False))  # keep the file bytes, decode with soundfile
row = turns[0]
samples, sampling_rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
print(row["conversation_id"], row["turn_index"], row["speaker"], row["text"], samples.shape, sampling_rate)
"""


# --- the prepared samples card -------------------------------------------------------------------

PUBLISHED_ARGUMENTS_LEFT_OUT = ("input_dir", "output_dir", "cache_dir", "num_proc")  # local paths and machine


@dataclass(frozen=True)
class PreparedDescription:
    """What the card of prepared samples says beyond the rows: the prepare run's report."""

    report: dict  # prepare_report.json

    def render(
        self, layouts: Sequence[ConfigLayout], configs: dict[str, dict[str, datasets.Dataset]], repo_id: str | None
    ) -> Card:
        ((_, splits),) = configs.items()
        columns = ["conversation_id", "language", "speaker", "num_tokens", "audio_seconds", "input_values_cutoffs"]
        groups, tokens, turn_seconds, sample_seconds = {}, [], [], []
        for split, dataset in splits.items():
            table = read_columns(dataset, columns)
            ids, speakers = numpy_column(table, "conversation_id"), numpy_column(table, "speaker")
            audio_seconds = numpy_column(table, "audio_seconds").astype(np.float64)
            seconds = target_turn_seconds(audio_seconds, table.column("input_values_cutoffs"))
            languages = numpy_column(table, "language")
            for language in sorted(set(languages.tolist())):
                rows = languages == language
                groups[(language, split)] = group_counts(ids[rows], speakers[rows], seconds[rows])
            tokens.append(numpy_column(table, "num_tokens"))
            turn_seconds.append(seconds)
            sample_seconds.append(audio_seconds)
        tokens, turn_seconds, sample_seconds = (np.concatenate(p) for p in (tokens, turn_seconds, sample_seconds))
        groups = dict(sorted(groups.items(), key=lambda item: (item[0][0], split_rank(item[0][1]))))
        figures = {
            f"{FIGURES_DIR}/sample_tokens.png": histogram_png(
                histogram(tokens, "samples by length", "tokens per sample")
            ),
            f"{FIGURES_DIR}/turn_seconds.png": histogram_png(
                histogram(turn_seconds, "samples by target turn duration", "target turn duration (seconds)")
            ),
        }
        languages = sorted({language for language, _ in groups})
        metadata = card_data(layouts, languages, "CSM synthetic conversations (training samples)")
        body = self.body(languages, groups, tokens, turn_seconds, sample_seconds, repo_id)
        return Card(f"---\n{metadata.to_yaml()}\n---\n\n{body}\n", figures)

    def body(self, languages, groups, tokens, turn_seconds, sample_seconds, repo_id) -> str:
        report = self.report
        split = "train" if any(split == "train" for _, split in groups) else next(iter(groups))[1]
        counts = report.get("counts", {})
        arguments = {k: v for k, v in report.get("arguments", {}).items() if k not in PUBLISHED_ARGUMENTS_LEFT_OUT}
        skipped = counts_by_kind(report.get("skipped", []), "reason")
        problems = counts_by_kind(report.get("problems", []), "kind")
        num_samples = len(tokens)
        conversations = sum(c.conversations for c in groups.values())
        speakers = sum(c.speakers for c in groups.values())
        sections = [
            "# CSM synthetic conversations: training samples",
            (
                "Training samples for Sesame CSM made from synthetic two-speaker podcast conversations (an LLM "
                "wrote each script, the VibeVoice TTS model spoke it). Each row is one target turn with the "
                "turns before it as context, tokenized by the CSM processor: `input_ids`, `attention_mask`, "
                "`labels`, `input_values` (the audio of every turn of the sample, concatenated, float32) and "
                "`input_values_cutoffs` (where each turn's audio ends)."
            ),
            "## At a glance",
            markdown_table(
                ["", ""],
                [
                    ("languages", ", ".join(languages)),
                    ("samples", num_samples),
                    ("conversations", conversations),
                    ("speakers", speakers),
                    ("target turn audio hours", f"{float(np.sum(turn_seconds)) / 3600:.3f}"),
                    ("sample audio hours (context included)", f"{float(np.sum(sample_seconds)) / 3600:.3f}"),
                ],
            ),
            SPEAKER_NOTE + " Hours count each sample's target turn once.",
            "## Splits",
            "A conversation lies in exactly one split, chosen by a hash of its id (the same on every run).",
            counts_table("language", groups, "samples"),
            "## Sample lengths",
            figure(f"{FIGURES_DIR}/sample_tokens.png", "Histogram of tokens per sample"),
            (
                f"Tokens per sample: {distribution_line(tokens, '', digits=0)} "
                f"(budget `max_tokens` = {arguments.get('max_tokens', 'n/a')})."
            ),
            figure(f"{FIGURES_DIR}/turn_seconds.png", "Histogram of target turn durations in seconds"),
            (
                f"Target turn duration: {distribution_line(turn_seconds, ' s')}. "
                f"Sample audio (context included): {distribution_line(sample_seconds, ' s')}."
            ),
            "## How the samples were made",
            (
                "`scripts/prepare_dataset_for_training.py` of the csm-synthetic project read the raw corpus, "
                "paired each script line with its audio, resampled to the processor's rate and built one sample "
                "per turn with as many previous turns as fit the token budget. Arguments of the run "
                "(local paths left out):"
            ),
            settings_table(arguments),
            settings_table(report.get("versions", {}), header="package"),
            "## Left out",
            f"{counts.get('skipped_samples', len(report.get('skipped', [])))} turns gave no sample, by reason:",
            markdown_table(["reason", "count"], skipped) if skipped else "None.",
            f"{counts.get('problems', len(report.get('problems', [])))} problems in the raw corpus, by kind:",
            markdown_table(["kind", "count"], problems) if problems else "None.",
            "## Loading and training",
            (
                "Samples differ in length, so this loop trains with batches of one "
                "(pad `input_ids`/`labels`/`input_values` to batch more):"
            ),
            python_block(
                PREPARED_SNIPPET.format(
                    repo=loading_repo(repo_id), split=split, model=arguments.get("model_id", "unsloth/csm-1b")
                )
            ),
        ]
        return "\n\n".join(sections)


PREPARED_SNIPPET = """
import torch
from datasets import load_dataset
from transformers import CsmForConditionalGeneration

samples = load_dataset("{repo}", split="{split}").with_format("torch")
model = CsmForConditionalGeneration.from_pretrained("{model}")  # the model the samples were tokenized for
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
for sample in samples.select(range(min(2, len(samples)))):
    outputs = model(
        input_ids=sample["input_ids"][None].long(),
        attention_mask=sample["attention_mask"][None].long(),
        labels=sample["labels"][None].long(),
        input_values=sample["input_values"][None, None],
        input_values_cutoffs=sample["input_values_cutoffs"][None].long(),
    )
    outputs.loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    print(f"loss {{outputs.loss.item():.3f}}")
"""
