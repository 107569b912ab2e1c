"""HardwareProfile and MeasurementProtocol validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hardware_profiles import HardwareProfile, MeasurementProtocol


def cpu_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": "my-cpu", "name": "My CPU", "kind": "cpu", "runtime": "torch_eager",
    }  # fmt: skip
    fields.update(changes)
    return fields


def error_fields(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {".".join(str(part) for part in error["loc"]) for error in exc.value.errors()}


def test_defaults_fill_queue_protocol_and_device() -> None:
    profile = HardwareProfile.model_validate(cpu_fields())
    assert profile.queue == "hwnas.my-cpu"
    assert profile.protocol == MeasurementProtocol()
    assert (profile.torch_device, profile.threads, profile.batch_size) == ("cpu", None, 1)
    assert profile.protocol.warmup == 10 and profile.protocol.min_repeats == 20


def test_explicit_queue_is_kept() -> None:
    assert HardwareProfile.model_validate(cpu_fields(queue="edge")).queue == "edge"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"runtime": "cuda_graph"}, "runtime"),
        ({"runtime": None}, "runtime"),
        ({"runtime": "tensorrt"}, "runtime"),
        ({"torch_device": "cuda:0"}, "torch_device"),
        ({"torch_device": "tpu"}, "torch_device"),
        ({"threads": 0}, "threads"),
        ({"batch_size": 0}, "batch_size"),
        ({"dtype": "float16"}, "dtype"),
        ({"runtime": "onnxruntime", "dtype": "bfloat16"}, "dtype"),
        ({"id": "Not A Slug"}, "id"),
        ({"recorded_column": "latency_ms"}, "recorded_column"),
        ({"turbo": True}, "turbo"),
        ({"protocol": {"warmup": -1}}, "protocol.warmup"),
        ({"protocol": {"min_repeats": 2}}, "protocol.min_repeats"),
        ({"protocol": {"min_repeats": 30, "max_repeats": 10}}, "protocol.max_repeats"),
        ({"protocol": {"target_rel_ci": 1.0}}, "protocol.target_rel_ci"),
        ({"protocol": {"repeats": 5}}, "protocol.repeats"),
    ],
)
def test_invalid_cpu_profile_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        HardwareProfile.model_validate(cpu_fields(**changes))
    assert field in error_fields(exc)


def test_cuda_profile_needs_a_cuda_device_and_no_threads() -> None:
    cuda = {"id": "gpu", "name": "GPU", "kind": "cuda", "runtime": "cuda_graph"}
    with pytest.raises(ValidationError) as exc:
        HardwareProfile.model_validate(cuda)  # torch_device defaults to 'cpu'
    assert error_fields(exc) == {"torch_device"}
    with pytest.raises(ValidationError) as exc:
        HardwareProfile.model_validate({**cuda, "torch_device": "cuda:1", "threads": 4})
    assert error_fields(exc) == {"threads"}
    profile = HardwareProfile.model_validate({**cuda, "torch_device": "cuda", "dtype": "float16"})
    assert profile.runtime == "cuda_graph"


def test_recorded_profile_has_a_source_and_no_runtime() -> None:
    recorded = {"id": "pixel", "name": "Pixel 1", "kind": "recorded"}
    with pytest.raises(ValidationError) as exc:
        HardwareProfile.model_validate(recorded)
    assert error_fields(exc) == {"recorded_column", "source"}
    with pytest.raises(ValidationError) as exc:
        HardwareProfile.model_validate(
            {**recorded, "runtime": "torch_eager", "source": "t.csv", "recorded_column": "ms"}
        )
    assert error_fields(exc) == {"runtime"}
    ok = HardwareProfile.model_validate({**recorded, "source": "t.csv", "recorded_column": "ms"})
    assert ok.runtime is None


def test_profiles_are_frozen() -> None:
    profile = HardwareProfile.model_validate(cpu_fields())
    with pytest.raises(ValidationError):
        profile.threads = 3  # type: ignore[misc]
