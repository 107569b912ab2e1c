"""Measures one sub-network for real: quality on validation data, latency on this device."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import HwnasError, InvalidInput, PluginError
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
        metrics, time the supernet's ``timing_module`` (same kernels, no recalibration).
        An error that is not hwnas's own is noted with the step it came from (a plugin's
        shape error otherwise names only torch's frames)."""
        started = time.perf_counter()
        supernet, batch = self.supernet, self.profile.batch_size
        with _step("counting MACs and params of", supernet, arch):
            complexity = self._complexity(arch)  # first: an invalid architecture fails at once
        if self.quality:
            with _step("extracting", supernet, arch):
                module = supernet.extract(arch)
            with _step("evaluating on the validation data", supernet, arch):
                quality = supernet.evaluate(arch, module)
            _check_metrics(supernet, quality)
        else:
            with _step("extracting (timing_module)", supernet, arch):
                module, quality = supernet.timing_module(arch), {}
        with _step(f"timing, on example_input of batch {batch},", supernet, arch):
            example = supernet.example_input(arch, batch)
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


def _check_metrics(supernet: Supernet, quality: dict[str, float]) -> None:
    """A plugin's ``evaluate`` must give the metrics its class declares: a job naming one
    it left out failed later, saying only that the objective was missing."""
    missing = [name for name in supernet.metrics if name not in quality]
    if missing:
        raise PluginError(
            f"{supernet.name}: evaluate() returned {sorted(quality)}, but the class declares "
            f"metrics {list(supernet.metrics)}; missing: {', '.join(missing)}"
        )


@contextmanager
def _step(doing: str, supernet: Supernet, arch: Arch) -> Iterator[None]:
    try:
        yield
    except HwnasError:
        raise  # says what it is about already
    except Exception as exc:
        try:
            which = supernet.encode(arch)
        except Exception:  # the architecture itself may be what failed
            which = repr(arch)
        exc.add_note(f"while {doing} sub-network {which} of {supernet.name}")
        raise


def _json_ready(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
        for k, v in values.items()
    }
