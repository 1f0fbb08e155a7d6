"""The arguments of a prepare run, their checks, and what they mean for resuming. Light: no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from csm_synthetic.corpus import ALL_LANGUAGES
from csm_synthetic.errors import InputError
from csm_synthetic.settings import CorpusSettings

from ..core.csm import DEFAULT_CODEC_MODEL_ID, DEFAULT_MODEL_ID
from ..core.windows import DEFAULT_MAX_TOKENS
from ..encoders import AUTO, parse_devices

REPORT_NAME = "prepare_report.json"
ARGUMENTS_NAME = "prepare_arguments.json"  # written first: what a --resume must match, and the mark of our output
PROCESSOR_FORMAT, CODES_FORMAT = "processor", "codes"
FORMATS = (PROCESSOR_FORMAT, CODES_FORMAT)
LOCAL_ENGINE, RAY_ENGINE = "local", "ray"
ENGINES = (LOCAL_ENGINE, RAY_ENGINE)  # the engine decides the output's layout: a resume must keep it
# May differ on --resume: how the work runs, not what the rows mean. Codes move by float rounding with the budget,
# a little more between device types (GPU against CPU: 0.4% of codebook-0 frames); TF32 changes more, so it is part
# of the encoding cache key: a resume with another value recomputes the encodings, never mixes them.
HOW_NOT_WHAT = (
    "output_dir", "num_proc", "cache_dir", "ray_address",
    "devices", "device", "encode_budget_seconds", "encode_batch_size", "allow_tf32",
)


@dataclass(frozen=True)
class PrepareOptions:
    input_dir: str
    output_dir: str
    batch_size: int = 100  # conversations per shard
    max_history: int | None = None
    model_id: str = DEFAULT_MODEL_ID
    max_tokens: int = DEFAULT_MAX_TOKENS
    language: str = ALL_LANGUAGES
    depth_decoder_labels_ratio: float = 1.0
    seed: int = 0
    format: str = PROCESSOR_FORMAT
    codec_model_id: str = DEFAULT_CODEC_MODEL_ID  # codes format only
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    num_proc: int | None = None
    cache_dir: str | None = None
    devices: str | None = None  # codes format: one encoder process per device (None: auto, every visible GPU else cpu)
    device: str | None = None  # codes format: the one-device form of `devices` (its first device)
    encode_budget_seconds: float | None = None  # codes format: padded audio per codec call (None: by device type)
    encode_batch_size: int | None = None  # codes format: at most this many turns per codec call (None: no limit)
    allow_tf32: bool = False  # codes format: TF32 on GPUs
    engine: str = LOCAL_ENGINE  # local: datasets maps in this process tree; ray: Ray Data on a cluster
    ray_address: str | None = None  # --engine ray: the cluster to join (None: start a local one)

    def __post_init__(self):
        """Every check that needs no model: argument errors answer before anything heavy is imported."""
        if self.batch_size < 1:
            raise InputError(f"--batch_size must be at least 1 (got {self.batch_size})")
        if self.max_history is not None and self.max_history < 0:
            raise InputError(f"--max_history must be >= 0 or None (got {self.max_history})")
        if self.max_tokens < 1:
            raise InputError(f"--max_tokens must be at least 1 (got {self.max_tokens})")
        if not 0.0 <= self.depth_decoder_labels_ratio <= 1.0:
            raise InputError(f"--depth_decoder_labels_ratio must be in [0, 1] (got {self.depth_decoder_labels_ratio})")
        if self.engine not in ENGINES:
            raise InputError(f"--engine must be one of {ENGINES} (got {self.engine!r})")
        if self.ray_address is not None and self.engine != RAY_ENGINE:
            raise InputError("--ray_address is for --engine ray: the local engine runs in this process tree")
        if self.format not in FORMATS:
            raise InputError(f"--format must be one of {FORMATS} (got {self.format!r})")
        if self.format == CODES_FORMAT and self.depth_decoder_labels_ratio != 1.0:
            raise InputError(
                "--depth_decoder_labels_ratio is drawn per batch by the codes collator, not stored: leave it at 1.0 "
                "with --format codes"
            )
        if self.encode_batch_size is not None and self.encode_batch_size < 1:
            raise InputError(f"--encode_batch_size must be at least 1 (got {self.encode_batch_size})")
        if self.encode_budget_seconds is not None and not self.encode_budget_seconds > 0:
            raise InputError(f"--encode_budget_seconds must be positive (got {self.encode_budget_seconds})")
        if self.device is not None and self.devices is not None:
            raise InputError("--device and --devices exclude each other: --device is the one-device form of --devices")
        if self.device is not None and len(parse_devices(self.device, "--device")) > 1:
            raise InputError(f"--device takes one device (got {self.device!r}): use --devices for several")
        if self.devices is not None:
            parse_devices(self.devices)
        if not Path(self.input_dir).is_dir():
            raise InputError(f"--input_dir {self.input_dir!r} does not exist or is not a folder")

    def encoding_devices(self) -> tuple[str, bool]:
        """The devices value to resolve, and whether only its first device is used (`--device`, the one-device form)."""
        if self.device is not None:
            return self.device, True
        return self.devices or AUTO, False

    def output_defining(self) -> dict:
        """The arguments that determine the output's rows (a resume must use the same), as flat JSON values."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in (*HOW_NOT_WHAT, "corpus")}
        values.update(self.corpus.to_dict())
        values["input_dir"] = str(Path(self.input_dir).resolve())
        return values
