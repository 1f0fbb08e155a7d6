"""Encoding on every device: the plan of codec calls, the agreement measure, running out of device memory,
precision refusals, device checks, and the same output whatever the number of encoder processes.

Real tiny Mimi codecs (saved with `save_pretrained`), real spawned encoder processes (`--devices cpu,cpu`,
how a machine without GPUs runs the multi-device path), real prepare runs. A device out of memory is a real
codec whose encoder raises torch's `OutOfMemoryError` above a size, as a GPU's allocator does.
"""

import logging
import multiprocessing
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import MimiModel

from csm_synthetic.errors import CommandError, InputError
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.testing.demo import create_demo_corpus
from transforms.core.codec import (
    CodesAgreement,
    codec_batches,
    codes_agreement,
    encode_batch,
    encode_one,
    load_codec,
    padded_size,
)
from transforms.encoders import (
    EncoderPool,
    EncoderSettings,
    close_encoder_pool,
    encoder_pool,
    parse_devices,
    resolve_devices,
    visible_gpu_count,
)
from transforms.pipeline.options import PrepareOptions
from transforms.pipeline.prepare import prepare
from transforms.testing.offline import build_tiny_codec

RATE = 24_000
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codec")
    build_tiny_codec(seed=3).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def audios():
    rng = np.random.default_rng(7)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in rng.integers(RATE // 3, 3 * RATE // 2, 14)]


def local_pool(codec_dir) -> EncoderPool:
    return EncoderPool(EncoderSettings(codec_dir, ("cpu",))).start()


# --- planning and measuring ------------------------------------------------------------------------


def test_codec_calls_take_turns_longest_first_and_keep_padded_audio_within_the_budget():
    lengths = np.random.default_rng(0).integers(1, 50_000, 300)
    budget = 120_000
    calls = codec_batches(lengths, budget)
    order = np.concatenate(calls)
    assert sorted(order.tolist()) == list(range(len(lengths)))  # every item once
    assert np.all(np.diff(lengths[order]) <= 0)  # sorted across the whole window: little padding
    assert all(padded_size(lengths[call]) <= budget for call in calls)
    assert all((len(call) + 1) * lengths[call[0]] > budget for call in calls[:-1])  # each call as full as allowed
    assert [call.tolist() for call in codec_batches([10, 500, 20, 20], 100)] == [[1], [2, 3, 0]]  # ties: index order
    assert max(len(call) for call in codec_batches(lengths, budget, max_items=3)) == 3
    assert [len(call) for call in codec_batches(lengths, budget)] == [len(call) for call in calls]  # a pure plan


def test_codes_agreement_is_the_share_of_frames_that_differ_in_codebook_0_and_in_any_codebook():
    a = [np.zeros((10, 4), np.int16), np.zeros((30, 4), np.int16)]
    b = [codes.copy() for codes in a]
    b[0][3, 0] = 1  # codebook 0 (so also "any")
    b[1][5, 2] = 7
    b[1][6, 1] = b[1][6, 3] = 1  # two codebooks of one frame: one frame
    assert codes_agreement(a, b) == CodesAgreement(frames=40, codebook0=1 / 40, any_codebook=3 / 40)
    assert codes_agreement(a, a) == CodesAgreement(frames=40, codebook0=0.0, any_codebook=0.0)
    with pytest.raises(ValueError, match="same audios"):
        codes_agreement(a, b[:1])


# --- one device ----------------------------------------------------------------------------------


def test_the_pool_encodes_each_audio_once_as_one_forward_would_and_skips_turns_without_audio(codec_dir, audios):
    pool = local_pool(codec_dir)
    lengths = [len(audio) for audio in audios]
    num_samples, codes = pool.encode(lambda item: None if item == 5 else audios[item], lengths, budget_seconds=2)
    assert codes[5] is None and num_samples[5] == 0
    kept = [item for item in range(len(audios)) if item != 5]
    assert num_samples[kept].tolist() == [lengths[item] for item in kept]
    one_call = encode_batch(load_codec(codec_dir, "cpu"), [audios[item] for item in kept])  # rows in place?
    agreement = codes_agreement([codes[item] for item in kept], one_call)  # (per item: see test_codes.py)
    assert agreement.codebook0 < 0.001 and agreement.any_codebook < 0.01, agreement
    assert pool.stats.calls["cpu"] > 3  # a 2 s budget: many calls of several turns


class OutOfMemoryAbove:
    """Makes a real codec's encoder behave like a device that holds `limit` samples of padded audio."""

    def __init__(self, codec, limit: int):
        self.limit, self.calls = limit, []
        self.handle = codec.encoder.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls.append(args[0].numel())
        if args[0].numel() > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory: stand-in device holds {self.limit} samples")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_running_out_of_device_memory_halves_the_budget_and_retries_with_one_warning(codec_dir, audios, caplog):
    pool = local_pool(codec_dir)
    lengths = [len(audio) for audio in audios]
    expected = pool.encode(audios.__getitem__, lengths, budget_seconds=1.5)[1]
    with OutOfMemoryAbove(load_codec(codec_dir, "cpu"), limit=2 * RATE) as device, caplog.at_level(logging.INFO):
        num_samples, codes = pool.encode(audios.__getitem__, lengths, budget_seconds=8)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "transforms.encoders"]
    assert len(warnings) == 1 and "ran out of memory" in warnings[0].message and "halved" in warnings[0].message
    assert max(device.calls) > 2 * RATE  # it did run out
    assert pool.stats.out_of_memory_retries >= 1 and pool.stats.budget_seconds <= 2
    assert num_samples.tolist() == lengths  # nothing lost
    agreement = codes_agreement(codes, expected)
    assert agreement.codebook0 < 0.001 and agreement.any_codebook < 0.01, agreement
    # the halved budget stays: the next encode does not run out again
    with OutOfMemoryAbove(load_codec(codec_dir, "cpu"), limit=2 * RATE) as device:
        pool.encode(audios.__getitem__, lengths, budget_seconds=8)
    assert max(device.calls) <= 2 * RATE


def test_a_turn_too_big_for_the_device_alone_stops_with_a_message(codec_dir, audios):
    pool = local_pool(codec_dir)
    with OutOfMemoryAbove(load_codec(codec_dir, "cpu"), limit=RATE // 10):
        with pytest.raises(CommandError, match=r"cpu ran out of memory encoding one turn of \d+\.\d s alone"):
            pool.encode(audios.__getitem__, [len(audio) for audio in audios], budget_seconds=20)


def test_encoding_in_reduced_precision_is_refused_with_the_reason(codec_dir, audios):
    half = MimiModel.from_pretrained(codec_dir, dtype=torch.bfloat16).eval()
    with pytest.raises(InputError, match=r"torch.bfloat16.*Mimi codes need float32.*2.6%.*49%"):
        encode_batch(half, audios[:2])
    codec = load_codec(codec_dir, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(InputError, match="autocast.*need float32"):
        encode_batch(codec, audios[:2])
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(InputError, match="autocast"):
        encode_one(codec, audios[0])


# --- devices -------------------------------------------------------------------------------------


def test_devices_are_checked_and_counted_without_initialising_cuda():
    gpus = visible_gpu_count()
    assert resolve_devices("cpu,cpu") == ("cpu", "cpu")
    assert resolve_devices("auto") == (tuple(f"cuda:{index}" for index in range(gpus)) or ("cpu",))
    assert resolve_devices("auto", single=True) == resolve_devices("auto")[:1]
    with pytest.raises(InputError, match=rf"--devices 'cuda:{gpus + 1}': there is no cuda:{gpus + 1} here"):
        resolve_devices(f"cuda:{gpus + 1}")
    if not gpus:
        with pytest.raises(InputError, match=r"--device 'cuda': no GPU is visible here \(no GPU"):
            resolve_devices("cuda", single=True)
    with pytest.raises(InputError, match="mixes CPU and GPU"):
        parse_devices("cpu,cuda:0")
    with pytest.raises(InputError, match="'gpu0' is not a device"):
        parse_devices("cpu,gpu0")
    assert not torch.cuda.is_initialized()  # this process may still fork (num_proc workers)


def test_a_malformed_devices_value_is_an_argument_error_that_loads_no_torch():
    from test_layout import test_help_and_argument_errors_answer_without_torch as answers_without_torch

    answers_without_torch("prepare_dataset_for_training.py", ["--input_dir", ".", "--output_dir", "x", "--devices", "gpu0"])


def test_a_missing_gpu_exits_2_naming_it_before_any_work(codec_dir, processor_dir, tmp_path, capsys):
    from test_prepare import SCRIPT, load_script

    create_demo_corpus(tmp_path / "corpus", languages=("en",), conversations_per_language=1, turns=(2, 2))
    gpus = visible_gpu_count()
    arguments = ["--input_dir", str(tmp_path / "corpus"), "--output_dir", str(tmp_path / "out"), "--format", "codes",
                 "--model_id", processor_dir, "--codec_model_id", codec_dir]
    script = load_script(SCRIPT)
    assert script.main([*arguments, "--devices", f"cpu,cuda:{gpus}"]) == 2
    assert "mixes CPU and GPU" in capsys.readouterr().err
    assert script.main([*arguments, "--devices", f"cuda:{gpus}"]) == 2
    assert f"there is no cuda:{gpus} here" in capsys.readouterr().err
    assert script.main([*arguments, "--device", "cpu", "--devices", "cpu"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- several encoder processes -------------------------------------------------------------------


def test_two_encoder_processes_give_the_codes_of_one_and_stop_when_a_read_fails(codec_dir, audios):
    lengths = [len(audio) for audio in audios]
    one = local_pool(codec_dir).encode(audios.__getitem__, lengths, budget_seconds=1)
    pool = encoder_pool(EncoderSettings(codec_dir, ("cpu", "cpu")))
    try:
        two = pool.encode(audios.__getitem__, lengths, budget_seconds=1)
        assert set(pool.stats.calls) == {"cpu#0", "cpu#1"} and min(pool.stats.calls.values()) >= 2  # both worked
        assert two[0].tolist() == one[0].tolist()
        assert all(np.array_equal(a, b) for a, b in zip(two[1], one[1]))  # same calls, same device type: same codes

        def read(item):
            if item == 11:
                raise ValueError("en/x turn 11: cannot read audio")
            return audios[item]

        with pytest.raises(ValueError, match="turn 11"):
            pool.encode(read, lengths, budget_seconds=1)
        assert not multiprocessing.active_children()  # a failed run stops its encoder processes
    finally:
        close_encoder_pool()


def test_prepare_on_two_processes_writes_the_output_of_one_and_resumes_across_device_counts(
    codec_dir, processor_dir, tmp_path
):
    corpus = create_demo_corpus(tmp_path / "corpus", languages=("en", "de"), conversations_per_language=2,
                                turns=(3, 5), seconds=(0.3, 1.5)).root
    settings = CorpusSettings(validation_fraction=0.25, test_fraction=0.25)
    one = PrepareOptions(input_dir=str(corpus), output_dir=str(tmp_path / "one"), model_id=processor_dir,
                         cache_dir=str(tmp_path / "cache_one"), format="codes", codec_model_id=codec_dir,
                         max_history=2, batch_size=2, num_proc=1, corpus=settings, device="cpu",
                         encode_budget_seconds=1.5)
    two = replace(one, output_dir=str(tmp_path / "two"), cache_dir=str(tmp_path / "cache_two"), device=None,
                  devices="cpu,cpu")
    report_one, report_two = prepare(one), prepare(two)
    assert not multiprocessing.active_children()  # the encoder processes ended with the run
    assert report_one["encoding"]["devices"] == ["cpu"] and report_two["encoding"]["devices"] == ["cpu", "cpu"]
    assert len(report_two["encoding"]["codec_calls_by_device"]) == 2
    assert tables(one.output_dir) == tables(two.output_dir)  # row for row, whatever the number of devices

    resumed = prepare(replace(two, devices=None, device="cpu"), resume=True)  # another device count: accepted
    assert resumed["encoding"]["codec_calls"] == 0  # every encoded shard served from the cache
    assert tables(two.output_dir) == tables(one.output_dir)


def tables(output_dir) -> dict:
    loaded = datasets.load_from_disk(str(output_dir))
    return {split: loaded[split].data.table for split in loaded}
