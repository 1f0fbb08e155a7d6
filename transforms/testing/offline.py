"""Offline stand-ins for Sesame CSM (``sesame/csm-1b``): processor, tiny model, tiny codec.

Nothing here touches the network. The processor is a real :class:`transformers.CsmProcessor` whose
tokenizer is a small byte-level BPE trained on the spot (so any UTF-8 text tokenizes and round-trips),
carrying the four special tokens of the real checkpoint and its real chat template. The tiny model is a
randomly initialised :class:`transformers.CsmForConditionalGeneration` (backbone hidden 64, 2 layers,
4 codebooks of 64 codes, a tiny Mimi codec) whose token ids agree with that processor.

Layout mirrors the real checkpoint:

* real: Llama-3.2 BPE of 128 000 ids, then ``<|begin_of_text|>`` 128000, ``<|end_of_text|>`` 128001,
  ``<|AUDIO|>`` 128002, ``<|audio_eos|>`` 128003 (text_vocab_size 128 256);
* here: BPE of ``n`` ids, then the same four tokens at ``n, n+1, n+2, n+3`` (text_vocab_size ``n + 4``).

The Mimi stand-in keeps the real strides and kernel sizes (1920 samples a frame at 24 kHz, 12.5 frames
per second), so ``CsmProcessor._get_encoded_length`` gives exactly the number of frames it encodes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CsmConfig,
    CsmDepthDecoderConfig,
    CsmForConditionalGeneration,
    CsmProcessor,
    EncodecFeatureExtractor,
    MimiConfig,
    MimiModel,
    PreTrainedTokenizerFast,
)

__all__ = [
    "AUDIO_EOS_TOKEN",
    "AUDIO_TOKEN",
    "BOS_TOKEN",
    "CSM_CHAT_TEMPLATE",
    "EOS_TOKEN",
    "SAMPLING_RATE",
    "build_offline_processor",
    "build_offline_tokenizer",
    "build_tiny_codec",
    "build_tiny_model",
    "randomize_codebooks",
    "save_offline_processor",
    "tiny_codec_config",
    "tiny_model_config",
]

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"  # also the pad token, as in the real checkpoint
AUDIO_TOKEN = "<|AUDIO|>"
AUDIO_EOS_TOKEN = "<|audio_eos|>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, AUDIO_TOKEN, AUDIO_EOS_TOKEN)

SAMPLING_RATE = 24_000
BPE_VOCAB_SIZE = 640  # target size of the byte-level BPE before the 4 special tokens are appended

# The chat template of sesame/csm-1b, verbatim from `write_processor` in transformers'
# src/transformers/models/csm/convert_csm.py (huggingface/transformers@ca630e6a692b7d235871b41989ea9d68b4f07f4c),
# the script that wrote the checkpoint's processor; tests/models/csm/test_processing_csm.py uses the same string.
CSM_CHAT_TEMPLATE = (
    "\n{%- for message in messages %}\n    {#-- Validate role is a stringified integer --#}\n"
    "    {%- if not message['role'] is string or not message['role'].isdigit() %}\n"
    "        {{- raise_exception(\"The role must be an integer or a stringified integer (e.g. '0') designating the speaker id\") }}\n"
    "    {%- endif %}\n\n    {#-- Validate content is a list --#}\n    {%- set content = message['content'] %}\n"
    "    {%- if content is not iterable or content is string %}\n"
    "        {{- raise_exception(\"The content must be a list\") }}\n    {%- endif %}\n\n"
    "    {#-- Collect content types --#}\n    {%- set content_types = content | map(attribute='type') | list %}\n"
    "    {%- set is_last = loop.last %}\n\n    {#-- Last message validation --#}\n    {%- if is_last %}\n"
    "        {%- if 'text' not in content_types %}\n"
    "            {{- raise_exception(\"The last message must include one item of type 'text'\") }}\n"
    "        {%- elif (content_types | select('equalto', 'text') | list | length > 1) or "
    "(content_types | select('equalto', 'audio') | list | length > 1) %}\n"
    "            {{- raise_exception(\"At most two items are allowed in the last message: one 'text' and one 'audio'\") }}\n"
    "        {%- endif %}\n\n    {#-- All other messages validation --#}\n    {%- else %}\n"
    "        {%- if content_types | select('equalto', 'text') | list | length != 1\n"
    "              or content_types | select('equalto', 'audio') | list | length != 1 %}\n"
    "            {{- raise_exception(\"Each message (except the last) must contain exactly one 'text' and one 'audio' item\") }}\n"
    "        {%- elif content_types | reject('in', ['text', 'audio']) | list | length > 0 %}\n"
    "            {{- raise_exception(\"Only 'text' and 'audio' types are allowed in content\") }}\n"
    "        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n\n{%- for message in messages %}\n"
    "    {{- bos_token }}\n    {{- '[' + message['role'] + ']' }}\n    {{- message['content'][0]['text'] }}\n"
    "    {{- eos_token }}\n    {%- if message['content']|length > 1 %}\n"
    "        {{- '<|AUDIO|><|audio_eos|>' }}\n    {%- endif %}\n{%- endfor %}\n"
)

# Small built-in multilingual corpus: the BPE learns a few hundred merges from it; the byte-level
# alphabet (all 256 bytes) guarantees that any other UTF-8 text still tokenizes and decodes exactly.
_CORPUS = (
    # English
    "The past is just a story we tell ourselves.",
    "Hey, how are you doing today? Pretty good, pretty good.",
    "I'm great, so happy to be speaking to you. Me too, this is some cool stuff, huh?",
    "Yeah, I've been reading more about speech generation, and it really seems like context is important.",
    "Could you pass me the salt, please? Of course, here you go.",
    "We walked along the river until the sun went down behind the hills.",
    "Numbers like 1, 2, 3, 42 and 2025 appear in dates, prices ($9.99) and times (10:30).",
    "She said: \"Don't worry - it'll be fine!\" and laughed.",
    # German
    "Guten Morgen! Wie geht es Ihnen heute? Danke, mir geht es gut.",
    "Die Straße ist nass, weil es die ganze Nacht geregnet hat.",
    "Können Sie mir bitte sagen, wo der Bahnhof ist? Gehen Sie geradeaus und dann links.",
    "Übermorgen fahren wir mit dem Zug nach München und besuchen das Museum.",
    "Ich hätte gern ein Stück Käsekuchen und eine Tasse Kaffee, schön heiß.",
    "Die Mädchen spielen im Garten, während die Jungen Fußball üben.",
    # French
    "Bonjour ! Comment ça va aujourd'hui ? Très bien, merci beaucoup.",
    "L'été dernier, nous sommes allés à la mer avec nos élèves.",
    "Il a dit : « Je préfère le café au lait », puis il est parti.",
    "Où est la bibliothèque ? Elle se trouve près de l'hôpital, à côté du théâtre.",
    "Noël approche et les enfants écrivent déjà leurs lettres au Père Noël.",
    "Ce garçon est très sûr de lui ; il connaît déjà la réponse.",
    # Spanish
    "¡Hola! ¿Cómo estás? Muy bien, gracias, ¿y tú?",
    "El niño comió una manzana mientras leía un libro en el jardín.",
    "Mañana vamos a la montaña si no llueve; después cenaremos juntos.",
    "¿Dónde está la estación de autobuses? Está allí, detrás del edificio azul.",
    "La canción que cantó anoche fue preciosa, pero un poco triste.",
    "Según el pronóstico, habrá sol durante toda la semana en Málaga.",
)


def build_offline_tokenizer(vocab_size: int = BPE_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE on the built-in corpus and wrap it like the csm-1b tokenizer.

    The four special tokens are appended after the BPE vocabulary in the real order
    (``<|begin_of_text|>``, ``<|end_of_text|>``, ``<|AUDIO|>``, ``<|audio_eos|>``), the pad token is
    ``<|end_of_text|>``, and ``add_special_tokens=True`` wraps a text as ``<|begin_of_text|> ... <|end_of_text|>``
    (the post-processor csm-1b's conversion script installs). Deterministic: identical on every call.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS), trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    bos_id, eos_id = tok.token_to_id(BOS_TOKEN), tok.token_to_id(EOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN}:0 $A:0 {EOS_TOKEN}:0",
        pair=f"{BOS_TOKEN}:0 $A:0 {EOS_TOKEN}:0 {BOS_TOKEN}:1 $B:1 {EOS_TOKEN}:1",
        special_tokens=[(BOS_TOKEN, bos_id), (EOS_TOKEN, eos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        extra_special_tokens=[AUDIO_TOKEN, AUDIO_EOS_TOKEN],
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )


def build_offline_processor() -> CsmProcessor:
    """A real ``CsmProcessor``: offline BPE tokenizer + 24 kHz ``EncodecFeatureExtractor`` + csm-1b chat template."""
    feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0)
    return CsmProcessor(
        feature_extractor=feature_extractor,
        tokenizer=build_offline_tokenizer(),
        chat_template=CSM_CHAT_TEMPLATE,
    )


def save_offline_processor(output_dir: str | Path) -> Path:
    """Build the offline processor and ``save_pretrained`` it to ``output_dir``; returns the directory.

    ``CsmProcessor.from_pretrained(output_dir)`` and ``AutoProcessor.from_pretrained(output_dir)`` load it
    without network access.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    build_offline_processor().save_pretrained(str(output_dir))
    return output_dir


def tiny_codec_config(num_codebooks: int = 4, codebook_size: int = 64) -> MimiConfig:
    """A tiny Mimi config with the real strides/kernels (12.5 frames/s at 24 kHz) and ``num_codebooks`` codebooks."""
    return MimiConfig(
        sampling_rate=SAMPLING_RATE,
        hidden_size=32,
        num_filters=4,
        upsample_groups=32,
        codebook_size=codebook_size,
        codebook_dim=16,
        vector_quantization_hidden_dimension=16,
        num_quantizers=num_codebooks,
        num_semantic_quantizers=1,
        num_hidden_layers=1,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=4,
    )


def tiny_model_config(
    processor: CsmProcessor,
    num_codebooks: int = 4,
    codebook_size: int = 64,
    hidden_size: int = 64,
    num_layers: int = 2,
    codec_config: MimiConfig | None = None,
) -> CsmConfig:
    """A small ``CsmConfig`` whose token ids agree with ``processor``'s tokenizer.

    By default everything is tiny; ``codec_config`` (e.g. a real-size ``MimiConfig()``, whose codebooks then
    set ``num_codebooks`` and ``codebook_size``) and the backbone sizes make the benchmark's model.
    Codebook vocabulary follows the real layout (2048 codes -> ``vocab_size`` 2051, pad 2050, eos 0):
    ``vocab_size = codebook_size + 3``, ``codebook_pad_token_id = codebook_size + 2``, ``codebook_eos_token_id = 0``.
    ``pad_token_id`` equals ``audio_token_id``, as in sesame/csm-1b's config (128002); the tokenizer's own pad
    token is ``<|end_of_text|>``.
    """
    if codec_config is None:
        codec_config = tiny_codec_config(num_codebooks, codebook_size)
    num_codebooks, codebook_size = codec_config.num_quantizers, codec_config.codebook_size
    tokenizer = processor.tokenizer
    audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    audio_eos_token_id = tokenizer.convert_tokens_to_ids(AUDIO_EOS_TOKEN)
    vocab_size = codebook_size + 3
    common = dict(
        num_codebooks=num_codebooks,
        vocab_size=vocab_size,
        hidden_act="silu",
        initializer_range=0.02,
        rms_norm_eps=1e-5,
    )
    layers = dict(
        hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_attention_heads=4, num_key_value_heads=2
    )
    depth_decoder_config = CsmDepthDecoderConfig(
        backbone_hidden_size=hidden_size,
        num_hidden_layers=2,
        max_position_embeddings=num_codebooks + 1,
        **layers,
        **common,
    )
    return CsmConfig(
        text_vocab_size=len(tokenizer),
        num_hidden_layers=num_layers,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=None,  # as in the real config: generation stops on an all-eos codebook frame
        pad_token_id=audio_token_id,
        audio_token_id=audio_token_id,
        audio_eos_token_id=audio_eos_token_id,
        codebook_pad_token_id=vocab_size - 1,
        codebook_eos_token_id=0,
        tie_codebooks_embeddings=True,
        depth_decoder_config=depth_decoder_config,
        codec_config=codec_config,
        **layers,
        **common,
    )


_CODEBOOK_STD = 3.0  # about the spread of the tiny encoder's quantizer inputs for speech-level audio


@torch.no_grad()
def randomize_codebooks(codec: MimiModel, generator: torch.Generator) -> None:
    """Give every RVQ codebook random centroids.

    ``MimiModel`` initialises its codebooks to all zeros, so a random Mimi maps every frame of every
    codebook to code 0 - which is also CSM's ``codebook_eos_token_id``. Random centroids make the codes
    depend on the audio, like a trained codec's do.
    """
    for module in codec.modules():
        if type(module).__name__ == "MimiEuclideanCodebook":
            embed = torch.randn(module.embed_sum.shape, generator=generator) * _CODEBOOK_STD
            module.embed_sum.copy_(embed.to(module.embed_sum))
            module.cluster_usage.fill_(1.0)
            module._embed = None  # drop the cached embed = embed_sum / cluster_usage


def build_tiny_codec(seed: int = 0) -> MimiModel:
    """A randomly initialised tiny ``MimiModel`` (4 codebooks of 64, random centroids), deterministic per ``seed``."""
    torch.manual_seed(seed)
    codec = MimiModel(tiny_codec_config())
    randomize_codebooks(codec, torch.Generator().manual_seed(seed))
    return codec.eval()


def build_tiny_model(
    processor: CsmProcessor, seed: int = 0, model_class: type = CsmForConditionalGeneration, **sizes
) -> CsmForConditionalGeneration:
    """A randomly initialised tiny ``CsmForConditionalGeneration`` consistent with ``processor``.

    Deterministic for a given ``seed``. Returned in train mode (dropout is 0 anyway); its ``codec_model`` is a
    tiny Mimi with random codebook centroids like :func:`build_tiny_codec` (same config, own random weights).
    ``sizes`` go to :func:`tiny_model_config` (the benchmark's real-size codec); ``model_class`` may be a
    subclass such as ``CsmForCodesTraining``.
    """
    config = tiny_model_config(processor, **sizes)
    torch.manual_seed(seed)
    model = model_class(config)
    randomize_codebooks(model.codec_model, torch.Generator().manual_seed(seed))
    return model


def save_tiny_asr(output_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random CTC speech-recognition model (wav2vec2, 16 kHz, a character vocabulary) with its processor,
    saved where `transformers.pipeline("automatic-speech-recognition", model=output_dir)` loads it offline.

    Its transcripts are random characters: it tests the plumbing of the ASR check, not its figures."""
    import json

    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    vocab.update({character: len(vocab) + n for n, character in enumerate("abcdefghijklmnopqrstuvwxyz'")})
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16_000, return_attention_mask=True, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, pad_token_id=0,
    )
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder
