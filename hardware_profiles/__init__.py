"""Hardware profiles (validated YAML) and honest on-device latency measurement.

``get_profile("cpu-1t")`` names a device; ``measure_latency(model, example_input, profile)``
times a model there following the profile's runtime and measurement protocol.
"""

from .protocol import LatencyStats, measure, median_ci, quantile, summarize
from .registry import BUILTIN_DIR, get_profile, is_available, list_profiles, load_profile
from .runners import (
    RUNTIME_BUILDERS,
    LatencyMeasurement,
    device_lock,
    measure_latency,
    prepare,
    resolved_threads,
)
from .schema import HardwareProfile, MeasurementProtocol

__all__ = [
    "BUILTIN_DIR",
    "RUNTIME_BUILDERS",
    "HardwareProfile",
    "LatencyMeasurement",
    "LatencyStats",
    "MeasurementProtocol",
    "device_lock",
    "get_profile",
    "is_available",
    "list_profiles",
    "load_profile",
    "measure",
    "measure_latency",
    "median_ci",
    "prepare",
    "quantile",
    "resolved_threads",
    "summarize",
]
