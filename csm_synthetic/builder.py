"""`datasets` builder for a raw corpus: one row per usable turn, a config per language plus `all`.

    builder = CsmSynthetic(data_dir="synthetic-dataset", config_name="en", cache_dir="cache")
    builder.download_and_prepare()
    dataset = builder.as_dataset()  # DatasetDict of train / validation / test

The Arrow cache holds the audio *paths* (plus text and metadata), never a copy of the audio, so
preparing reads only script files and audio headers. Reading the `audio` column through `datasets`
decodes with torchcodec (needs FFmpeg); pipelines that must not depend on FFmpeg cast the column to
`Audio(decode=False)` and decode with `csm_synthetic.audio.load_audio` (soundfile).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import datasets

from .audio import DEFAULT_SAMPLING_RATE
from .corpus import (
    ALL_LANGUAGES,
    SEGMENTS_DIR,
    Conversation,
    Corpus,
    conversation_id_of,
    find_conversation_dirs,
    find_language_dirs,
    read_corpus,
    segments_entries,
)
from .errors import InputError
from .settings import CorpusSettings
from .splits import SPLITS

_VERSION = datasets.Version("1.0.0")  # bump when the rows this builder writes change meaning


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
        }
    )


@dataclass
class CsmSyntheticConfig(datasets.BuilderConfig):
    """`name` is a language folder or `all`; `settings` shape the rows and splits."""

    settings: CorpusSettings = field(default_factory=CorpusSettings)

    @property
    def languages(self) -> list[str] | None:
        return None if self.name == ALL_LANGUAGES else [self.name]


def available_configs(data_dir: str | os.PathLike) -> list[str]:
    """`all` plus one config per language folder of the corpus."""
    return [ALL_LANGUAGES] + [path.name for path in find_language_dirs(Path(data_dir))]


def corpus_fingerprint(data_dir: str | os.PathLike, languages: list[str] | None) -> str:
    """Hash of what the reader reads: each conversation's id and the path, size and mtime of every entry of its
    `segments/` (behind links: their targets'), found by the reader's own traversal.

    A changed corpus gets a fresh cache, not a stale one, also where the change is behind a symbolic link;
    files that are no part of a conversation (an output or cache folder inside the corpus root, `_meta/`)
    change nothing. Languages enter through the conversation ids: a language folder without a conversation
    yields no rows.
    """
    root = Path(data_dir)
    hasher = hashlib.sha256()
    conversation_dirs, _ = find_conversation_dirs(root, languages)
    for conversation_dir in conversation_dirs:
        conversation_id = conversation_id_of(conversation_dir, root)
        hasher.update(f"{conversation_id}\n".encode())
        try:
            entries = segments_entries(conversation_dir / SEGMENTS_DIR)
        except OSError:
            entries = []  # the reader reports the conversation unreadable: no rows
        for entry in entries:
            try:
                stat = entry.stat()  # follows links
                size, mtime = stat.st_size, stat.st_mtime_ns
            except OSError:  # a broken link: the reader reports it
                size = mtime = -1
            hasher.update(f"{conversation_id}/{SEGMENTS_DIR}/{entry.name}\0{size}\0{mtime}\n".encode())
    return hasher.hexdigest()[:16]


class CsmSynthetic(datasets.GeneratorBasedBuilder):
    """Turns of a synthetic two-speaker conversational corpus (see CORPUS.md for the layout)."""

    BUILDER_CONFIG_CLASS = CsmSyntheticConfig
    VERSION = _VERSION

    def __init__(
        self,
        *args,
        data_dir: str | os.PathLike | None = None,
        config_name: str | None = None,
        settings: CorpusSettings | None = None,
        **kwargs,
    ):
        if data_dir is None:
            raise InputError("CsmSynthetic needs data_dir=<the corpus folder>")
        if not Path(data_dir).is_dir():
            raise InputError(f"corpus folder {str(data_dir)!r} does not exist or is not a folder")
        config_name = config_name or ALL_LANGUAGES
        configs = available_configs(data_dir)
        if config_name not in configs:
            raise InputError(f"no language folder {config_name!r} in {str(data_dir)!r}; available configs: {configs}")
        languages = None if config_name == ALL_LANGUAGES else [config_name]
        kwargs.setdefault("hash", corpus_fingerprint(data_dir, languages))
        kwargs.setdefault("dataset_name", "csm_synthetic")
        settings = settings or CorpusSettings()  # always given, so equal settings share one cache folder
        super().__init__(*args, data_dir=str(data_dir), config_name=config_name, settings=settings, **kwargs)

    @cached_property
    def corpus(self) -> Corpus:
        """The parsed corpus of this config (scripts and audio headers), read once per builder."""
        return read_corpus(self.config.data_dir, self.config.languages, self.config.settings.max_turn_seconds)

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
                }


def load_turns(
    data_dir: str | os.PathLike, config_name: str = ALL_LANGUAGES, cache_dir: str | None = None, **settings
) -> datasets.DatasetDict:
    """Build (or reuse from cache) and return the turn dataset of one config; `settings`: `CorpusSettings` fields."""
    builder = CsmSynthetic(
        data_dir=data_dir, config_name=config_name, cache_dir=cache_dir, settings=CorpusSettings(**settings)
    )
    builder.download_and_prepare()
    return builder.as_dataset()
