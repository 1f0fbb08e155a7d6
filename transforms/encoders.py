"""Turns to Mimi codes on every device: one encoder process per device, audio read ahead in threads.

    pool = encoder_pool(EncoderSettings("kyutai/mimi", resolve_devices("auto")))
    num_samples, codes = pool.encode(read, planned_lengths, budget_seconds=600)

- The codec calls are planned once by `codec_batches` over the whole window of turns (sorted by length,
  padded audio within the budget), whatever the devices; whole calls are dealt to whichever device is
  free. So the codes are the same, row for row, whatever the number of devices of one type.
- Audio is read (decoded, resampled) by `read` in a thread pool, a few calls ahead of the codecs:
  soundfile and torch release the GIL, so reading overlaps encoding and the devices do not wait on it.
- Each device has its own process, started with `spawn` (the CUDA runtime does not survive `fork`) and
  kept for the whole run, so the codec is loaded once per device. This process never initialises CUDA:
  GPUs are counted through NVML, or in a spawned probe where NVML is missing. A lone `cpu` encodes in
  this process: a process of its own would only add its start-up.
- A device out of memory halves the budget and the call is retried in smaller calls, with one warning.

Light at import: torch is loaded where a device is counted or a codec runs.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import queue
import re
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from csm_synthetic.errors import CommandError, InputError

logger = logging.getLogger(__name__)

AUTO = "auto"  # every visible GPU, else the CPU
DEFAULT_BUDGET_SECONDS = {"cuda": 600.0, "cpu": 20.0}  # padded audio per codec call, by device type
IN_FLIGHT = 2  # codec calls sent to a device ahead of its results: it never waits for the next one
OUT_OF_MEMORY = "out of memory"  # an encoder's answer to a call too big for its device


# --- devices ---------------------------------------------------------------------------------------


def parse_devices(spec: str, flag: str = "--devices") -> list[str]:
    """The devices of a `--devices` value, checked for form only (no torch): `auto` or a comma list of
    `cpu`, `cuda` (every visible GPU) and `cuda:N`, all of one type."""
    names = [name.strip() for name in str(spec).split(",") if name.strip()]
    if names == [AUTO]:
        return names
    if not names:
        raise InputError(f"{flag} is empty: give auto, cpu, cuda or cuda:N (comma-separated for several)")
    for name in names:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
            raise InputError(f"{flag}: {name!r} is not a device: use auto, cpu, cuda or cuda:N (comma-separated)")
    if len({device_type(name) for name in names}) > 1:
        raise InputError(
            f"{flag} {spec!r} mixes CPU and GPU: codes differ slightly between the two (about 0.4% of the "
            "codebook-0 frames), so which device took a turn would change the output; use one type"
        )
    return names


def device_type(device: str) -> str:
    return device.split(":")[0]


@lru_cache(maxsize=8)
def resolve_devices(spec: str = AUTO, single: bool = False) -> tuple[str, ...]:
    """The devices to encode on: `auto` = every visible GPU, else `cpu`; `cuda` = every visible GPU.

    `single`: the one-device form (`--device`): the first of them. A GPU that is not there is an
    `InputError` naming it and what the machine has. Never initialises CUDA in this process.
    """
    flag = "--device" if single else "--devices"
    names = parse_devices(spec, flag)
    gpus = visible_gpu_count() if any(name != "cpu" for name in names) else 0
    devices: list[str] = []
    for name in names:
        if name == AUTO:
            devices += [f"cuda:{index}" for index in range(gpus)] or ["cpu"]
        elif name == "cuda":
            if not gpus:
                raise InputError(f"{flag} {spec!r}: no GPU is visible here ({gpu_inventory(gpus)}); use cpu")
            devices += [f"cuda:{index}" for index in range(gpus)]
        elif name.startswith("cuda:") and int(name.split(":")[1]) >= gpus:
            raise InputError(f"{flag} {spec!r}: there is no {name} here ({gpu_inventory(gpus)})")
        else:
            devices.append(name)
    return tuple(devices[:1] if single else devices)


def gpu_inventory(gpus: int) -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = ", ".join(f"cuda:{index}" for index in range(gpus))
    present = f"{gpus} GPU{'s' if gpus != 1 else ''}: {names}" if gpus else "no GPU"
    return present + (f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "")


def visible_gpu_count() -> int:
    """GPUs this process may use, counted without initialising CUDA here (a CUDA process cannot fork safely)."""
    import torch

    if not torch.backends.cuda.is_built():
        return 0
    # NVML counts without a CUDA context and honours CUDA_VISIBLE_DEVICES; -1 where it is missing
    count = getattr(torch.cuda, "_device_count_nvml", lambda: -1)()
    if count >= 0:
        return count
    if not _cuda_driver_present():
        return 0
    return _count_gpus_in_a_spawned_process()


def _cuda_driver_present() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")  # loading the driver library initialises nothing
    except OSError:
        return False
    return True


def _count_gpus_in_a_spawned_process() -> int:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    probe = context.Process(target=_send_gpu_count, args=(sender,), daemon=True)
    probe.start()
    sender.close()
    try:
        return int(receiver.recv()) if receiver.poll(120) else 0
    except EOFError:
        return 0
    finally:
        probe.join(5)


def _send_gpu_count(sender) -> None:
    import torch

    sender.send(torch.cuda.device_count())


def default_budget_seconds(devices: Sequence[str]) -> float:
    return DEFAULT_BUDGET_SECONDS[device_type(devices[0])]


# --- one device ------------------------------------------------------------------------------------


def encode_or_report_memory(codec, batch: np.ndarray, lengths: np.ndarray) -> list[np.ndarray] | str:
    """`encode_padded`'s codes, or `OUT_OF_MEMORY` when the device has no room for the call."""
    import torch

    from .core.codec import encode_padded

    try:
        return encode_padded(codec, batch, lengths)
    except torch.OutOfMemoryError:
        if codec.device.type == "cuda":
            torch.cuda.empty_cache()
        return OUT_OF_MEMORY


def load_encoder_codec(settings: EncoderSettings, device: str):
    """The codec on `device`, checked: float32 and the rate of the samples."""
    from .core.codec import check_codec_rate, check_full_precision, load_codec

    codec = load_codec(settings.codec_model_id, device)
    check_full_precision(codec)
    check_codec_rate(codec, settings.sampling_rate)
    return codec


class LocalEncoder:
    """The codec in this process: for a lone `cpu` device."""

    def __init__(self, device: str, settings: EncoderSettings):
        self.device, self.settings = device, settings
        self.name = device  # the pool numbers a device given twice
        self.pending: deque = deque()
        self.codec = None
        self.start_seconds = 0.0

    def start(self) -> None:
        started = time.perf_counter()
        self.codec = load_encoder_codec(self.settings, self.device)
        self.start_seconds = time.perf_counter() - started

    def wait_ready(self) -> None:
        pass

    def send(self, batch: np.ndarray, lengths: np.ndarray) -> None:
        self.pending.append((batch, lengths))

    def receive(self) -> list[np.ndarray] | str:
        return encode_or_report_memory(self.codec, *self.pending.popleft())

    def close(self, abort: bool = False) -> None:
        self.pending.clear()


class ProcessEncoder:
    """The codec in a spawned process of its own, driven through a pipe: headers pickled, audio as raw bytes."""

    def __init__(self, device: str, settings: EncoderSettings, threads: int):
        self.device, self.settings, self.threads = device, settings, threads
        self.name = device  # the pool numbers a device given twice
        self.process = None
        self.connection = None
        self.start_seconds = 0.0

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=serve_encoder,
            args=(child, self.device, self.settings, self.threads),
            name=f"mimi-encoder-{self.device}",
            daemon=True,  # ended with this process whatever happens
        )
        self.spawned_at = time.time()
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        kind, payload = self._receive()
        if kind == "failed":
            exit_code, message = payload
            error = InputError if exit_code == InputError.exit_code else CommandError
            raise error(f"the encoder for {self.device} could not start: {message}")
        self.start_seconds = payload - self.spawned_at  # spawning, importing torch, loading the codec

    def send(self, batch: np.ndarray, lengths: np.ndarray) -> None:
        try:
            self.connection.send(("encode", lengths, batch.shape))
            write_array(self.connection.fileno(), batch)
        except OSError:
            self.died()

    def receive(self) -> list[np.ndarray] | str:
        kind, payload = self._receive()
        if kind == "codes":
            codes, frames = payload
            return np.split(codes, np.cumsum(frames)[:-1])
        if kind == "oom":
            return OUT_OF_MEMORY
        raise RuntimeError(f"the encoder on {self.device} failed:\n{payload}")

    def _receive(self) -> tuple:
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            self.died()

    def died(self):
        self.process.join(1)
        exit_code = self.process.exitcode
        raise RuntimeError(f"the encoder process for {self.name} died (exit code {exit_code})") from None

    def close(self, abort: bool = False) -> None:
        """Stop the process: asked to, or (`abort`, or when it does not stop) terminated - it holds nothing to keep."""
        if self.process is None:
            return
        if not abort:
            try:
                self.connection.send(None)
            except OSError:
                pass
            self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.connection.close()
        self.process = None


def serve_encoder(connection, device: str, settings: EncoderSettings, threads: int) -> None:
    """An encoder process: load the codec on `device`, then answer codec calls until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    # Codec calls differ in shape: growable segments spare the allocator's re-allocations (H200: 0.81 -> 0.86
    # of plain codec.encode's speed). Read when CUDA first allocates, so before the codec loads; a user's wins.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    try:
        import torch
        import transformers

        from .core.codec import set_fp32_precision

        transformers.utils.logging.disable_progress_bar()  # one "Loading weights" bar per device says nothing
        torch.set_num_threads(threads)
        if device_type(device) == "cuda":
            torch.cuda.set_device(device)
            set_fp32_precision(settings.allow_tf32)
        codec = load_encoder_codec(settings, device)
    except Exception as error:
        connection.send(("failed", (getattr(error, "exit_code", 1), f"{type(error).__name__}: {error}")))
        return
    connection.send(("ready", time.time()))
    jobs: queue.Queue = queue.Queue(maxsize=1)  # one call received while the codec runs the previous one
    threading.Thread(target=receive_jobs, args=(connection, jobs), daemon=True).start()
    while (job := jobs.get()) is not None:
        try:
            result = encode_or_report_memory(codec, *job)
        except Exception:
            connection.send(("error", traceback.format_exc()))
            continue
        if result is OUT_OF_MEMORY:
            connection.send(("oom", None))
        else:
            connection.send(("codes", (np.concatenate(result), [len(codes) for codes in result])))


def receive_jobs(connection, jobs: queue.Queue) -> None:
    """Read codec calls off the pipe into `jobs` (None: stop), so the next audio arrives while the codec runs."""
    try:
        while (message := connection.recv()) is not None:
            _, lengths, shape = message
            batch = np.empty(shape, dtype=np.float32)
            read_array(connection.fileno(), batch)
            jobs.put((batch, lengths))
    except (EOFError, OSError):
        pass
    jobs.put(None)


def write_array(fd: int, array: np.ndarray) -> None:
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def read_array(fd: int, array: np.ndarray) -> None:
    """Fill `array` from `fd` without intermediate copies (`recv_bytes_into` runs at a third of the speed)."""
    view = memoryview(array).cast("B")
    while view:
        got = os.readv(fd, [view])
        if not got:
            raise EOFError("the pipe closed in the middle of an array")
        view = view[got:]


# --- the pool --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderSettings:
    """What an encoder process is started with: one process per entry of `devices`."""

    codec_model_id: str
    devices: tuple[str, ...]
    sampling_rate: int = 24_000
    allow_tf32: bool = False


@dataclass
class EncodeStats:
    """What the pool did, over the whole run."""

    start_seconds: float = 0.0  # the slowest encoder's start-up: loading torch and the codec
    encode_seconds: float = 0.0  # wall time inside `encode`, reading included
    audio_seconds: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)  # codec calls answered, by device
    out_of_memory_retries: int = 0
    read_wait_seconds: float = 0.0  # time the devices' feeders waited for audio: reading was behind the codec
    budget_seconds: float | None = None  # the budget in use (halved after running out of memory)

    def to_dict(self, settings: EncoderSettings) -> dict:
        return {
            "devices": list(settings.devices),
            "allow_tf32": settings.allow_tf32,
            "budget_seconds": self.budget_seconds,
            "start_seconds": round(self.start_seconds, 2),
            "encode_seconds": round(self.encode_seconds, 2),
            "audio_seconds": round(self.audio_seconds, 2),
            "audio_seconds_per_second": round(self.audio_seconds / max(self.encode_seconds, 1e-9), 2),
            "codec_calls": sum(self.calls.values()),
            "codec_calls_by_device": dict(self.calls),
            "out_of_memory_retries": self.out_of_memory_retries,
            "read_wait_seconds": round(self.read_wait_seconds, 2),
        }


class EncoderPool:
    """One encoder per device, started once and kept until `close`."""

    def __init__(self, settings: EncoderSettings, read_threads: int | None = None):
        self.settings = settings
        devices = settings.devices
        if devices == ("cpu",):
            self.encoders = [LocalEncoder("cpu", settings)]
        else:
            threads = max(1, (os.cpu_count() or 1) // len(devices))
            self.encoders = [ProcessEncoder(device, settings, threads) for device in devices]
        for index, encoder in enumerate(self.encoders):  # a device given twice runs two encoders: number them
            encoder.name = encoder.device if devices.count(encoder.device) == 1 else f"{encoder.device}#{index}"
        self.read_threads = read_threads or max(2, min(16, os.cpu_count() or 1))
        self.stats = EncodeStats()
        self.budgets: dict[int, int] = {}  # budget asked for -> budget in use (halved after running out of memory)
        self.ready = False

    def start(self) -> EncoderPool:
        for encoder in self.encoders:
            encoder.start()
        return self

    def wait_ready(self) -> EncoderPool:
        if not self.ready:
            for encoder in self.encoders:
                encoder.wait_ready()
            self.stats.start_seconds = max(encoder.start_seconds for encoder in self.encoders)
            self.ready = True
        return self

    def close(self, abort: bool = False) -> None:
        for encoder in self.encoders:
            encoder.close(abort)

    def encode(
        self,
        read: Callable[[int], np.ndarray | None],
        planned_lengths: Sequence[int] | np.ndarray,
        budget_seconds: float | None = None,
        max_items: int | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Each item's decoded length and codes `(frames, num_codebooks)` int16; `read(i)` gives item i's audio
        at the codec's rate, or None for an item with nothing to encode (its codes are None, its length 0).

        `planned_lengths` (e.g. from the audio headers) only group the items into codec calls; the audio read
        decides what is padded and encoded.
        """
        self.wait_ready()
        budget_seconds = budget_seconds or default_budget_seconds(self.settings.devices)
        if budget_seconds <= 0:
            raise ValueError(f"the budget must be positive (got {budget_seconds} s)")
        asked = max(1, round(budget_seconds * self.settings.sampling_rate))
        run = EncodeRun(self, read, np.asarray(planned_lengths, dtype=np.int64), asked, max_items)
        started = time.perf_counter()
        try:
            run.run()
        except BaseException:
            close_encoder_pool(self, abort=True)  # a device may hold a half-done call: never reuse it
            raise
        self.stats.encode_seconds += time.perf_counter() - started
        self.stats.audio_seconds += float(run.num_samples.sum()) / self.settings.sampling_rate
        self.stats.read_wait_seconds += run.read_wait_seconds
        for device, calls in run.calls.items():
            self.stats.calls[device] = self.stats.calls.get(device, 0) + calls
        self.stats.budget_seconds = self.budget(asked) / self.settings.sampling_rate
        return run.num_samples, run.codes

    def budget(self, asked: int) -> int:
        return self.budgets.get(asked, asked)

    def halve_budget(self, asked: int, failed_size: int, device: str) -> int:
        """After `device` ran out of memory on a call of `failed_size` samples: the budget in use from now on."""
        current = self.budget(asked)
        halved = min(current, failed_size // 2)
        if halved < current:
            self.budgets[asked] = halved
            rate = self.settings.sampling_rate
            log = logger.info if self.stats.out_of_memory_retries else logger.warning  # one warning a run
            log(
                "%s ran out of memory encoding %.1f s of padded audio in one call: the budget is halved to %.1f s "
                "and the call retried (--encode_budget_seconds %.1f starts there)",
                device, failed_size / rate, halved / rate, halved / rate,
            )
        self.stats.out_of_memory_retries += 1
        return self.budget(asked)


@dataclass
class Call:
    items: np.ndarray  # item indices, longest first
    planned: int  # index of the planned call it comes from (a split call keeps it)


class EncodeRun:
    """One `EncoderPool.encode`: a feeding thread per device takes the next call, waits for its audio, sends it."""

    def __init__(self, pool: EncoderPool, read, planned_lengths: np.ndarray, asked: int, max_items: int | None):
        from .core.codec import codec_batches

        self.pool, self.asked, self.max_items = pool, asked, max_items
        planned = codec_batches(planned_lengths, pool.budget(asked), max_items)
        self.calls_to_do = deque(Call(items, index) for index, items in enumerate(planned))
        self.reader = ReadAhead(read, planned, pool.read_threads, lookahead=len(pool.encoders) + 2)
        self.num_samples = np.zeros(len(planned_lengths), dtype=np.int64)
        self.codes: list[np.ndarray | None] = [None] * len(planned_lengths)
        self.calls: dict[str, int] = {}  # by device
        self.read_wait_seconds = 0.0
        self.lock = threading.Lock()
        self.failure: BaseException | None = None

    def run(self) -> None:
        local = [encoder for encoder in self.pool.encoders if isinstance(encoder, LocalEncoder)]
        feeders = [
            threading.Thread(target=self.feed, args=(encoder,), name=f"feed-{encoder.name}", daemon=True)
            for encoder in self.pool.encoders
            if encoder not in local
        ]
        try:
            for feeder in feeders:
                feeder.start()
            for encoder in local:  # codec work in this thread: no torch op is left running in another at exit
                self.feed(encoder)
            for feeder in feeders:
                while feeder.is_alive():  # a join without timeout would not wake for Ctrl-C
                    feeder.join(0.2)
        finally:
            with self.lock:
                self.calls_to_do.clear()
            self.reader.close()
        if self.failure is not None:
            raise self.failure

    def next_call(self) -> Call | None:
        with self.lock:
            return self.calls_to_do.popleft() if self.calls_to_do and self.failure is None else None

    def redo(self, calls: list[Call]) -> None:
        with self.lock:
            self.calls_to_do.extendleft(reversed(calls))

    def feed(self, encoder) -> None:
        in_flight: deque = deque()
        try:
            while True:
                while len(in_flight) < IN_FLIGHT and (call := self.next_call()) is not None:
                    sent = self.send(encoder, call)
                    if sent is not None:
                        in_flight.append(sent)
                if not in_flight:
                    return
                call, audios = in_flight.popleft()
                result = encoder.receive()
                if result is OUT_OF_MEMORY:
                    self.split_after_running_out(encoder.name, call, audios)
                else:
                    self.keep(encoder.name, call, audios, result)
        except BaseException as error:
            with self.lock:
                self.failure = self.failure or error

    def send(self, encoder, call: Call) -> tuple[Call, list] | None:
        """Send `call`'s audio to `encoder`; or, when the call is too big for the budget now, split it first."""
        waiting = time.perf_counter()
        audios = self.reader.take(call.planned, call.items)
        with self.lock:
            self.read_wait_seconds += time.perf_counter() - waiting
        present = [position for position, audio in enumerate(audios) if audio is not None]
        if len(present) < len(audios):  # items without audio: nothing to encode
            call = Call(call.items[present], call.planned)
            audios = [audios[position] for position in present]
        if not audios:
            return None
        lengths = [len(audio) for audio in audios]
        from .core.codec import pad_batch, padded_size

        if len(audios) > 1 and padded_size(lengths) > self.pool.budget(self.asked):
            self.resplit(call, audios)
            return None
        encoder.send(*pad_batch(audios))
        return call, audios

    def resplit(self, call: Call, audios: list[np.ndarray]) -> None:
        from .core.codec import codec_batches

        lengths = [len(audio) for audio in audios]
        parts = codec_batches(lengths, self.pool.budget(self.asked), self.max_items)
        self.reader.put_back(call.items, audios)
        self.redo([Call(call.items[part], call.planned) for part in parts])

    def split_after_running_out(self, device: str, call: Call, audios: list[np.ndarray]) -> None:
        from .core.codec import padded_size

        size = padded_size([len(audio) for audio in audios])
        if len(audios) == 1:
            raise CommandError(
                f"{device} ran out of memory encoding one turn of {size / self.pool.settings.sampling_rate:.1f} s "
                "alone: free the device's memory, encode on another device, or lower --max_turn_seconds"
            )
        with self.lock:
            self.pool.halve_budget(self.asked, size, device)
        self.resplit(call, audios)

    def keep(self, device: str, call: Call, audios: list[np.ndarray], codes: list[np.ndarray]) -> None:
        for item, audio, item_codes in zip(call.items, audios, codes):
            self.num_samples[item] = len(audio)
            self.codes[item] = item_codes
        with self.lock:
            self.calls[device] = self.calls.get(device, 0) + 1


class ReadAhead:
    """Items read in the order of the planned calls, at most `lookahead` calls ahead of the newest one taken."""

    def __init__(self, read: Callable[[int], np.ndarray | None], planned: list[np.ndarray], threads: int,
                 lookahead: int):
        self.read, self.planned, self.lookahead = read, planned, lookahead
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="read-audio")
        self.futures: dict[int, Future] = {}
        self.submitted = 0  # planned calls whose items were submitted
        self.lock = threading.Lock()

    def take(self, planned: int, items: np.ndarray) -> list[np.ndarray | None]:
        with self.lock:
            while self.submitted < min(planned + 1 + self.lookahead, len(self.planned)):
                for item in self.planned[self.submitted]:
                    self.futures[int(item)] = self.executor.submit(self.read, int(item))
                self.submitted += 1
            futures = [self.futures.pop(int(item)) for item in items]
        return [future.result() for future in futures]

    def put_back(self, items: np.ndarray, audios: list[np.ndarray]) -> None:
        with self.lock:
            for item, audio in zip(items, audios):
                future: Future = Future()
                future.set_result(audio)
                self.futures[int(item)] = future

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.futures.clear()


# --- the pool of this process ------------------------------------------------------------------------

_pool: EncoderPool | None = None
_pool_lock = threading.Lock()


def start_encoder_pool(settings: EncoderSettings) -> EncoderPool:
    """Start the pool for `settings` without waiting for it (processes load their codec meanwhile); a pool
    with other settings is closed first. One pool per process, kept for later calls."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool.settings != settings:
            _pool.close()
            _pool = None
        if _pool is None:
            _pool = EncoderPool(settings).start()
        return _pool


def encoder_pool(settings: EncoderSettings) -> EncoderPool:
    """The pool for `settings`, started if needed and ready to encode."""
    pool = start_encoder_pool(settings)
    try:
        return pool.wait_ready()
    except BaseException:
        close_encoder_pool(pool, abort=True)
        raise


def close_encoder_pool(pool: EncoderPool | None = None, abort: bool = False) -> None:
    """Stop the encoder processes of this process' pool (or of `pool`): asked to, or terminated (`abort`)."""
    global _pool
    with _pool_lock:
        if pool is None or pool is _pool:
            pool, _pool = _pool, None
        if pool is not None:
            pool.close(abort)


atexit.register(close_encoder_pool)
