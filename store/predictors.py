"""Queries on stored latency predictors. Callers own the session (``store.db.transaction``).

Versions count up from 1 per (supernet, device); later jobs reuse the newest one good enough
to steer a search (``workers.calibration.latency_predictor_for``).
Two calibrations finishing at the same moment race for the same version number: the unique
constraint rejects the second insert, and ``transaction`` reports it as a ``StorageError``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, defer

from core.errors import NotFound

from .tables import LatencyPredictorRecord, utcnow


def add_predictor(
    session: Session,
    *,
    supernet: str,
    device: str,
    payload: dict[str, Any],
    measurements: dict[str, Any],
    seed: int,
    seconds: float,
    job_id: str | None = None,
) -> LatencyPredictorRecord:
    """Store a fitted predictor (``LatencyPredictor.to_payload()``) as the next version;
    ``job_id``: the calibration job that fitted it."""
    latest = session.scalar(
        select(func.max(LatencyPredictorRecord.version)).where(
            LatencyPredictorRecord.supernet == supernet, LatencyPredictorRecord.device == device
        )
    )
    record = LatencyPredictorRecord(
        supernet=supernet,
        device=device,
        version=(latest or 0) + 1,
        kind=payload["kind"],
        seed=seed,
        n_measurements=payload["n_measurements"],
        metrics=payload["metrics"],
        payload=payload,
        measurements=measurements,
        seconds=seconds,
        created_at=utcnow(),
        job_id=job_id,
    )
    session.add(record)
    session.flush()
    return record


#: The key of a stored predictor's ``measurements`` for the code fingerprint of the supernet
#: its calibration measured with (``Supernet.code_fingerprint``: a plugin's); absent in
#: versions stored before session 30, null for hwnas's own supernets.
MEASURED_CODE = "measured_code"


def predictor_versions(
    session: Session, supernet: str, device: str, codes: Collection[str | None] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """(version, cross-validated metrics) of every version of the pair, newest first;
    ``codes``: only those calibrated with one of these code fingerprints, or that recorded
    none (hwnas's own supernets, versions stored before session 30)."""
    query = (
        select(LatencyPredictorRecord.version, LatencyPredictorRecord.metrics)
        .where(LatencyPredictorRecord.supernet == supernet, LatencyPredictorRecord.device == device)
        .order_by(LatencyPredictorRecord.version.desc())
    )
    if codes is not None:
        recorded = LatencyPredictorRecord.measurements[MEASURED_CODE].as_string()
        alike = [code for code in codes if code is not None]
        query = query.where(or_(recorded.is_(None), recorded.in_(alike)))
    return [(int(version), dict(metrics)) for version, metrics in session.execute(query)]


def get_predictor(
    session: Session, supernet: str, device: str, version: int
) -> LatencyPredictorRecord:
    query = select(LatencyPredictorRecord).where(
        LatencyPredictorRecord.supernet == supernet,
        LatencyPredictorRecord.device == device,
        LatencyPredictorRecord.version == version,
    )
    record = session.scalars(query).one_or_none()
    if record is None:
        raise NotFound(f"no latency predictor version {version} for {supernet!r} on {device!r}")
    return record


def list_predictors(
    session: Session,
    device: str,
    supernet: str | None = None,
    job_id: str | None = None,
    *,
    offset: int = 0,
    limit: int | None = None,
) -> tuple[list[LatencyPredictorRecord], int]:
    """A page of the versions for ``device`` (optionally one supernet, or the one a job
    fitted), newest first per supernet, and how many there are; their ``payload`` is not
    read (a listing shows none of it: scale audit 33, every version's JSON decoded)."""
    query = select(LatencyPredictorRecord).where(LatencyPredictorRecord.device == device)
    if supernet is not None:
        query = query.where(LatencyPredictorRecord.supernet == supernet)
    if job_id is not None:
        query = query.where(LatencyPredictorRecord.job_id == job_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = (LatencyPredictorRecord.supernet, LatencyPredictorRecord.version.desc())
    query = query.options(defer(LatencyPredictorRecord.payload)).order_by(*order).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query)), total
