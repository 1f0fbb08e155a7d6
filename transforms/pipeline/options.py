"""The arguments of a prepare run, and what they mean for resuming. Light: no heavy imports here."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from csm_synthetic.corpus import ALL_LANGUAGES, DEFAULT_MAX_TURN_SECONDS
from csm_synthetic.splits import DEFAULT_TEST_FRACTION, DEFAULT_VALIDATION_FRACTION

from ..core.csm import DEFAULT_CODEC_MODEL_ID, DEFAULT_MODEL_ID
from ..core.windows import DEFAULT_MAX_TOKENS

REPORT_NAME = "prepare_report.json"
ARGUMENTS_NAME = "prepare_arguments.json"  # written first: what a --resume must match
PROCESSOR_FORMAT, CODES_FORMAT = "processor", "codes"


class PrepareError(Exception):
    """Bad input or arguments, detected before any work is done (or on resume)."""


@dataclass(frozen=True)
class PrepareOptions:
    input_dir: str
    output_dir: str
    batch_size: int = 100  # conversations per shard
    max_history: int | None = None
    target_sampling_rate: int = 24000
    model_id: str = DEFAULT_MODEL_ID
    max_tokens: int = DEFAULT_MAX_TOKENS
    language: str = ALL_LANGUAGES
    depth_decoder_labels_ratio: float = 1.0
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    max_turn_seconds: float = DEFAULT_MAX_TURN_SECONDS
    seed: int = 0
    format: str = PROCESSOR_FORMAT
    codec_model_id: str = DEFAULT_CODEC_MODEL_ID  # codes format only
    # how, not what: may differ on --resume
    num_proc: int | None = None
    cache_dir: str | None = None
    device: str = "auto"  # codes format: where the codec runs
    encode_batch_size: int | None = None  # codes format: turns per codec call (None: 16 on GPU, 1 on CPU)

    def output_defining(self) -> dict:
        """The arguments that determine the output's rows (a resume must use the same)."""
        how = {"output_dir", "num_proc", "cache_dir", "device", "encode_batch_size"}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in how}
        values["input_dir"] = str(Path(self.input_dir).resolve())
        return values
