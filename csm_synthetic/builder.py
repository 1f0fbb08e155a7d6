"""`datasets` builder for a raw corpus: one row per usable turn, a config per language plus `all`.

    builder = CsmSynthetic(data_dir="synthetic-dataset", config_name="en", cache_dir="cache")
    builder.download_and_prepare()
    dataset = builder.as_dataset()  # DatasetDict of train / validation / test
    # any other source of turns (`csm_synthetic.sources`): the same features, splits and problem kinds
    builder = CsmSynthetic(source=ManifestSource("turns.jsonl"), config_name="all", cache_dir="cache")

The Arrow cache holds the audio *paths* (plus text and metadata), never a copy of the audio, so
preparing reads only script files and audio headers. Reading the `audio` column through `datasets`
decodes with torchcodec (needs FFmpeg); pipelines that must not depend on FFmpeg cast the column to
`Audio(decode=False)` and decode with `csm_synthetic.audio.load_audio` (soundfile).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

import datasets

from .audio import DEFAULT_SAMPLING_RATE
from .corpus import ALL_LANGUAGES, Conversation, Corpus
from .errors import InputError
from .settings import CorpusSettings
from .sources import CorpusSource, FolderSource, corpus_fingerprint  # noqa: F401 (corpus_fingerprint: re-exported)
from .splits import SPLITS

_VERSION = datasets.Version("1.1.0")  # bump when the rows this builder writes change meaning


class TurnFeatures(datasets.Features):
    """The builder's features, encoding its rows without torchcodec.

    `datasets.Audio.encode_example` imports torchcodec, which loads FFmpeg, even for a path it merely
    stores. The builder's `audio` is always `{"path": ..., "bytes": None}`, already Arrow storage, so it is
    stored as is and building the dataset needs no FFmpeg. Equal to (and saved as) plain `Features`.
    """

    def encode_example(self, example: dict) -> dict:
        encoded = super().encode_example({**example, "audio": None})
        encoded["audio"] = {"bytes": example["audio"].get("bytes"), "path": example["audio"].get("path")}
        return encoded


def turn_features(sampling_rate: int = DEFAULT_SAMPLING_RATE) -> datasets.Features:
    return TurnFeatures(
        {
            "conversation_id": datasets.Value("string"),
            "turn_index": datasets.Value("int32"),
            "speaker": datasets.Value("int32"),
            "text": datasets.Value("string"),
            "audio": datasets.Audio(sampling_rate=sampling_rate, num_channels=1),
            "language": datasets.Value("string"),
            "duration": datasets.Value("float32"),
            # a span of the audio file, in seconds (null: the file's start or end); decoders read only the span
            "start": datasets.Value("float64"),
            "end": datasets.Value("float64"),
        }
    )


@dataclass
class CsmSyntheticConfig(datasets.BuilderConfig):
    """`name` is a language (a folder of a corpus root, or a language of the rows) or `all`; `source` is where
    the turns come from; `settings` shape the rows and splits."""

    settings: CorpusSettings = field(default_factory=CorpusSettings)
    source: CorpusSource | None = None

    @property
    def languages(self) -> list[str] | None:
        return None if self.name == ALL_LANGUAGES else [self.name]


def as_source(source: CorpusSource | str | os.PathLike) -> CorpusSource:
    """A source, or a corpus folder (`FolderSource`)."""
    return source if isinstance(source, CorpusSource) else FolderSource(str(source))


def available_configs(source: CorpusSource | str | os.PathLike) -> list[str]:
    """`all` plus one config per language of the source (for a corpus folder: per language folder)."""
    return [ALL_LANGUAGES] + as_source(source).languages()


class CsmSynthetic(datasets.GeneratorBasedBuilder):
    """Turns of a two-speaker conversational corpus: a folder in the layout of CORPUS.md (`data_dir`), or any
    `source` of `csm_synthetic.sources` (a manifest, a `datasets` dataset of turns)."""

    BUILDER_CONFIG_CLASS = CsmSyntheticConfig
    VERSION = _VERSION

    def __init__(
        self,
        *args,
        data_dir: str | os.PathLike | None = None,
        source: CorpusSource | None = None,
        config_name: str | None = None,
        settings: CorpusSettings | None = None,
        **kwargs,
    ):
        if (data_dir is None) == (source is None):
            raise InputError("CsmSynthetic needs data_dir=<the corpus folder> or source=<a corpus source>")
        source = source or FolderSource(str(data_dir))
        source.check()
        config_name = config_name or ALL_LANGUAGES
        if config_name != ALL_LANGUAGES:  # always available: no need to read every source's languages for it
            configs = available_configs(source)
            if config_name not in configs:
                where = "language folder" if isinstance(source, FolderSource) else "language"
                raise InputError(f"no {where} {config_name!r} in {source}; available configs: {configs}")
        languages = None if config_name == ALL_LANGUAGES else [config_name]
        kwargs.setdefault("hash", source.fingerprint(languages))
        kwargs.setdefault("dataset_name", "csm_synthetic")
        settings = settings or CorpusSettings()  # always given, so equal settings share one cache folder
        if isinstance(source, FolderSource):
            kwargs["data_dir"] = source.input_dir
        super().__init__(*args, config_name=config_name, settings=settings, source=source, **kwargs)

    @cached_property
    def corpus(self) -> Corpus:
        """The parsed corpus of this config (scripts or rows, and audio headers), read once per builder."""
        return self.config.source.read(self.config.languages, self.config.settings.max_turn_seconds)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Turns of synthetic two-speaker podcast conversations (LLM script, VibeVoice speech).",
            features=turn_features(self.config.settings.target_sampling_rate),
        )

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        by_split: dict[str, list[Conversation]] = {split: [] for split in SPLITS}
        for conversation in self.corpus.conversations:
            split = self.config.settings.split_of(conversation.conversation_id)
            by_split[split].append(conversation)
        # `datasets` cannot read back a split with no rows, so an empty split is left out
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"conversations": conversations})
            for split, conversations in by_split.items()
            if conversations
        ]

    def _generate_examples(self, conversations: list[Conversation]):
        for conversation in conversations:
            for turn in conversation.turns:
                yield f"{conversation.conversation_id}/{turn.index}", {
                    "conversation_id": conversation.conversation_id,
                    "turn_index": turn.index,
                    "speaker": turn.speaker,
                    "text": turn.text,
                    "audio": {"path": turn.audio_path, "bytes": None},
                    "language": conversation.language,
                    "duration": turn.duration,
                    "start": turn.start,
                    "end": turn.end,
                }


def load_turns(
    data_dir: str | os.PathLike | CorpusSource,
    config_name: str = ALL_LANGUAGES,
    cache_dir: str | None = None,
    **settings,
) -> datasets.DatasetDict:
    """Build (or reuse from cache) and return the turn dataset of one config of a corpus folder or source;
    `settings`: `CorpusSettings` fields."""
    builder = CsmSynthetic(
        source=as_source(data_dir), config_name=config_name, cache_dir=cache_dir, settings=CorpusSettings(**settings)
    )
    builder.download_and_prepare()
    return builder.as_dataset()
