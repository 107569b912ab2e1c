"""Measures one sub-network for real: quality on validation data, latency on this device."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import InvalidInput
from hardware_profiles import HardwareProfile, measure_latency
from models.base import Arch, Supernet
from models.recorded import RecordedSupernet

BYTES_PER_PARAM = 4  # float32 weights


@dataclass(frozen=True)
class Measurement:
    """What one evaluation produced; ``details`` carries provenance and spread."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class SubnetEvaluator:
    """Evaluates architectures of one supernet on one hardware profile."""

    def __init__(self, supernet: Supernet, profile: HardwareProfile, quality: bool = True) -> None:
        """``quality``: evaluate the supernet's quality metrics (accuracy) too; a job whose
        objectives and constraints name none skips them, and their validation data, and a
        calibration measures latency only."""
        self.supernet = supernet
        self.profile = profile
        self.quality = quality

    def measure(self, arch: Arch) -> Measurement:
        """Measure ``arch``: for real, or by table lookup for a recorded supernet."""
        if isinstance(self.supernet, RecordedSupernet):
            return self._look_up(self.supernet, arch, quality=self.quality)
        return self._run(arch)

    def _look_up(
        self, supernet: RecordedSupernet, arch: Arch, *, quality: bool = True
    ) -> Measurement:
        started = time.perf_counter()
        profile = self.profile
        if profile.recorded_column is None or profile.source is None:
            raise InvalidInput(f"device {profile.id!r} has no recorded latencies", field="device")
        latency = supernet.recorded_latency(arch, profile.recorded_column, profile.source)
        if profile.simulated_delay_ms:
            time.sleep(profile.simulated_delay_ms / 1000.0)  # stands in for a remote device
        metrics = {**(supernet.evaluate(arch) if quality else {}), "latency_ms": latency}
        details = {
            "latency": {
                "median_ms": latency,
                "provenance": "recorded",
                "profile_id": profile.id,
                "source": profile.source,
                "column": profile.recorded_column,
            }
        }
        return Measurement(metrics, details, time.perf_counter() - started)

    def _run(self, arch: Arch) -> Measurement:
        """Extract (BatchNorm recalibrated), evaluate and time ``arch``; without quality
        metrics, time the supernet's ``timing_module`` (same kernels, no recalibration)."""
        started = time.perf_counter()
        complexity = self._complexity(arch)  # first: an invalid architecture fails at once
        if self.quality:
            module = self.supernet.extract(arch)
            quality = self.supernet.evaluate(arch, module)
        else:
            module, quality = self.supernet.timing_module(arch), {}
        example = self.supernet.example_input(arch, self.profile.batch_size)
        latency = measure_latency(module, example, self.profile)
        metrics = {**quality, "latency_ms": latency.median_ms, **complexity}
        details = {"latency": _json_ready(asdict(latency))}
        return Measurement(metrics, details, time.perf_counter() - started)

    def _complexity(self, arch: Arch) -> dict[str, float]:
        complexity = self.supernet.complexity(arch)
        return {
            "macs": float(complexity.macs),
            "params": float(complexity.params),
            "model_size_mb": complexity.params * BYTES_PER_PARAM / 1e6,
        }


def _json_ready(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
        for k, v in values.items()
    }
