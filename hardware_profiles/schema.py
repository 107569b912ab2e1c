"""Validated hardware profiles: which device, which runtime, and how to time it.

A profile is the unit a job names as its ``device``. Every field that changes a latency number
(thread count, batch size, dtype, runtime, measurement protocol) lives here, so a measured
latency can always be traced back to the exact conditions that produced it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

Kind = Literal["cpu", "cuda", "recorded"]
Runtime = Literal["torch_eager", "torchscript", "onnxruntime", "cuda_graph"]
DType = Literal["float32", "float16", "bfloat16"]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
TorchDevice = Annotated[str, StringConstraints(pattern=r"^(cpu|cuda(:\d+)?)$")]


class MeasurementProtocol(BaseModel):
    """How one latency is measured (see ``hardware_profiles.protocol.measure``).

    ``warmup`` untimed calls, then timed samples of ``n`` back-to-back calls each, ``n`` chosen
    so a sample lasts at least ``min_sample_ms`` (timer resolution). Sampling stops once there
    are ``min_repeats`` samples and the ~95% order-statistic confidence interval of the median
    has a relative half-width of at most ``target_rel_ci``; or after ``max_repeats`` samples;
    or once sampling has taken ``time_cap_s`` seconds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup: int = Field(default=10, ge=0)
    min_repeats: int = Field(default=20, ge=3)
    max_repeats: int = Field(default=2000, ge=3)
    target_rel_ci: float = Field(default=0.02, gt=0.0, lt=1.0)
    time_cap_s: float = Field(default=2.0, gt=0.0)
    min_sample_ms: float = Field(default=0.2, gt=0.0)

    @field_validator("max_repeats")
    @classmethod
    def _not_below_min_repeats(cls, value: int, info: ValidationInfo) -> int:
        min_repeats = info.data.get("min_repeats")
        if min_repeats is not None and value < min_repeats:
            raise ValueError(f"must be >= min_repeats ({min_repeats})")
        return value


class HardwareProfile(BaseModel):
    """One target device as the search sees it.

    ``kind`` 'cpu' and 'cuda' profiles are measured live with ``runtime``; a 'recorded'
    profile has no runtime: its latencies come from column ``recorded_column`` of the table
    ``source`` and it can never be measured live. ``queue`` is where jobs for this device go
    in the distributed mode (default ``hwnas.<id>``).
    """

    # Field order matters: each field validator may look at the fields declared above it.
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Slug
    name: str = Field(min_length=1)
    kind: Kind
    # validate_default: the cross-field checks below must also see omitted fields.
    torch_device: TorchDevice = Field(default="cpu", validate_default=True)
    runtime: Runtime | None = Field(default=None, validate_default=True)
    threads: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=1, ge=1)
    dtype: DType = "float32"
    protocol: MeasurementProtocol = MeasurementProtocol()  # frozen: safe to share
    queue: str = Field(default="", pattern=r"^\S+$")  # filled in from id when omitted
    recorded_column: str | None = Field(default=None, validate_default=True)
    source: str | None = Field(default=None, validate_default=True)
    # Recorded profiles only: a pause per lookup standing in for a remote device's measurement
    # time, so benchmarks can measure the system's own overhead. Never alters a latency value.
    simulated_delay_ms: float = Field(default=0.0, ge=0.0, le=60_000.0)
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _default_queue(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("queue") and "id" in data:
            return {**data, "queue": f"hwnas.{data['id']}"}
        return data

    @field_validator("torch_device")
    @classmethod
    def _device_matches_kind(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind == "cpu" and value != "cpu":
            raise ValueError("a 'cpu' profile needs torch_device 'cpu'")
        if kind == "cuda" and not value.startswith("cuda"):
            raise ValueError("a 'cuda' profile needs torch_device 'cuda' or 'cuda:<index>'")
        return value

    @field_validator("runtime")
    @classmethod
    def _runtime_matches_kind(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind == "recorded" and value is not None:
            raise ValueError("a 'recorded' profile is never measured live; omit runtime")
        if kind in ("cpu", "cuda") and value is None:
            raise ValueError(
                "required for kind 'cpu' or 'cuda' "
                "(one of torch_eager, torchscript, onnxruntime, cuda_graph)"
            )
        if value == "cuda_graph" and kind != "cuda":
            raise ValueError("'cuda_graph' needs kind 'cuda'")
        return value

    @field_validator("threads")
    @classmethod
    def _threads_only_for_cpu(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("kind") != "cpu":
            raise ValueError("only a 'cpu' profile sets threads")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype_supported(cls, value: str, info: ValidationInfo) -> str:
        # CPU float16 kernels are mostly emulated (slow, not what anyone deploys), and the ONNX
        # path here exports float32 graphs only.
        if value == "float16" and info.data.get("kind") == "cpu":
            raise ValueError("float16 needs kind 'cuda'; use bfloat16 or float32 on a CPU")
        if value != "float32" and info.data.get("runtime") == "onnxruntime":
            raise ValueError("runtime 'onnxruntime' supports float32 only")
        return value

    @field_validator("simulated_delay_ms")
    @classmethod
    def _delay_only_for_recorded(cls, value: float, info: ValidationInfo) -> float:
        if value and info.data.get("kind") != "recorded":
            raise ValueError("only a 'recorded' profile has a simulated delay")
        return value

    @field_validator("recorded_column", "source")
    @classmethod
    def _recorded_fields(cls, value: str | None, info: ValidationInfo) -> str | None:
        recorded = info.data.get("kind") == "recorded"
        if recorded and not value:
            raise ValueError("required for kind 'recorded'")
        if not recorded and value is not None and "kind" in info.data:
            raise ValueError("only a 'recorded' profile has this field")
        return value
