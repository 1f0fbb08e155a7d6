"""The arguments of a prepare run, their checks, and what they mean for resuming. Light: no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from csm_synthetic.corpus import ALL_LANGUAGES
from csm_synthetic.errors import InputError
from csm_synthetic.settings import CorpusSettings
from csm_synthetic.sources import CorpusSource, input_source

from ..core.asr import DEFAULT_ASR_BATCH_SIZE
from ..core.csm import DEFAULT_CODEC_MODEL_ID, DEFAULT_MODEL_ID
from ..core.quality import QualityChecks
from ..core.windows import DEFAULT_MAX_TOKENS
from ..encoders import AUTO, EncoderSettings, parse_devices, resolve_devices, start_encoder_pool

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
    "devices", "device", "encode_budget_seconds", "encode_batch_size", "allow_tf32", "asr_batch_size",
)


@dataclass(frozen=True)
class PrepareOptions:
    input_dir: str | None = None  # exactly one of input_dir, input_manifest, input_dataset
    output_dir: str = ""
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
    input_manifest: str | None = None  # a JSONL/CSV manifest of turns
    input_dataset: str | None = None  # a `datasets` dataset of turns: Hub id or folder
    input_config: str | None = None  # its config
    columns: str | None = None  # its column names: "conversation_id=episode,turn_index=idx,..."
    quality: QualityChecks = field(default_factory=QualityChecks)
    asr_model: str | None = None  # a transformers speech-recognition model: the ASR agreement check
    asr_batch_size: int = DEFAULT_ASR_BATCH_SIZE
    normalize_loudness: float | None = None  # target integrated loudness of every turn, LUFS
    engine: str = LOCAL_ENGINE  # local: datasets maps in this process tree; ray: Ray on a cluster
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
        if not self.output_dir:
            raise InputError("--output_dir is required")
        if self.asr_batch_size < 1:
            raise InputError(f"--asr_batch_size must be at least 1 (got {self.asr_batch_size})")
        if self.normalize_loudness is not None:
            if not -70 <= self.normalize_loudness <= 0:
                raise InputError(f"--normalize_loudness is a loudness in LUFS, -70 to 0 (got {self.normalize_loudness})")
            from ..core.audio_prep import require_pyloudnorm

            require_pyloudnorm()
        self.source.check()

    @property
    def source(self) -> CorpusSource:
        """Where the turns come from (`--input_dir`, `--input_manifest` or `--input_dataset`)."""
        return input_source(
            self.input_dir, self.input_manifest, self.input_dataset, self.input_config, self.columns, self.cache_dir
        )

    def encoding_devices(self) -> tuple[str, bool]:
        """The devices value to resolve, and whether only its first device is used (`--device`, the one-device form)."""
        if self.device is not None:
            return self.device, True
        return self.devices or AUTO, False

    def encoder_settings(self) -> EncoderSettings:
        """Codes format: the codec and the devices it runs on; a device that is not there is refused here."""
        spec, single = self.encoding_devices()
        devices = resolve_devices(spec, single)
        return EncoderSettings(self.codec_model_id, devices, self.corpus.target_sampling_rate, self.allow_tf32)

    def start_encoders(self) -> None:
        """Codes format: start the encoder processes now, before this process imports datasets and transformers,
        so that their own start-up (torch, the codec, CUDA) overlaps it; `prepare` takes the started pool."""
        if self.format == CODES_FORMAT:
            start_encoder_pool(self.encoder_settings())

    def output_defining(self) -> dict:
        """The arguments that determine the output's rows (a resume must use the same), as flat JSON values."""
        values = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in (*HOW_NOT_WHAT, "corpus", "quality")
        }
        values.update(self.corpus.to_dict())
        values.update(self.quality.to_dict())
        values.update(self.source.arguments())
        return values
