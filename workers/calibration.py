"""Calibration: measure sampled sub-networks on a device, fit a latency predictor, store it.

``calibrate`` is the whole job (sample -> measure with the device's real protocol -> fit and
cross-validate -> store the next version); ``latency_predictor_for`` hands the latest stored
version of a (supernet, device) pair to a search as ``predict_latency(archs) -> ndarray``.

Live devices are measured with ``hardware_profiles.measure_latency`` (the profile's runtime
and protocol, one measurement per device at a time, so a calibration and a running job never
time on the same device at once); recorded devices are looked up in their table, as jobs do.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.errors import InvalidInput
from hardware_profiles import HardwareProfile, measure_latency
from hardware_profiles.configured import device_profile
from hardware_profiles.latency_features import FloatArray
from hardware_profiles.latency_predictor import (
    DEFAULT_KIND,
    ArchEncoder,
    LatencyPredictor,
    fit_latency_predictor,
)
from models.base import Arch, Supernet
from models.recorded import RecordedSupernet
from models.registry import get_supernet
from store import predictors as q
from store.db import transaction
from store.tables import LatencyPredictorRecord

MAX_SAMPLES = 200
# A stored predictor steers a search only if its own cross-validation says it ranks and
# scales latencies well enough (benchmarks/latency_prior.py: a predictor with held-out rank
# correlation below 0 made the screened proposals less feasible than uniform ones).
PRIOR_MIN_SPEARMAN = 0.8
PRIOR_MIN_WITHIN_10PCT = 0.5
# Draws per wanted architecture before giving up on finding new ones (tiny spaces).
_DRAWS_PER_SAMPLE = 50


def calibrate(
    factory: sessionmaker[Session],
    supernet_name: str,
    device_id: str,
    *,
    n_samples: int,
    seed: int,
    kind: str = DEFAULT_KIND,
) -> LatencyPredictorRecord:
    """Measure ``n_samples`` sampled sub-networks on ``device_id``, fit, store a new version."""
    supernet, profile = get_supernet(supernet_name), device_profile(device_id)
    check_pair(supernet, profile)
    started = time.perf_counter()
    archs = sample_archs(supernet, n_samples, seed)
    measured = [measure_one(supernet, profile, arch) for arch in archs]
    encoder = ArchEncoder.from_supernet(supernet)
    latencies = [m["latency_ms"] for m in measured]
    predictor = fit_latency_predictor(encoder, archs, latencies, kind=kind, seed=seed)
    with transaction(factory) as session:
        return q.add_predictor(
            session,
            supernet=supernet_name,
            device=device_id,
            payload=predictor.to_payload(),
            measurements={"subnets": measured},
            seed=seed,
            seconds=time.perf_counter() - started,
        )


def check_pair(supernet: Supernet, profile: HardwareProfile) -> None:
    """Raise ``InvalidInput`` unless ``profile`` can give latencies of ``supernet``."""
    if profile.kind == "recorded":
        source = getattr(supernet, "source", None)
        if source != profile.source:
            raise InvalidInput(
                f"device {profile.id!r} is recorded from table {profile.source!r}; supernet "
                f"{supernet.name!r} has no latencies there",
                field="supernet",
            )
    elif supernet.recorded:
        raise InvalidInput(
            f"supernet {supernet.name!r} is recorded (a table): it has no sub-networks to "
            f"measure on live device {profile.id!r}",
            field="supernet",
        )


def sample_archs(supernet: Supernet, n: int, seed: int) -> list[Arch]:
    """``n`` distinct canonical architectures, each gene drawn uniformly (seeded)."""
    if not 1 <= n <= MAX_SAMPLES:
        raise InvalidInput(f"n_samples must be in 1..{MAX_SAMPLES}, got {n}", field="n_samples")
    rng = random.Random(seed)
    space = supernet.space()
    found: dict[str, Arch] = {}
    for _ in range(n * _DRAWS_PER_SAMPLE):
        arch = supernet.canonical({gene: rng.choice(c) for gene, c in space.items()})
        found.setdefault(supernet.encode(arch), arch)
        if len(found) == n:
            return list(found.values())
    raise InvalidInput(
        f"found only {len(found)} distinct architectures of {supernet.name!r}", field="n_samples"
    )


def measure_one(supernet: Supernet, profile: HardwareProfile, arch: Arch) -> dict[str, Any]:
    """Latency of one sub-network on ``profile``, with its provenance and spread."""
    subnet_id = supernet.encode(arch)
    if isinstance(supernet, RecordedSupernet):
        assert profile.recorded_column is not None and profile.source is not None
        latency = supernet.recorded_latency(arch, profile.recorded_column, profile.source)
        if profile.simulated_delay_ms:
            time.sleep(profile.simulated_delay_ms / 1000.0)  # as SubnetEvaluator does
        return {"subnet_id": subnet_id, "latency_ms": latency, "provenance": "recorded"}
    module = supernet.extract(arch)
    stats = measure_latency(module, supernet.example_input(arch, profile.batch_size), profile)
    return {
        "subnet_id": subnet_id,
        "latency_ms": stats.median_ms,
        "iqr_ms": stats.iqr_ms,
        "repeats": stats.repeats,
        "rel_ci": stats.rel_ci,
        "provenance": "measured",
        "runtime": stats.runtime,
    }


def trusted_as_prior(metrics: dict[str, Any]) -> bool:
    """Whether a predictor with these cross-validated ``metrics`` may steer a search."""
    return (
        metrics.get("spearman", 0.0) >= PRIOR_MIN_SPEARMAN
        and metrics.get("within_10pct", 0.0) >= PRIOR_MIN_WITHIN_10PCT
    )


@dataclass(frozen=True)
class PredictedLatency:
    """A stored predictor bound to its supernet: ``predict(archs) -> latency ms`` (predicted).

    ``version`` identifies the stored predictor: label every number it gives as predicted
    by that version (DESIGN.md: a predicted value is never shown as measured).
    """

    supernet: str
    device: str
    version: int
    predictor: LatencyPredictor
    encoder: ArchEncoder

    def __call__(self, archs: Sequence[Arch]) -> FloatArray:
        return self.predictor.predict(self.encoder, archs)

    @property
    def trustworthy(self) -> bool:
        """Whether the cross-validated error of the fit allows steering a search with it."""
        return trusted_as_prior(self.predictor.metrics)

    @property
    def provenance(self) -> dict[str, Any]:
        return {
            "provenance": "predicted",
            "predictor": {"device": self.device, "version": self.version},
            "kind": self.predictor.kind,
        }


def latency_predictor_for(
    factory: sessionmaker[Session], supernet_name: str, device_id: str
) -> PredictedLatency | None:
    """The latest stored predictor of (supernet, device), ready to call; None if none."""
    with transaction(factory) as session:
        record = q.latest_predictor(session, supernet_name, device_id)
        if record is None:
            return None
        version, payload = record.version, record.payload
    predictor = LatencyPredictor.from_payload(payload)
    encoder = ArchEncoder.from_supernet(get_supernet(supernet_name))
    encoder.check_spec(predictor.features)
    return PredictedLatency(supernet_name, device_id, version, predictor, encoder)
