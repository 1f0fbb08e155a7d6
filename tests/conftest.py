"""Shared fixtures: a demo corpus with every known fault (and what the reader must report for it), a
writer of hand-made conversations, the demo corpus built as a dataset, and an offline CSM processor.

Session-scoped fixtures are shared by every test: tests must not write into them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from csm_synthetic.builder import load_turns
from csm_synthetic.corpus import ProblemKind, read_corpus
from csm_synthetic.testing.demo import FAULTY_CATEGORY, LEFTOVER_FILES, SCRIPT_NAME, create_demo_corpus

SHORT_SECONDS = (0.2, 0.6)  # turn lengths of the demo corpus; keeps generation fast

# The demo manifest's fault kinds, as the reader's `ProblemKind`s.
READER_KIND = {
    "count_mismatch_more_audio": ProblemKind.COUNT_MISMATCH,
    "count_mismatch_more_text": ProblemKind.COUNT_MISMATCH,
    "leftover_files": ProblemKind.UNEXPECTED_FILE,
}
# Faults that could misalign text and audio: the conversation yields nothing.
MISALIGNMENT_FAULTS = {
    "count_mismatch_more_audio",
    "count_mismatch_more_text",
    "speaker_mismatch",
    "malformed_line",
    "duplicate_turn_number",
    "missing_script",
}
# Faults of one turn: the conversation is cut just before it.
BAD_TURN_FAULTS = {"empty_text", "unreadable_audio", "empty_audio", "too_long_audio"}
# Faults that cost no turn.
HARMLESS_FAULTS = {"leftover_files"}
# Ways of assembling a corpus that the reader follows: no problem, no turn lost.
LINKED_FAULTS = {"symlinked_conversation", "symlinked_segments"}
# A link to a folder above it: reported, no conversation.
CYCLE_FAULTS = {"symlink_cycle"}
# Faults of one turn that only the prepare steps see (decoding the audio, tokenizing the text), as the kind
# they report: the reader keeps the conversation whole, the steps cut it just before that turn.
STEP_FAULTS = {
    "non_finite_audio": ProblemKind.NON_FINITE_AUDIO,
    "out_of_range_audio": ProblemKind.OUT_OF_RANGE_AUDIO,
    "corrupt_flac": ProblemKind.UNREADABLE_AUDIO,
    "special_token_in_text": ProblemKind.SPECIAL_TOKEN_IN_TEXT,
}

# An independent reading of the layout of CORPUS.md, to check the reader against.
AUDIO_NAME = re.compile(r"^(?:segment_)?(\d+)_(?:speaker|spk)(\d+)\.(?:wav|flac)$", re.IGNORECASE)
SCRIPT_LINE = re.compile(r"^\[(\d+)\]:\s*(.*?)\s*$")


def reader_kind(demo_kind: str) -> str:
    return READER_KIND.get(demo_kind, demo_kind)


def expected_problems(demo) -> Counter:
    """(conversation_id, turn_index, kind) the reader must report for the demo manifest, with multiplicity."""
    expected = Counter()
    for fault in demo.faults:
        if fault.kind in LINKED_FAULTS or fault.kind in STEP_FAULTS:
            continue
        if fault.kind == "leftover_files":  # one problem per leftover file
            expected[(fault.conversation_id, None, ProblemKind.UNEXPECTED_FILE)] += len(LEFTOVER_FILES)
            continue
        expected[(fault.conversation_id, fault.turn_index, reader_kind(fault.kind))] += 1
        if fault.kind in BAD_TURN_FAULTS:
            expected[(fault.conversation_id, fault.turn_index, ProblemKind.TRUNCATED)] += 1
    return expected


def expected_prepare_problems(demo) -> Counter:
    """The triples a prepare run must report for the demo manifest: the reader's and the steps'."""
    expected = expected_problems(demo)
    for fault in demo.faults:
        if fault.kind in STEP_FAULTS:
            expected[(fault.conversation_id, fault.turn_index, STEP_FAULTS[fault.kind])] += 1
            expected[(fault.conversation_id, fault.turn_index, ProblemKind.TRUNCATED)] += 1
    return expected


def broken_audio_turns(demo) -> set[tuple[str, int]]:
    """(conversation_id, turn_index) of the demo turns whose audio header is fine but whose samples are not."""
    audio_faults = set(STEP_FAULTS) - {"special_token_in_text"}
    return {(fault.conversation_id, fault.turn_index) for fault in demo.faults if fault.kind in audio_faults}


def is_reported(fault) -> bool:
    """Whether a prepare run reports this manifest entry (a linked conversation is no fault: nothing to report)."""
    return fault.kind not in LINKED_FAULTS


def problem_keys(problems) -> Counter:
    """The same triples from `Problem`s or from their `to_dict()`s."""
    as_dicts = [p if isinstance(p, dict) else p.to_dict() for p in problems]
    return Counter((p["conversation_id"], p["turn_index"], p["kind"]) for p in as_dicts)


def script_texts(segments: Path) -> list[tuple[int, str]]:
    """(speaker number, text) of each non-blank script line, parsed independently of the reader."""
    text = (segments / SCRIPT_NAME).read_bytes().decode("utf-8-sig")
    lines = []
    for raw in text.splitlines():
        if raw.strip():
            match = SCRIPT_LINE.match(raw.strip())
            lines.append((int(match.group(1)), match.group(2)) if match else (None, raw))
    return lines


def numbers_in_name(path: str) -> tuple[int, int]:
    """(turn number, speaker number) written in an audio file name."""
    turn, speaker = AUDIO_NAME.match(Path(path).name).groups()
    return int(turn), int(speaker)


def write_conversation(
    root: Path,
    conversation_id: str,
    speakers: list[int],
    *,
    naming: str = "{turn:03d}_speaker{speaker}.wav",
    texts: list[str] | None = None,
    script: bytes | None = None,
    frames: Callable[[int], int] = lambda turn: 240 * turn,
    sample_rate: int = 24_000,
) -> Path:
    """Write `root/conversation_id/segments/`: a script line and an audio file per entry of `speakers`
    (1-based script speaker numbers). Turn number n gets `frames(n)` frames (10 ms * n by default), so
    that each file can be told from the others by its length. Returns the segments folder."""
    segments = root / conversation_id / "segments"
    segments.mkdir(parents=True)
    texts = texts or [f"Line {n} of {conversation_id}." for n in range(1, len(speakers) + 1)]
    if script is None:
        script = "".join(f"[{s}]: {t}\n" for s, t in zip(speakers, texts, strict=True)).encode("utf-8")
    (segments / SCRIPT_NAME).write_bytes(script)
    rng = np.random.default_rng(len(speakers))
    for n, speaker in enumerate(speakers, start=1):
        samples = 0.1 * rng.standard_normal(frames(n)).astype(np.float32)
        sf.write(segments / naming.format(turn=n, speaker=speaker), samples, sample_rate, subtype="PCM_16")
    return segments


def load_script(name: str):
    """A script of scripts/ as a module, to call its `main` in this process (a fresh interpreter costs seconds)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def own_progress_bar_lock() -> None:
    """Call first in a forked child that a test may kill: tqdm's lock is a semaphore shared with the test
    process, and a child killed while drawing a bar would leave it taken, hanging the tests at their next bar."""
    from tqdm.std import tqdm

    lock, classes = threading.RLock(), [tqdm]
    while classes:
        cls = classes.pop()
        if cls is tqdm or "_lock" in vars(cls):
            cls._lock = lock
        classes += cls.__subclasses__()


def copy_report_as_written(output: Path, copy: Path) -> None:
    """Give `copy` (a `save_to_disk` copy of the prepared `output` with rows changed on purpose) the report of
    `output`, with the checksums of `copy`'s own files: wrong rows that a faulty prepare wrote, which file
    checksums cannot tell from right ones, so that verify's row checks are what finds them."""
    from transforms.pipeline.checksums import file_checksum
    from transforms.pipeline.options import REPORT_NAME

    report = json.loads((Path(output) / REPORT_NAME).read_text(encoding="utf-8"))
    files = sorted(path for path in Path(copy).rglob("*") if path.is_file())
    report["files"] = {path.relative_to(copy).as_posix(): file_checksum(path) for path in files}
    (Path(copy) / REPORT_NAME).write_text(json.dumps(report), encoding="utf-8")


def rows_by_split(dataset: datasets.DatasetDict) -> dict[str, list[dict]]:
    """Every row of every split, with `audio` as the stored {"path", "bytes"} (nothing is decoded)."""
    return {
        split: part.cast_column("audio", datasets.Audio(decode=False)).to_list() for split, part in dataset.items()
    }


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo corpus (en, de, fr) with one conversation per known fault under en/Faulty/."""
    return create_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", seconds=SHORT_SECONDS, with_faults=True)


@pytest.fixture(scope="session")
def demo_corpus(demo):
    """`read_corpus` of the demo corpus."""
    return read_corpus(demo.root)


@pytest.fixture(scope="session")
def demo_dataset(demo, tmp_path_factory):
    """The demo corpus built by `CsmSynthetic` (config `all`, default fractions)."""
    return load_turns(demo.root, cache_dir=str(tmp_path_factory.mktemp("demo_cache")))


@pytest.fixture(scope="session")
def demo_rows(demo_dataset):
    return rows_by_split(demo_dataset)


@pytest.fixture(scope="session")
def offline_processor_dir(tmp_path_factory) -> Path:
    """A saved offline `CsmProcessor` (loads with `from_pretrained`, no network)."""
    from transforms.testing.offline import save_offline_processor  # transformers: import only when asked for

    return save_offline_processor(tmp_path_factory.mktemp("offline_processor"))


@pytest.fixture(scope="session")
def processor_dir(offline_processor_dir) -> str:
    """The offline processor's folder as a `model_id` string."""
    return str(offline_processor_dir)


def demo_conversation(demo, conversation_id: str):
    return next(c for c in demo.conversations if c.conversation_id == conversation_id)


def faults_by_conversation(demo) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for fault in demo.faults:
        found.setdefault(fault.conversation_id, set()).add(fault.kind)
    return found


def expected_turn_count(demo, conversation_id: str, steps: bool = False) -> int:
    """How many turns the reader (`steps`: and then the prepare steps) must keep of a demo conversation, from
    the manifest alone."""
    kinds = faults_by_conversation(demo).get(conversation_id, set())
    if kinds & MISALIGNMENT_FAULTS:
        return 0
    cutting = BAD_TURN_FAULTS | set(STEP_FAULTS) if steps else BAD_TURN_FAULTS
    cut = [f.turn_index for f in demo.faults if f.conversation_id == conversation_id and f.kind in cutting]
    return min(cut) if cut else demo_conversation(demo, conversation_id).turns


def is_faulty_conversation(conversation_id: str) -> bool:
    return f"/{FAULTY_CATEGORY}/" in conversation_id


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test that needs one (start-up costs seconds): 2 CPUs and a logical GPU,
    so `num_gpus=1` actors are placed (and run on the CPU). Never `ray stop`: that ends every Ray on the machine."""
    import os

    for name, value in (("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0"), ("RAY_USAGE_STATS_ENABLED", "0"),
                        ("RAY_AUTH_MODE", "disabled")):
        os.environ.setdefault(name, value)  # before ray is imported: it reads them then
    ray = pytest.importorskip("ray", reason="no ray: `uv sync --extra ray` to run")
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
