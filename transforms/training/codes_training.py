"""Train CSM on codes-format samples (`transforms.codes`): no codec runs in a training step.

With the transformers `Trainer`:

    model = CsmForCodesTraining.from_pretrained("sesame/csm-1b")  # CsmForConditionalGeneration + codes input
    collator = CodesCollator.for_model(
        model.config, pad_token_id=processor.tokenizer.pad_token_id,
        loss_on=TARGET_AUDIO, depth_decoder_labels_ratio=0.5,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=samples["train"], data_collator=collator)

In a loop of your own, with any `CsmForConditionalGeneration`:

    batch = collator(rows)
    loss = model(**codes_model_inputs(model, batch)).loss

The collator makes `input_ids`, `attention_mask`, `audio_codes` - each position's codebook frame:
the codes at `<|AUDIO|>`, the all-`codebook_eos_token_id` frame at `<|audio_eos|>` - and 3-D `labels`
`(batch, seq, num_codebooks)`. The model side embeds text with `embed_text_tokens` and frames with
`backbone_model.embed_tokens`, exactly as `CsmForConditionalGeneration.forward` does after running the
codec, so with `loss_on=ALL_AUDIO` the loss equals the processor path's. Only 3-D labels can leave
context audio out of the loss (`loss_on=TARGET_AUDIO`): the 2-D path overwrites every audio label.

A model that does not take `audio_codes` cannot train on these rows by mistake. The stock
`CsmForConditionalGeneration` would swallow `audio_codes` in its `**kwargs` and embed every audio position
as the `<|AUDIO|>` text token - a finite loss, silently wrong. So:

- the batch's `input_ids` are a `CodesInputIds` tensor, which refuses to be embedded (any model that embeds
  them raises `CodesBatchError` saying what to use); only `CsmForCodesTraining` and `codes_model_inputs`,
  which embed the codes, take the plain ids back;
- the `Trainer` (`remove_unused_columns=True`) removes `audio_codes` before the collator when its model's
  forward does not name it; the collator then raises `CodesBatchError` instead of batching rows without codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import CsmConfig, CsmForConditionalGeneration

from ..core.labels import IGNORE_INDEX, backbone_only_frames

ALL_AUDIO = "all_audio"  # every audio frame and <|audio_eos|> of the sample, context included (the processor path)
TARGET_AUDIO = "target_audio"  # only the target turn's frames and its <|audio_eos|>
LOSS_ON = (ALL_AUDIO, TARGET_AUDIO)
PADDING_SIDES = ("left", "right")
USE_INSTEAD = (
    "Train a CsmForCodesTraining (transforms.training.codes_training: CsmForConditionalGeneration plus an "
    "audio_codes input, same checkpoints), or call any CsmForConditionalGeneration with "
    "model(**codes_model_inputs(model, batch))."
)


class CodesBatchError(TypeError):
    """Codes-format data reached a model that does not take `audio_codes`."""


class CodesInputIds(torch.Tensor):
    """`input_ids` of a `CodesCollator` batch: they refuse to be embedded by a model that ignores `audio_codes`.

    Every other operation (`.to(device)`, pinning, pickling through DataLoader workers, comparisons,
    indexing) works as on a plain tensor and keeps this type. `plain_input_ids` gives the plain tensor back.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in _EMBEDDINGS:
            raise CodesBatchError(
                "these input_ids come from a CodesCollator batch, whose audio positions are described by "
                "audio_codes; this model embeds input_ids without them, so it would train on every audio "
                f"position embedded as the <|AUDIO|> text token. {USE_INSTEAD}"
            )
        return super().__torch_function__(func, types, args, kwargs)


_EMBEDDINGS = {
    torch.nn.functional.embedding,
    torch.embedding,
    torch.nn.functional.embedding_bag,
    torch.embedding_bag,
}


def plain_input_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """The ids as a plain tensor (a view, no copy), for a model that embeds the codes too."""
    return input_ids.as_subclass(torch.Tensor) if isinstance(input_ids, CodesInputIds) else input_ids


@dataclass(frozen=True)
class RowTensors:
    input_ids: np.ndarray  # (seq,)
    attention_mask: np.ndarray  # (seq,)
    audio_codes: np.ndarray  # (seq, num_codebooks): the frame of each <|AUDIO|> / <|audio_eos|> position, 0 elsewhere
    labels: np.ndarray  # (seq, num_codebooks)
    depth_candidates: np.ndarray  # (seq,) bool: labelled <|AUDIO|> frames, among which the -101 frames are drawn


@dataclass(frozen=True)
class CodesCollator:
    """Batch codes-format rows into `input_ids`, `attention_mask`, `audio_codes` and 3-D `labels`.

    `depth_decoder_labels_ratio` is drawn anew for every batch, with the processor's rule and torch's
    global RNG: `int(n * (1 - ratio))` of the `n` labelled audio frames keep only their codebook-0 label
    (they train the backbone, not the depth decoder). Rows are padded on `padding_side` (the processor's
    `left` by default) with `pad_token_id`, attention 0 and labels -100.
    """

    audio_token_id: int
    audio_eos_token_id: int
    codebook_eos_token_id: int
    num_codebooks: int
    pad_token_id: int
    loss_on: str = ALL_AUDIO
    depth_decoder_labels_ratio: float = 1.0
    padding_side: str = "left"

    def __post_init__(self):
        if self.loss_on not in LOSS_ON:
            raise ValueError(f"loss_on must be one of {LOSS_ON} (got {self.loss_on!r})")
        if not 0.0 <= self.depth_decoder_labels_ratio <= 1.0:
            raise ValueError(f"depth_decoder_labels_ratio must be in [0, 1] (got {self.depth_decoder_labels_ratio})")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES} (got {self.padding_side!r})")

    @classmethod
    def for_model(cls, config: CsmConfig, pad_token_id: int, **options) -> CodesCollator:
        """A collator with `config`'s token ids; `pad_token_id` is the tokenizer's (the processor pads with it)."""
        return cls(
            audio_token_id=config.audio_token_id,
            audio_eos_token_id=config.audio_eos_token_id,
            codebook_eos_token_id=config.codebook_eos_token_id,
            num_codebooks=config.num_codebooks,
            pad_token_id=pad_token_id,
            **options,
        )

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if any("audio_codes" not in row for row in rows):
            raise CodesBatchError(
                f"rows without audio_codes (columns: {sorted(rows[0])}). The transformers Trainer removes the "
                "columns its model's forward does not name (remove_unused_columns=True): this model does not "
                "take audio_codes, and would train on every audio position embedded as the <|AUDIO|> text "
                f"token. {USE_INSTEAD}"
            )
        parts = [self.row_tensors(row) for row in rows]
        length = max(len(part.input_ids) for part in parts)
        batch = {
            name: torch.from_numpy(np.stack([self.pad(getattr(part, name), length, fill) for part in parts]))
            for name, fill in (
                ("input_ids", self.pad_token_id),
                ("attention_mask", 0),
                ("audio_codes", 0),
                ("labels", IGNORE_INDEX),
                ("depth_candidates", False),
            )
        }
        self.drop_depth_decoder_labels(batch["labels"], batch.pop("depth_candidates"))
        batch["input_ids"] = batch["input_ids"].as_subclass(CodesInputIds)
        return batch

    def row_tensors(self, row: dict) -> RowTensors:
        """One row's tensors, after checking that its codes fill its `<|AUDIO|>` runs exactly."""
        input_ids = np.asarray(row["input_ids"], dtype=np.int64)
        segments = [np.asarray(segment, dtype=np.int64) for segment in row["audio_codes"]]
        audio_positions = np.flatnonzero(input_ids == self.audio_token_id)
        eos_positions = np.flatnonzero(input_ids == self.audio_eos_token_id)
        self.check_alignment(row, segments, audio_positions, eos_positions)

        audio_codes = np.zeros((len(input_ids), self.num_codebooks), dtype=np.int64)
        audio_codes[audio_positions] = np.concatenate(segments)
        audio_codes[eos_positions] = self.codebook_eos_token_id
        if self.loss_on == TARGET_AUDIO:  # the target turn is the last segment, followed by the last <|audio_eos|>
            audio_positions = audio_positions[len(audio_positions) - len(segments[-1]) :]
            eos_positions = eos_positions[-1:]
        labelled = np.concatenate([audio_positions, eos_positions])
        labels = np.full_like(audio_codes, IGNORE_INDEX)
        labels[labelled] = audio_codes[labelled]
        depth_candidates = np.zeros(len(input_ids), dtype=bool)
        depth_candidates[audio_positions] = True
        attention_mask = np.asarray(row.get("attention_mask", np.ones_like(input_ids)), dtype=np.int64)
        return RowTensors(input_ids, attention_mask, audio_codes, labels, depth_candidates)

    def check_alignment(
        self, row: dict, segments: list, audio_positions: np.ndarray, eos_positions: np.ndarray
    ) -> None:
        where = f"sample {row.get('conversation_id', '?')} turn {row.get('turn_index', '?')}"
        if not segments:
            raise ValueError(f"{where}: no audio_codes (the target turn's codes are needed)")
        shapes = [segment.shape for segment in segments]
        if any(len(shape) != 2 or shape[1] != self.num_codebooks for shape in shapes):
            raise ValueError(
                f"{where}: audio_codes segments of shapes {shapes}, the model has {self.num_codebooks} codebooks"
            )
        runs = (
            np.split(audio_positions, np.flatnonzero(np.diff(audio_positions) != 1) + 1) if len(audio_positions) else []
        )
        run_lengths = [len(run) for run in runs]
        frames = [len(segment) for segment in segments]
        if run_lengths != frames or len(eos_positions) != len(segments):
            raise ValueError(
                f"{where}: input_ids have <|AUDIO|> runs of {run_lengths} tokens and {len(eos_positions)} "
                f"<|audio_eos|>, audio_codes have segments of {frames} frames"
            )

    def pad(self, values: np.ndarray, length: int, fill) -> np.ndarray:
        padding = [(0, 0)] * values.ndim
        padding[0] = (length - len(values), 0) if self.padding_side == "left" else (0, length - len(values))
        return np.pad(values, padding, constant_values=fill)

    def drop_depth_decoder_labels(self, labels: torch.Tensor, candidates: torch.Tensor) -> None:
        """The processor's -101 rule, drawn now: these frames keep only their codebook-0 (backbone) label."""
        if self.depth_decoder_labels_ratio >= 1.0:
            return
        frames = candidates.nonzero()
        drawn = frames[backbone_only_frames(len(frames), self.depth_decoder_labels_ratio)]
        labels[drawn[:, 0], drawn[:, 1], 1:] = IGNORE_INDEX


def codes_inputs_embeds(
    model: CsmForConditionalGeneration, input_ids: torch.Tensor, audio_codes: torch.Tensor
) -> torch.Tensor:
    """`inputs_embeds` as `CsmForConditionalGeneration.forward` builds them, from codes instead of audio.

    Text positions embed with `embed_text_tokens`; `<|AUDIO|>` and `<|audio_eos|>` positions embed their
    frame (`audio_codes`) with `backbone_model.embed_tokens`, which adds the codebook offsets.
    """
    config = model.config
    input_ids = plain_input_ids(input_ids)
    inputs_embeds = model.embed_text_tokens(input_ids)
    is_frame = (input_ids == config.audio_token_id) | (input_ids == config.audio_eos_token_id)
    frame_embeds = model.backbone_model.embed_tokens(audio_codes[is_frame][None])[0]
    inputs_embeds[is_frame] = frame_embeds.to(inputs_embeds.dtype)
    return inputs_embeds


def codes_model_inputs(model: CsmForConditionalGeneration, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`inputs_embeds`, `attention_mask` and `labels` for `model(**...)`, from a `CodesCollator` batch."""
    inputs = {"inputs_embeds": codes_inputs_embeds(model, batch["input_ids"], batch["audio_codes"])}
    inputs["attention_mask"] = batch["attention_mask"]
    if "labels" in batch:
        inputs["labels"] = batch["labels"]
    return inputs


class CsmForCodesTraining(CsmForConditionalGeneration):
    """`CsmForConditionalGeneration` whose `forward` also takes `audio_codes` (a `CodesCollator` batch).

    Same weights, config and checkpoint layout (load any CSM checkpoint with `from_pretrained`); its
    `save_pretrained` output loads back as `CsmForConditionalGeneration`. Without `audio_codes` it is the
    parent model (generation, the processor path).

    `accepts_loss_kwargs = False`: the `Trainer` would otherwise count `num_items_in_batch` over
    `labels[..., 1:]`, which for 3-D labels slices codebooks, and pass it to both losses; the model's own
    mean losses are used instead (the `Trainer` divides them by the gradient accumulation steps).
    """

    accepts_loss_kwargs = False

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        audio_codes: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ):
        if audio_codes is not None:
            kwargs["inputs_embeds"] = codes_inputs_embeds(self, input_ids, audio_codes)
            input_ids = None
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
