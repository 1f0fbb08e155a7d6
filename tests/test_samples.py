"""The contextual sample transform: real builder, real CsmProcessor, real datasets cache, tiny real CSM."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from datasets.fingerprint import Hasher
from transformers import Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from csm_synthetic import load_turns, read_corpus
from csm_synthetic.audio import load_audio
from csm_synthetic.testing.demo import create_demo_corpus
from transforms.testing.offline import build_tiny_model
from transforms import ContextualSamples, build_samples, group_conversations, load_processor, measure_turns, plan_conversations
from transforms.training.collator import CsmDataCollator

MAX_HISTORY = 2
PROCESSOR_COLUMNS = ("input_ids", "attention_mask", "labels", "input_values", "input_values_cutoffs")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    create_demo_corpus(root, languages=("en", "de"), conversations_per_language=2, turns=(4, 6), seconds=(0.5, 1.5))
    return root


@pytest.fixture(scope="module")
def conversations(corpus_dir, tmp_path_factory):
    turns = load_turns(corpus_dir, cache_dir=str(tmp_path_factory.mktemp("cache")), validation_fraction=0, test_fraction=0)
    return group_conversations(measure_turns(turns["train"]))


def map_samples(conversations, transform):
    return build_samples(plan_conversations(conversations, transform.plan), transform)


@pytest.fixture(scope="module")
def samples(conversations, processor_dir):
    return map_samples(conversations, ContextualSamples(model_id=processor_dir, max_history=MAX_HISTORY))


def reference_encoding(processor, turns):
    """What the processor makes of these turns when asked directly through its chat template."""
    conversation = [
        {
            "role": str(turn.speaker),
            "content": [{"type": "text", "text": turn.text}, {"type": "audio", "path": load_audio(turn.audio_path)}],
        }
        for turn in turns
    ]
    return processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, processor_kwargs={"output_labels": True}
    )


def test_group_conversations_gives_one_row_per_conversation_with_turns_in_order(conversations, corpus_dir):
    corpus = read_corpus(corpus_dir)
    assert conversations["conversation_id"] == [c.conversation_id for c in corpus.conversations]
    for row, conversation in zip(conversations, corpus.conversations):
        assert row["turn_index"] == list(range(len(conversation.turns)))
        assert row["text"] == [turn.text for turn in conversation.turns]


def test_every_turn_gets_a_sample_equal_to_the_processors_own_encoding(samples, corpus_dir, processor_dir):
    """Every column the processor returns for the window, with only the batch dimension removed: values,
    dtype and shape (`input_values` `(1, samples)`), read back from the stored rows."""
    processor = load_processor(processor_dir)
    corpus = read_corpus(corpus_dir)
    by_id = {c.conversation_id: c for c in corpus.conversations}
    assert len(samples) == sum(len(c.turns) for c in corpus.conversations)
    for row in samples.with_format("numpy"):
        turns = by_id[str(row["conversation_id"])].turns
        target = int(row["turn_index"])
        start = max(0, target - MAX_HISTORY)
        assert row["num_context_turns"] == target - start
        assert row["speaker"] == turns[target].speaker
        expected = reference_encoding(processor, turns[start : target + 1])
        assert set(expected) == set(PROCESSOR_COLUMNS)
        for name, tensor in expected.items():
            want = tensor[0].numpy()
            assert (row[name].dtype, row[name].shape) == (want.dtype, want.shape), name
            np.testing.assert_array_equal(row[name], want, err_msg=name)
        assert row["num_tokens"] == len(row["input_ids"])
        assert row["audio_seconds"] == pytest.approx(row["input_values"].shape[-1] / 24000)


def test_a_row_with_a_batch_dimension_added_runs_the_stock_model(samples, processor_dir):
    """The habit of the transformers docs: `model(**{k: torch.tensor(v)[None] ...})` on a stored row."""
    model = build_tiny_model(load_processor(processor_dir))
    row = samples[1]  # python lists, as a plain `load_dataset` gives them
    loss = model(**{name: torch.tensor(row[name])[None] for name in PROCESSOR_COLUMNS}).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone_model.parameters())


def test_transform_hashes_stably_so_datasets_caches_the_map(conversations, samples, processor_dir):
    transform = ContextualSamples(model_id=processor_dir, max_history=MAX_HISTORY)
    in_this_process = Hasher.hash(transform)
    code = (
        "from datasets.fingerprint import Hasher; from transforms import ContextualSamples; "
        f"print(Hasher.hash(ContextualSamples(model_id={processor_dir!r}, max_history={MAX_HISTORY})))"
    )
    in_another_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert in_another_process.stdout.strip() == in_this_process
    assert Hasher.hash(ContextualSamples(model_id=processor_dir, max_history=MAX_HISTORY + 1)) != in_this_process
    again = map_samples(conversations, transform)
    assert again.cache_files == samples.cache_files  # served from the cache, not recomputed


def test_depth_decoder_labels_ratio_draws_minus_101_reproducibly(conversations, processor_dir):
    processor = load_processor(processor_dir)

    def rows(seed):
        transform = ContextualSamples(model_id=processor_dir, max_history=1, depth_decoder_labels_ratio=0.5, seed=seed)
        return map_samples(conversations.select([0]), transform).with_format("numpy")

    first, second, other_seed = rows(0), rows(0), rows(1)
    for row in first:
        frames = row["input_ids"] == processor.audio_token_id
        assert np.sum(row["labels"] == -101) == int(np.sum(frames) * 0.5)  # the processor's count
        assert np.all(frames[row["labels"] == -101])  # only on audio frames
    assert all(np.array_equal(a, b) for a, b in zip(first["labels"], second["labels"]))
    assert not all(np.array_equal(a, b) for a, b in zip(first["labels"], other_seed["labels"]))


def test_a_small_budget_drops_oldest_context_and_skips_turns_that_cannot_fit(conversations, processor_dir):
    processor = load_processor(processor_dir)
    generous = map_samples(conversations.select([0]), ContextualSamples(model_id=processor_dir))
    longest_turn_alone = max(
        n for n, context in zip(generous["num_tokens"], generous["num_context_turns"]) if context == 0
    )
    budget = longest_turn_alone - 1  # the longest turn can no longer fit, even alone
    tight_transform = ContextualSamples(model_id=processor_dir, max_tokens=budget)
    tight = map_samples(conversations.select([0]), tight_transform)
    assert all(n <= budget for n in tight["num_tokens"])
    skipped = set(generous["turn_index"]) - set(tight["turn_index"])
    assert skipped, "the budget should skip the longest turn"
    (plan,) = plan_conversations(conversations.select([0]), tight_transform.plan)["skipped"]
    assert {skip["turn_index"] for skip in plan} == skipped  # the plan says which turns got no sample, and why
    assert all(skip["reason"] == "too_many_tokens" and f"max_tokens {budget}" in skip["detail"] for skip in plan)
    for target, context in zip(tight["turn_index"], tight["num_context_turns"]):
        assert not any(target - context <= s < target for s in skipped), "a window reached over a skipped turn"
    assert processor is not None


def test_prepared_rows_train_a_tiny_csm_through_the_collator(samples, processor_dir):
    processor = load_processor(processor_dir)
    model = build_tiny_model(processor)
    collator = CsmDataCollator.for_processor(processor)
    batch = collator([samples[i] for i in range(3)])
    assert batch["input_values"].dim() == 3 and batch["labels"].shape == batch["input_ids"].shape
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.backbone_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_collating_one_row_gives_the_processors_tensors(samples, corpus_dir, processor_dir):
    processor = load_processor(processor_dir)
    row = samples[3]
    turns = {c.conversation_id: c for c in read_corpus(corpus_dir).conversations}[row["conversation_id"]].turns
    start = row["turn_index"] - row["num_context_turns"]
    expected = reference_encoding(processor, turns[start : row["turn_index"] + 1])
    collated = CsmDataCollator.for_processor(processor)([row])
    for name, tensor in collated.items():
        assert torch.equal(tensor, expected[name].to(tensor.dtype)), name


def test_collator_pads_like_the_processor_batch(samples, processor_dir):
    processor = load_processor(processor_dir)
    rows = [samples[0], samples[4]]
    batch = CsmDataCollator.for_processor(processor)(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    for position, row in enumerate(rows):
        pad = longest - len(row["input_ids"])
        assert batch["input_ids"][position, :pad].eq(processor.tokenizer.pad_token_id).all()
        assert batch["attention_mask"][position, :pad].eq(0).all()
        assert batch["labels"][position, :pad].eq(-100).all()
        assert batch["input_ids"][position, pad:].tolist() == list(row["input_ids"])
        cutoffs = batch["input_values_cutoffs"][position]
        assert cutoffs[: len(row["input_values_cutoffs"])].tolist() == list(row["input_values_cutoffs"])
        assert cutoffs[len(row["input_values_cutoffs"]) :].eq(-1).all()


def one_step_arguments(folder, **options) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(folder), max_steps=2, report_to=[], save_strategy="no", use_cpu=True, logging_steps=1, **options
    )


def test_trainer_takes_prepared_samples_with_the_collator(samples, processor_dir, tmp_path):
    processor = load_processor(processor_dir)
    model = build_tiny_model(processor)
    model.accepts_loss_kwargs = False  # else the Trainer's num_items_in_batch rescales the depth decoder loss
    arguments = one_step_arguments(tmp_path / "run", per_device_train_batch_size=2, remove_unused_columns=False)
    trainer = Trainer(model=model, args=arguments, train_dataset=samples, data_collator=CsmDataCollator.for_processor(processor))
    result = trainer.train()
    assert np.isfinite(result.training_loss)


@pytest.mark.parametrize("data_format", [None, "numpy"], ids=["lists", "numpy"])
def test_trainer_without_a_collator_trains_the_stock_model_at_batch_size_one(samples, processor_dir, tmp_path, data_format):
    """The habit of the transformers docs and the Unsloth notebook: no collator, batch size 1, the metadata
    columns dropped by `remove_unused_columns=True` (the default), the stock model."""
    model = build_tiny_model(load_processor(processor_dir))
    model.accepts_loss_kwargs = False
    before = [parameter.detach().clone() for parameter in model.backbone_model.parameters()]
    arguments = one_step_arguments(tmp_path / "run", per_device_train_batch_size=1)
    trainer = Trainer(model=model, args=arguments, train_dataset=samples.with_format(data_format))
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert any(not torch.equal(old, new) for old, new in zip(before, model.backbone_model.parameters()))


@pytest.mark.parametrize("remove_unused_columns", [False, True])
def test_length_grouped_batching_reads_num_tokens_when_the_trainer_keeps_the_columns(
    samples, processor_dir, tmp_path, remove_unused_columns
):
    """transformers 5.23's names; `remove_unused_columns=True` drops `num_tokens` before the sampler is built,
    which then reads every row to measure it (a list), so the working combination keeps the columns and lets
    the collator drop the metadata."""
    processor = load_processor(processor_dir)
    model = build_tiny_model(processor)
    arguments = one_step_arguments(
        tmp_path / "run",
        per_device_train_batch_size=2,
        train_sampling_strategy="group_by_length",
        length_column_name="num_tokens",
        remove_unused_columns=remove_unused_columns,
    )
    data = samples.with_format("numpy")
    trainer = Trainer(model=model, args=arguments, train_dataset=data, data_collator=CsmDataCollator.for_processor(processor))
    sampler = trainer.get_train_dataloader().batch_sampler.sampler
    assert isinstance(sampler, LengthGroupedSampler)
    assert list(sampler.lengths) == list(samples["num_tokens"])
    assert isinstance(sampler.lengths, list) == remove_unused_columns  # measured row by row, or the column
    # training through this combination: the card's snippet (tests/test_hub.py)
