"""Offline CSM stand-ins: saved processor reloads and renders conversations like csm-1b, tiny model trains."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, CsmProcessor

from transforms.testing.offline import (
    AUDIO_EOS_TOKEN,
    AUDIO_TOKEN,
    BOS_TOKEN,
    CSM_CHAT_TEMPLATE,
    EOS_TOKEN,
    SAMPLING_RATE,
    build_offline_processor,
    build_offline_tokenizer,
    build_tiny_codec,
    build_tiny_model,
    save_offline_processor,
    tiny_model_config,
)

ENCODED_LENGTH_KWARGS = CsmProcessor.audio_kwargs["encoded_length_kwargs"]


def n_frames(num_samples: int) -> int:
    return CsmProcessor._get_encoded_length(num_samples, **ENCODED_LENGTH_KWARGS)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    return save_offline_processor(tmp_path_factory.mktemp("csm_offline_processor"))


@pytest.fixture(scope="module")
def processor(saved_dir):
    return CsmProcessor.from_pretrained(str(saved_dir))


@pytest.fixture(scope="module")
def audios():
    rng = np.random.default_rng(0)
    one_s = (0.1 * rng.standard_normal(SAMPLING_RATE)).astype(np.float32)
    one_and_half_s = (0.1 * rng.standard_normal(SAMPLING_RATE * 3 // 2)).astype(np.float32)
    return one_s, one_and_half_s


@pytest.fixture(scope="module")
def conversation(audios):
    return [
        {"role": "0", "content": [{"type": "text", "text": "Guten Tag, wie geht's?"}, {"type": "audio", "path": audios[0]}]},
        {"role": "1", "content": [{"type": "text", "text": "Très bien, merci !"}, {"type": "audio", "path": audios[1]}]},
    ]


@pytest.fixture(scope="module")
def inputs(processor, conversation):
    return processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, processor_kwargs={"output_labels": True}
    )


def test_saved_processor_reloads_offline(saved_dir, no_network):
    for loaded in (CsmProcessor.from_pretrained(str(saved_dir)), AutoProcessor.from_pretrained(str(saved_dir))):
        assert isinstance(loaded, CsmProcessor)
        assert loaded.chat_template == CSM_CHAT_TEMPLATE
        assert loaded.feature_extractor.sampling_rate == SAMPLING_RATE
        assert loaded.feature_extractor.feature_size == 1
        tok = loaded.tokenizer
        ids = [tok.convert_tokens_to_ids(t) for t in (BOS_TOKEN, EOS_TOKEN, AUDIO_TOKEN, AUDIO_EOS_TOKEN)]
        # same layout as csm-1b (128000..128003): the four specials right after the BPE vocabulary
        assert ids == list(range(len(tok) - 4, len(tok)))
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS_TOKEN, EOS_TOKEN, EOS_TOKEN)
        assert (loaded.audio_token_id, loaded.audio_eos_token_id) == (ids[2], ids[3])
        assert 300 <= len(tok) <= 1100


def test_processor_is_deterministic(processor):
    a, b = build_offline_tokenizer(), build_offline_tokenizer()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert processor.tokenizer.backend_tokenizer.to_str() == build_offline_processor().tokenizer.backend_tokenizer.to_str()


def test_encoded_length_rule():
    assert n_frames(SAMPLING_RATE) == 13
    assert n_frames(SAMPLING_RATE * 3 // 2) == 19
    assert n_frames(10 * SAMPLING_RATE) == 125


def test_chat_template_renders_csm_structure(processor, conversation, inputs, audios):
    prompt = processor.apply_chat_template(conversation)
    assert prompt == (
        "<|begin_of_text|>[0]Guten Tag, wie geht's?<|end_of_text|><|AUDIO|><|audio_eos|>"
        "<|begin_of_text|>[1]Très bien, merci !<|end_of_text|><|AUDIO|><|audio_eos|>"
    )

    tok = processor.tokenizer
    bos, eos, audio, audio_eos = (tok.convert_tokens_to_ids(t) for t in (BOS_TOKEN, EOS_TOKEN, AUDIO_TOKEN, AUDIO_EOS_TOKEN))
    expected = []
    for message, wav in zip(conversation, audios):
        text_ids = tok.encode(f"[{message['role']}]{message['content'][0]['text']}", add_special_tokens=False)
        expected += [bos, *text_ids, eos] + [audio] * n_frames(len(wav)) + [audio_eos]

    assert set(inputs) == {"input_ids", "attention_mask", "labels", "input_values", "input_values_cutoffs"}
    input_ids = inputs["input_ids"]
    assert input_ids.shape == (1, len(expected))
    assert input_ids[0].tolist() == expected
    assert (input_ids == audio).sum().item() == 13 + 19
    assert (input_ids == audio_eos).sum().item() == 2
    assert inputs["attention_mask"].tolist() == [[1] * len(expected)]

    # labels: the token id on <|AUDIO|>/<|audio_eos|> positions (every turn, context included), -100 elsewhere
    labels = inputs["labels"]
    is_audio = (input_ids == audio) | (input_ids == audio_eos)
    assert torch.equal(labels != -100, is_audio)
    assert torch.equal(labels[is_audio], input_ids[is_audio])

    # all audio of the sample, concatenated, float32, shape (batch, channels=1, samples); cumulative cutoffs
    total = sum(len(w) for w in audios)
    assert inputs["input_values"].shape == (1, 1, total)
    assert inputs["input_values"].dtype == torch.float32
    assert np.array_equal(inputs["input_values"][0, 0].numpy(), np.concatenate(audios))
    assert inputs["input_values_cutoffs"].tolist() == [[len(audios[0]), total]]


def test_tiny_config_matches_processor(processor):
    config = tiny_model_config(processor)
    tok = processor.tokenizer
    assert config.text_vocab_size == len(tok)
    assert config.audio_token_id == processor.audio_token_id
    assert config.audio_eos_token_id == processor.audio_eos_token_id
    assert config.bos_token_id == tok.bos_token_id
    assert config.num_codebooks == config.codec_config.num_quantizers == 4
    assert config.vocab_size == config.codec_config.codebook_size + 3 == 67
    assert 0 <= config.codebook_eos_token_id < config.vocab_size
    assert config.codebook_pad_token_id == config.vocab_size - 1
    assert config.hidden_size == 64 and config.num_hidden_layers == 2


def test_tiny_codec_frames_follow_processor_rule():
    codec = build_tiny_codec()
    rng = np.random.default_rng(1)
    for num_samples in (1, 1920, 1921, SAMPLING_RATE, SAMPLING_RATE * 3 // 2):
        wav = torch.from_numpy((0.1 * rng.standard_normal(num_samples)).astype(np.float32))[None, None]
        with torch.no_grad():
            codes = codec.encode(wav).audio_codes
        assert codes.shape == (1, 4, n_frames(num_samples))
        assert int(codes.min()) >= 0 and int(codes.max()) < 64
    # random centroids: codes depend on the audio (a zero-initialised Mimi codebook would give all zeros)
    assert len(torch.unique(codes)) > 8


def test_tiny_model_is_deterministic(processor):
    a, b, c = build_tiny_model(processor, seed=0), build_tiny_model(processor, seed=0), build_tiny_model(processor, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_tiny_model_trains_on_processor_output(processor, inputs):
    model = build_tiny_model(processor, seed=0)
    model.train()
    out = model(**inputs)
    assert torch.isfinite(out.loss)
    assert torch.isfinite(out.backbone_loss) and torch.isfinite(out.depth_decoder_loss)
    assert out.logits.shape == (*inputs["input_ids"].shape, model.config.vocab_size)
    out.loss.backward()

    backbone = dict(model.backbone_model.named_parameters())
    assert backbone
    for name, param in backbone.items():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in backbone.values())
    assert backbone["layers.0.self_attn.q_proj.weight"].grad.abs().sum() > 0
    assert model.lm_head.weight.grad.abs().sum() > 0
    assert model.depth_decoder.codebooks_head.weight.grad.abs().sum() > 0
    # the codec runs under no_grad inside forward: it never receives gradients
    assert all(p.grad is None for p in model.codec_model.parameters())


@pytest.mark.parametrize(
    "text",
    [
        "Übermorgen fahren wir mit dem Zug nach München – schön, oder?",
        "Der Fußgänger überquert die Straße; Grüße aus Köln!",
        "L'été dernier, « Noël » à l'hôpital : où est le garçon ? Ça va très bien !",
        "Ce cœur naïf connaît l'œuvre de Zoë.",
        "¿Dónde está el niño? ¡Mañana!",
        "日本語 😀 and ασπίδα",
    ],
)
def test_tokenizer_round_trips_text(processor, text):
    tok = processor.tokenizer
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    with_specials = tok.encode(text)  # add_special_tokens=True wraps like csm-1b: bos ... eos
    assert with_specials == [tok.bos_token_id, *ids, tok.eos_token_id]
    assert tok.decode(with_specials, skip_special_tokens=True) == text
