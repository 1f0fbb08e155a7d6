"""What a repository publishes: the raw corpus through the builder, or a prepared output and its report.

    content = raw_corpus_content("synthetic-dataset", settings=CorpusSettings())  # a config per language + `all`
    content = prepared_content("prepared")                                       # one `default` config

A `RepositoryContent` is the rows of each config and split plus the description that renders the card;
`repository.py` writes it, whatever it holds. A prepared output is in one of prepare's sample formats,
told apart here by its columns (`card.SAMPLE_FORMATS`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import datasets

from csm_synthetic.builder import ALL_LANGUAGES, CsmSynthetic, available_configs
from csm_synthetic.environment import package_versions
from csm_synthetic.errors import InputError
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.splits import split_rank
from transforms.core.csm import DEFAULT_MODEL_ID
from transforms.pipeline.options import REPORT_NAME  # the prepare step owns the name of its report

from .card import DATA_DIR, SAMPLE_FORMATS, PreparedDescription, RawCorpusDescription, SampleFormat

logger = logging.getLogger(__name__)

PREPARED_CONFIG = "default"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # config names double as folder names
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name


@dataclass(frozen=True)
class ConfigContent:
    name: str
    splits: dict[str, datasets.Dataset]  # rows written under data/<name>/ (empty for a config of others' shards)
    reuses: tuple[str, ...] = ()  # configs whose shards make up this one (the raw corpus' `all`)
    default: bool = False


@dataclass(frozen=True)
class RepositoryContent:
    configs: tuple[ConfigContent, ...]
    description: RawCorpusDescription | PreparedDescription  # renders the card

    @property
    def config_names(self) -> list[str]:
        return [config.name for config in self.configs]


def check_config_name(name: str, source: str) -> None:
    if not _SAFE_NAME.match(name) or name == DATA_DIR:
        raise InputError(
            f"{source} {name!r} cannot be a config name (letters, digits, '_', '.', '-' only, not {DATA_DIR!r}): "
            "rename the folder"
        )


def ordered_splits(splits: datasets.DatasetDict | dict) -> dict:
    """train, validation, test first (in that order), then any other split by name."""
    return {name: splits[name] for name in sorted(splits, key=split_rank)}


def raw_corpus_content(
    input_dir: str | os.PathLike, cache_dir: str | None = None, settings: CorpusSettings | None = None
) -> RepositoryContent:
    """The raw corpus through the builder: one config per language, `all` (default) made of them."""
    settings = settings or CorpusSettings()
    if not Path(input_dir).is_dir():
        raise InputError(f"--input_dir {str(input_dir)!r} does not exist or is not a folder")
    languages = available_configs(input_dir)[1:]
    for language in languages:
        check_config_name(language, "language folder")
        if language == ALL_LANGUAGES:
            raise InputError(
                f"a language folder may not be called {ALL_LANGUAGES!r}: that is the config of every language"
            )
    language_splits, problems, skipped, dropped = {}, [], [], 0
    for language in languages:
        builder = language_builder(input_dir, language, cache_dir, settings)
        corpus = builder.corpus
        problems += [problem.to_dict() for problem in corpus.problems]
        usable = {conversation.conversation_id for conversation in corpus.conversations}
        dropped += len({problem.conversation_id for problem in corpus.problems} - usable)
        if not corpus.conversations:
            logger.warning("language folder %r has no usable conversation: left out", language)
            skipped.append(language)
            continue
        logger.info("Reading the %s turns (%d conversations)", language, len(corpus.conversations))
        builder.download_and_prepare()
        language_splits[language] = ordered_splits(builder.as_dataset())
    if not language_splits:
        raise InputError(f"no usable conversation found under {str(input_dir)!r} ({len(problems)} problems)")
    configs = [ConfigContent(ALL_LANGUAGES, {}, reuses=tuple(language_splits), default=True)]
    configs += [ConfigContent(language, splits) for language, splits in language_splits.items()]
    description = RawCorpusDescription(
        settings=settings.to_dict(),
        versions=package_versions(),
        problems=tuple(problems),
        dropped_conversations=dropped,
        skipped_languages=tuple(skipped),
    )
    return RepositoryContent(tuple(configs), description)


def language_builder(input_dir, language: str, cache_dir: str | None, settings: CorpusSettings) -> CsmSynthetic:
    try:
        return CsmSynthetic(data_dir=input_dir, config_name=language, cache_dir=cache_dir, settings=settings)
    except (ValueError, FileNotFoundError) as error:
        raise InputError(str(error)) from error


def training_model_id(prepared_with: str | None) -> str:
    """The model a prepared card's training snippet loads when no --model_id is given: the one whose processor
    prepared the samples when that is a Hub id, else the CSM checkpoint default (a local folder - e.g. an
    offline processor without weights - is nothing the card's readers can load)."""
    if prepared_with and not Path(prepared_with).exists() and _HUB_ID.match(prepared_with):
        return prepared_with
    return DEFAULT_MODEL_ID


def prepared_content(prepared_dir: str | os.PathLike, model_id: str | None = None) -> RepositoryContent:
    """The output of `prepare_dataset_for_training.py`: one default config, its report on the card, whose
    training snippet loads `model_id` (default: `training_model_id` of the run's)."""
    folder = Path(prepared_dir)
    if not folder.is_dir():
        raise InputError(f"--prepared_dir {str(folder)!r} does not exist or is not a folder")
    report_path = folder / REPORT_NAME
    if not report_path.is_file():
        raise InputError(
            f"--prepared_dir {str(folder)!r} has no {REPORT_NAME}: it is not the output of a finished "
            "prepare_dataset_for_training.py run (finish it with --resume)"
        )
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as error:
        raise InputError(f"cannot load --prepared_dir {str(folder)!r} with datasets.load_from_disk: {error}") from error
    if not isinstance(loaded, datasets.DatasetDict):
        raise InputError(f"--prepared_dir {str(folder)!r} holds a single Dataset, not the splits prepare writes")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    empty = [split for split, dataset in loaded.items() if not len(dataset)]
    if empty:
        logger.warning("left out the splits without samples (a split cannot be read back empty): %s", empty)
    splits = {split: dataset for split, dataset in loaded.items() if len(dataset)}
    if not splits:
        raise InputError(f"--prepared_dir {str(folder)!r} holds no samples")
    config = ConfigContent(PREPARED_CONFIG, ordered_splits(splits), default=True)
    found = sample_format(next(iter(splits.values())).features, folder)
    model_id = model_id or training_model_id(report.get("arguments", {}).get("model_id"))
    return RepositoryContent((config,), PreparedDescription(report, found, model_id))


def sample_format(features: datasets.Features, folder: Path) -> SampleFormat:
    """The format of prepared rows: the one whose audio segments column they have."""
    found = [known for known in SAMPLE_FORMATS if known.segments_column in features]
    if len(found) != 1:
        expected = ", ".join(f"{known.name} ({known.segments_column})" for known in SAMPLE_FORMATS)
        raise InputError(
            f"--prepared_dir {str(folder)!r} has the columns {list(features)}: not one of prepare's sample "
            f"formats, each told by one column: {expected}"
        )
    return found[0]
