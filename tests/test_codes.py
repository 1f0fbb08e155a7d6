"""Codes format: turns encoded once to Mimi codes, codec-free samples, and training from them.

Real builder, real CsmProcessor, real datasets cache, a tiny real CSM whose own Mimi codec (saved with
`save_pretrained`) plays `--codec_model_id`.
"""

import datasets
import numpy as np
import pytest
import torch
from transformers import CsmForConditionalGeneration, Trainer, TrainingArguments

from csm_synthetic import load_turns
from csm_synthetic.audio import load_audio
from csm_synthetic.testing.demo import create_demo_corpus
from transforms.testing.offline import build_tiny_model, save_offline_processor
from transforms import CodesSamples, ContextualSamples, encode_turns, load_processor, map_samples, measure_turns
from transforms.core.codec import _pad_as_if_alone, check_codec, codes_agreement, encode_batch, encode_one, load_codec
from transforms.training.codes_training import (
    ALL_AUDIO,
    TARGET_AUDIO,
    CodesBatchError,
    CodesCollator,
    CodesInputIds,
    CsmForCodesTraining,
    codes_model_inputs,
)
from transforms.training.collator import CsmDataCollator
from transforms.core.csm import audio_token_count

MAX_HISTORY = 2
FRAME_SAMPLES = 1920  # Mimi: 24 kHz / 12.5 frames per second
METADATA = ("conversation_id", "language", "turn_index", "speaker", "num_context_turns", "num_tokens", "audio_seconds")


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory):
    return str(save_offline_processor(tmp_path_factory.mktemp("processor")))


@pytest.fixture(scope="module")
def processor(processor_dir):
    return load_processor(processor_dir)


@pytest.fixture(scope="module")
def model(processor):
    return build_tiny_model(processor)


@pytest.fixture(scope="module")
def codec_dir(model, tmp_path_factory):
    """The tiny model's own codec as a `--codec_model_id` folder."""
    folder = tmp_path_factory.mktemp("codec")
    model.codec_model.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def turns(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    create_demo_corpus(root, languages=("en",), conversations_per_language=2, turns=(4, 5), seconds=(0.3, 1.5))
    cache = str(tmp_path_factory.mktemp("cache"))
    return load_turns(root, cache_dir=cache, validation_fraction=0, test_fraction=0)["train"]


@pytest.fixture(scope="module")
def encoded(turns, codec_dir):
    return encode_turns(turns, codec_dir, devices="cpu", budget_seconds=2.0)  # several turns per codec call


@pytest.fixture(scope="module")
def codes_samples(encoded, processor_dir):
    return map_samples(encoded, CodesSamples(model_id=processor_dir, max_history=MAX_HISTORY))


@pytest.fixture(scope="module")
def processor_samples(turns, processor_dir):
    return map_samples(measure_turns(turns), ContextualSamples(model_id=processor_dir, max_history=MAX_HISTORY))


def audio_refs(turns) -> list[dict]:
    return turns.cast_column("audio", datasets.Audio(decode=False))["audio"]


def codes_of(row) -> np.ndarray:
    return np.concatenate([np.asarray(segment) for segment in row["audio_codes"]])


# --- encoding ------------------------------------------------------------------------------------


def test_batched_encoding_agrees_with_encoding_each_audio_alone(codec_dir, turns, processor):
    """One forward for all (padded batch, one quantizer call) against CSM's own per-segment encoding, same
    device: float rounding may flip a near tie, but under 0.1% of frames in codebook 0 and 1% in any."""
    codec = load_codec(codec_dir, "cpu")
    rng = np.random.default_rng(0)
    odd_lengths = [FRAME_SAMPLES * 5, 700, 24_000 + 1]  # whole frames, less than a frame, one sample over
    audios = [load_audio(audio["path"]) for audio in audio_refs(turns)]
    audios += [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in odd_lengths]
    audios += [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in rng.integers(24_000, 240_000, 16)]
    partial = [position for position, audio in enumerate(audios) if len(audio) % FRAME_SAMPLES]
    assert len(partial) > 15, "most audios must end in a partial frame: padding would change that frame"

    batched = encode_batch(codec, audios)
    alone = [encode_one(codec, audio) for audio in audios]
    for audio, codes in zip(audios, batched):
        assert codes.dtype == np.int16 and codes.shape == (audio_token_count(processor, len(audio)), 4)
    agreement = codes_agreement(batched, alone)
    assert agreement.frames > 1000  # enough for the shares to mean something
    assert agreement.codebook0 < 0.001 and agreement.any_codebook < 0.01, agreement
    last_frames = codes_agreement([batched[p][-1:] for p in partial], [alone[p][-1:] for p in partial])
    assert last_frames.any_codebook == 0.0  # the frame padding would reach is each audio's own


def test_plain_right_padding_would_change_the_last_frame_and_pad_as_if_alone_prevents_it(codec_dir):
    """Why `encode_batch` needs `_pad_as_if_alone`: padding reaches the last frame of a partial-frame audio."""
    codec = load_codec(codec_dir, "cpu")
    rng = np.random.default_rng(1)
    audios = [torch.from_numpy((0.1 * rng.standard_normal(n)).astype(np.float32)) for n in (24_000 + 1000, 72_000)]
    padded = torch.nn.utils.rnn.pad_sequence(audios, batch_first=True)[:, None]
    lengths = torch.tensor([len(audio) for audio in audios])
    with torch.no_grad():
        alone = codec.encoder(audios[0][None, None]).latents[0]  # (dim, frames)
        plain = codec.encoder(padded).latents[0, :, : alone.shape[-1]]
        with _pad_as_if_alone(codec, lengths):
            fixed = codec.encoder(padded).latents[0, :, : alone.shape[-1]]
    # equal up to float rounding (the batch computes in other shapes), except plain padding's last frame
    assert torch.allclose(plain[:, :-1], alone[:, :-1], atol=1e-4)
    assert not torch.allclose(plain[:, -1], alone[:, -1], atol=0.1)
    assert torch.allclose(fixed, alone, atol=1e-4)


def test_codes_equal_the_codes_the_models_forward_computes(model, processor, processor_samples, codes_samples):
    collate = CsmDataCollator.for_processor(processor)
    for processor_row, codes_row in zip(processor_samples, codes_samples):
        batch = collate([processor_row])
        with torch.no_grad():
            merged = model._merge_input_ids_with_input_values(
                batch["input_ids"], batch["input_values"], batch["input_values_cutoffs"], batch["labels"]
            )
        forward_codes = merged["labels"][batch["input_ids"] == model.config.audio_token_id]
        np.testing.assert_array_equal(forward_codes.numpy(), codes_of(codes_row))


def test_encoded_turns_carry_int16_codes_and_are_cached_whatever_the_device_or_batch_size(
    encoded, turns, codec_dir, processor
):
    assert encoded.num_rows == turns.num_rows
    assert encoded.features["audio_codes"].feature.feature.dtype == "int16"
    audios = [load_audio(audio["path"]) for audio in audio_refs(turns)]
    assert encoded["num_samples"] == [len(audio) for audio in audios]
    for row, audio in zip(encoded.with_format("numpy"), audios):
        assert row["audio_codes"].shape == (audio_token_count(processor, len(audio)), 4)
    again = encode_turns(turns, codec_dir, devices="auto", budget_seconds=0.5)
    assert again.cache_files == encoded.cache_files  # served from the cache: not encoded twice


def test_check_codec_refuses_a_codec_for_another_sampling_rate(codec_dir, processor):
    codec = load_codec(codec_dir, "cpu")
    check_codec(codec, processor, 24_000)
    with pytest.raises(ValueError, match="16000 Hz"):
        check_codec(codec, processor, 16_000)


# --- codes-format samples ------------------------------------------------------------------------


def test_codes_samples_have_the_processor_formats_windows_metadata_and_tokens(
    codes_samples, processor_samples, encoded
):
    assert codes_samples.num_rows == processor_samples.num_rows
    assert set(codes_samples.column_names) == set(METADATA) | {"input_ids", "attention_mask", "audio_codes"}
    turn_codes = {(row["conversation_id"], row["turn_index"]): row["audio_codes"] for row in encoded}
    for codes_row, processor_row in zip(codes_samples, processor_samples):
        for name in (*METADATA, "input_ids", "attention_mask"):
            assert codes_row[name] == processor_row[name], name
        segments = codes_row["audio_codes"]
        assert len(segments) == codes_row["num_context_turns"] + 1
        start = codes_row["turn_index"] - codes_row["num_context_turns"]
        for offset, segment in enumerate(segments):
            assert segment == turn_codes[(codes_row["conversation_id"], start + offset)]


# --- training from codes -------------------------------------------------------------------------


def codes_model_like(model) -> CsmForCodesTraining:
    twin = CsmForCodesTraining(model.config)
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.mark.parametrize("positions", [[3], [0, 4]], ids=["one_row", "padded_batch"])
def test_all_audio_loss_through_codes_equals_the_processor_paths(
    model, processor, processor_samples, codes_samples, positions
):
    processor_batch = CsmDataCollator.for_processor(processor)([processor_samples[i] for i in positions])
    collator = CodesCollator.for_model(model.config, pad_token_id=processor.tokenizer.pad_token_id, loss_on=ALL_AUDIO)
    codes_batch = collator([codes_samples[i] for i in positions])
    assert torch.equal(codes_batch["input_ids"], processor_batch["input_ids"])
    with torch.no_grad():
        expected = model(**processor_batch)
        through_helper = model(**codes_model_inputs(model, codes_batch))
        through_subclass = codes_model_like(model)(**codes_batch)
    for name in ("loss", "backbone_loss", "depth_decoder_loss"):
        for got in (through_helper, through_subclass):
            assert getattr(got, name).item() == pytest.approx(getattr(expected, name).item(), abs=1e-5), name


def test_target_only_labels_leave_context_audio_out_of_the_loss(model, processor, codes_samples):
    row = next(row for row in codes_samples if row["num_context_turns"] >= 2)
    config = model.config
    options = dict(pad_token_id=processor.tokenizer.pad_token_id)
    target = CodesCollator.for_model(config, loss_on=TARGET_AUDIO, **options)([row])
    every = CodesCollator.for_model(config, loss_on=ALL_AUDIO, **options)([row])
    input_ids = target["input_ids"][0]
    audio = torch.nonzero(input_ids == config.audio_token_id).flatten()
    eos = torch.nonzero(input_ids == config.audio_eos_token_id).flatten()
    target_frames = len(row["audio_codes"][-1])
    context_audio, target_audio = audio[:-target_frames], audio[-target_frames:]
    labels = target["labels"][0]

    assert labels[context_audio].eq(-100).all() and labels[eos[:-1]].eq(-100).all()
    assert torch.equal(labels[target_audio], torch.tensor(row["audio_codes"][-1]))
    assert labels[eos[-1]].eq(config.codebook_eos_token_id).all()
    text = torch.ones_like(input_ids, dtype=torch.bool)
    text[audio] = False
    text[eos] = False
    assert labels[text].eq(-100).all() and every["labels"][0][text].eq(-100).all()
    # both modes embed the same inputs; only the labels differ: all-audio labels every frame
    assert torch.equal(target["audio_codes"], every["audio_codes"])
    assert torch.equal(every["labels"][0][audio], torch.from_numpy(codes_of(row)).long())
    assert every["labels"][0][eos].eq(config.codebook_eos_token_id).all()


def test_depth_decoder_labels_ratio_is_drawn_anew_for_each_batch(model, processor, codes_samples):
    collator = CodesCollator.for_model(
        model.config, pad_token_id=processor.tokenizer.pad_token_id, depth_decoder_labels_ratio=0.5
    )
    rows = [codes_samples[i] for i in range(3)]
    first, second = collator(rows)["labels"], collator(rows)["labels"]
    full = CodesCollator.for_model(model.config, pad_token_id=processor.tokenizer.pad_token_id)(rows)["labels"]
    audio = collator(rows)["input_ids"] == model.config.audio_token_id
    for labels in (first, second):
        backbone_only = audio & labels[..., 1:].eq(-100).all(-1)
        assert backbone_only.sum() == int(audio.sum() * 0.5)
        assert torch.equal(labels[..., 0], full[..., 0])  # codebook 0 always keeps its label
    assert not torch.equal(first, second)


@pytest.mark.parametrize(
    "damage",
    [
        lambda segment: segment[:-1],  # a frame short of the <|AUDIO|> run
        lambda segment: [frame[:-1] for frame in segment],  # a codebook short of the model's
    ],
    ids=["frames", "codebooks"],
)
def test_collator_names_the_row_whose_codes_do_not_fit_its_tokens_or_the_model(model, processor, codes_samples, damage):
    row = dict(codes_samples[0])
    row["audio_codes"] = [damage(segment) for segment in row["audio_codes"]]
    collator = CodesCollator.for_model(model.config, pad_token_id=processor.tokenizer.pad_token_id)
    with pytest.raises(ValueError, match=f"{row['conversation_id']} turn {row['turn_index']}"):
        collator([row])


def test_trainer_trains_from_codes_without_running_the_codec(model, processor, codes_samples, tmp_path):
    codes_model = codes_model_like(model)

    def refuse(*args):
        raise AssertionError("the codec ran during training")

    codes_model.codec_model.encoder.register_forward_pre_hook(refuse)
    before = [parameter.detach().clone() for parameter in codes_model.backbone_model.parameters()]
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
    )  # remove_unused_columns stays True: the Trainer keeps audio_codes, a forward argument
    collator = CodesCollator.for_model(
        model.config,
        pad_token_id=processor.tokenizer.pad_token_id,
        loss_on=TARGET_AUDIO,
        depth_decoder_labels_ratio=0.5,
    )
    trainer = Trainer(model=codes_model, args=arguments, train_dataset=codes_samples, data_collator=collator)
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    after = list(codes_model.backbone_model.parameters())
    assert any(not torch.equal(old, new) for old, new in zip(before, after))


# --- a model that cannot consume codes fails loudly -------------------------------------------------


def codes_collator(model, processor) -> CodesCollator:
    return CodesCollator.for_model(model.config, pad_token_id=processor.tokenizer.pad_token_id)


def test_the_stock_model_refuses_a_codes_batch_instead_of_embedding_audio_as_text(model, processor, codes_samples):
    """Without the guard the stock forward swallows `audio_codes` in **kwargs and returns a finite loss."""
    batch = codes_collator(model, processor)([codes_samples[i] for i in range(2)])
    with pytest.raises(CodesBatchError, match="CsmForCodesTraining") as refused:
        model(**batch)
    assert "codes_model_inputs" in str(refused.value)
    with torch.no_grad():  # the right models take the very same batch
        expected = model(**codes_model_inputs(model, batch)).loss
        assert codes_model_like(model)(**batch).loss.item() == pytest.approx(expected.item(), abs=1e-6)


class CodesRows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


def test_the_guard_survives_devices_and_dataloader_workers(model, processor, codes_samples):
    collator = codes_collator(model, processor)
    rows = [codes_samples[i] for i in range(4)]
    loader = torch.utils.data.DataLoader(CodesRows(rows), batch_size=2, collate_fn=collator, num_workers=1)
    batches = list(loader)  # pickled from a worker process back to this one
    for batch in batches:
        for ids in (batch["input_ids"], batch["input_ids"].to("cpu"), batch["input_ids"].clone()):
            assert isinstance(ids, CodesInputIds)
    with pytest.raises(CodesBatchError):
        model(**{name: tensor.to("cpu") for name, tensor in batches[0].items()})
    with torch.no_grad():
        in_process = codes_model_like(model)(**collator(rows[:2])).loss
        from_worker = codes_model_like(model)(**batches[0]).loss
    assert from_worker.item() == in_process.item()


@pytest.mark.parametrize("remove_unused_columns", [True, False])
def test_the_trainer_refuses_to_train_the_stock_model_on_codes_rows(
    model, processor, codes_samples, tmp_path, remove_unused_columns
):
    """True: the Trainer drops `audio_codes` (the stock forward does not name it) and the collator says so;
    False: the batch reaches the stock forward, which cannot embed its ids."""
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_train_batch_size=2,
        remove_unused_columns=remove_unused_columns,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = Trainer(
        model=model, args=arguments, train_dataset=codes_samples, data_collator=codes_collator(model, processor)
    )
    expected = "remove_unused_columns=True" if remove_unused_columns else "embeds input_ids without them"
    with pytest.raises(CodesBatchError, match=expected) as refused:
        trainer.train()
    assert "CsmForCodesTraining" in str(refused.value)


def test_a_codes_model_checkpoint_loads_back_as_a_plain_csm(model, tmp_path):
    codes_model_like(model).save_pretrained(str(tmp_path / "checkpoint"))
    loaded = CsmForConditionalGeneration.from_pretrained(str(tmp_path / "checkpoint"))
    expected = model.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())
