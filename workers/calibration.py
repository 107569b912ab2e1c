"""Calibration: fit and store a device's latency predictor; hand stored ones to searches.

A calibration is a job (``JobKind.calibration``, queued by ``POST
/v1/devices/{id}/calibrations``) on the device's queue, run by a worker of that device like a
search (``JobRunner._calibrate``: lease, heartbeat, each measurement committed as it
completes, a resumed job measures only what is missing): it measures the seeded uniform
sample of ``hardware_profiles.latency_sample`` with a latency-only ``SubnetEvaluator`` (the
device's real protocol, one measurement per device at a time; a table lookup on recorded
devices), then ``fit_predictor`` and ``save_predictor`` store the pair's next version.
``latency_predictor_for`` hands the newest stored version of a (supernet, device) pair that
is good enough to steer a search (``trusted_as_prior``) to a search as
``predict_latency(archs) -> ndarray``, of those calibrated with the supernet's code as it is
(a plugin's code fingerprint, recorded with each version: ``store.predictors.MEASURED_CODE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.errors import InvalidInput
from hardware_profiles.latency_features import FloatArray
from hardware_profiles.latency_predictor import (
    ArchEncoder,
    LatencyPredictor,
    fit_latency_predictor,
    trusted_as_prior,
)
from models.base import Arch
from models.registry import get_supernet
from store import job_keys
from store import predictors as q
from store.db import transaction
from store.tables import Evaluation, LatencyPredictorRecord


def fit_predictor(spec: dict[str, Any], measured: Sequence[Evaluation]) -> LatencyPredictor:
    """Fit the calibration job's predictor kind on its ``measured`` evaluations (in sample
    order); ``metrics`` of the result is its cross-validated error."""
    encoder = ArchEncoder.from_supernet(get_supernet(spec["supernet"]))
    latencies = [e.metrics["latency_ms"] for e in measured]
    return fit_latency_predictor(
        encoder,
        [e.arch for e in measured],
        latencies,
        kind=spec["predictor_kind"],
        seed=spec["seed"],
    )


def save_predictor(
    session: Session,
    job_id: str,
    spec: dict[str, Any],
    measured: Sequence[Evaluation],
    predictor: LatencyPredictor,
    fit_seconds: float,
    failed: Sequence[dict[str, Any]] = (),
) -> LatencyPredictorRecord:
    """Store ``predictor`` as the pair's next version, with the measurements it was fitted
    on (sub-network, latency, spread and provenance) and the sample's sub-networks whose
    measurement failed, left out of the fit (``failed``: the job's ``store.job_keys.FAILED``
    entries); ``seconds``: measuring plus fitting."""
    left_out = [{"subnet_id": e["subnet_id"], "error": e["error"]} for e in failed]
    subnets = [
        {"subnet_id": e.subnet_id, "latency_ms": e.metrics["latency_ms"],
         "provenance": "measured", **e.details.get("latency", {})}
        for e in measured
    ]  # fmt: skip
    return q.add_predictor(
        session,
        supernet=spec["supernet"],
        device=spec["device"],
        payload=predictor.to_payload(),
        measurements={
            "subnets": subnets,
            "failed": left_out,
            q.MEASURED_CODE: spec.get(job_keys.MEASURED_CODE),
        },
        seed=spec["seed"],
        seconds=sum(e.seconds for e in measured) + fit_seconds,
        job_id=job_id,
    )


def summary(record: LatencyPredictorRecord) -> str:
    """One line on a stored predictor for its job's message."""
    m = record.metrics
    method = m.get("method", "held-out")
    return (
        f"latency predictor v{record.version} ({record.kind}) of {record.supernet} on "
        f"{record.device} stored: {m.get('within_10pct', 0.0):.0%} of {method} predictions "
        f"within 10 %, Spearman {m.get('spearman', 0.0):.3f}"
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
    #: Newer versions of the pair passed over: their cross-validation was too poor.
    passed_over: tuple[int, ...] = ()

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
    """The newest stored predictor of (supernet, device) that ``trusted_as_prior``, ready to
    call, with the newer ones it passed over; the newest of all when none is (the caller
    says why it is not used); None if the pair was never calibrated. A poor calibration
    stored after a good one no longer turns the screening off. Only versions that timed the
    supernet's code as it is now count (``InvalidInput`` where there is none)."""
    with transaction(factory) as session:
        if not q.predictor_versions(session, supernet_name, device_id):
            return None  # never calibrated: nothing built for it
    supernet = get_supernet(supernet_name)
    codes = supernet.code_fingerprints()
    with transaction(factory) as session:
        versions = q.predictor_versions(session, supernet_name, device_id, codes)
        if not versions:
            raise InvalidInput(
                f"every latency predictor stored for {supernet_name} on {device_id} was "
                "calibrated with other code of it than it has now (its version, or the "
                "text of its source, changed: docs/plugins.md): calibrate it again"
            )
        trusted = [version for version, metrics in versions if trusted_as_prior(metrics)]
        version = trusted[0] if trusted else versions[0][0]
        payload = q.get_predictor(session, supernet_name, device_id, version).payload
    predictor = LatencyPredictor.from_payload(payload)
    encoder = ArchEncoder.from_supernet(supernet)
    encoder.check_spec(predictor.features)
    newer = tuple(v for v, _ in versions if v > version)
    return PredictedLatency(supernet_name, device_id, version, predictor, encoder, newer)
