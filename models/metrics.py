"""Metrics a job can optimise or constrain, and the direction each one improves in."""

from __future__ import annotations

from models.base import Supernet

#: Metrics every supernet has: measured latency and counted complexity.
COMMON_METRICS: dict[str, str] = {
    "latency_ms": "min",
    "macs": "min",
    "params": "min",
    "model_size_mb": "min",
}
#: Metrics counted of a sub-network without running it (``Supernet.complexity``).
COUNTED_METRICS: frozenset[str] = frozenset({"macs", "params", "model_size_mb"})
#: Direction of metrics supernets report from ``evaluate`` (unknown ones default to max).
QUALITY_DIRECTIONS: dict[str, str] = {"accuracy": "max", "loss": "min", "error": "min"}
#: The values a metric can take, (lowest, highest; None: unbounded): a constraint outside
#: them can be met by no sub-network. A plugin's own metrics have none.
METRIC_RANGES: dict[str, tuple[float, float | None]] = {
    "accuracy": (0.0, 1.0),
    **{name: (0.0, None) for name in ("latency_ms", "macs", "params", "model_size_mb")},
}
#: Metrics that depend on the device measured on. The others (quality on the validation data,
#: counted complexity) are the same for a sub-network on every device.
DEVICE_METRICS: frozenset[str] = frozenset({"latency_ms"})


def device_independent(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics of a measurement that hold on any device."""
    return {name: value for name, value in metrics.items() if name not in DEVICE_METRICS}


def metrics_of(supernet: Supernet) -> dict[str, str]:
    """Every metric an evaluation on ``supernet`` records, with its natural direction."""
    quality = {name: QUALITY_DIRECTIONS.get(name, "max") for name in supernet.metrics}
    if supernet.recorded:  # a table gives quality and latency only
        return {**quality, "latency_ms": "min"}
    return {**quality, **COMMON_METRICS}
