"""A search job's warm start: what earlier jobs on its supernet and device measured, copied
into the job, and the sub-networks whose measurement failed in them, added to its spec's
failures (``workers.runner`` calls it in the transaction that holds the job's row).

Earlier measurements join the job's evaluations (``details.reused_from`` names the job that
measured them, ``seconds`` is 0) and the strategy is told them before its first ask, so it
neither measures them again nor ignores what they show. Only measurements holding every
metric the job's objectives and constraints need, accuracy measured with the same weights
and validation data (``measured_with``), and a latency not timed on a busy device
(``busy_device.noisy``) are taken. The failures (``failures.shared``) are told as failed:
never proposed, and linas learns from them which sub-networks fail; they do not count
against the job's ``budget.failures``. One in ``failures.RETRY_ONE_IN`` of them, and those
``failures.SHARED_JOBS`` or more jobs old, are left for the job to measure again if its
search proposes them (``store.job_keys.RETRYING``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from hardware_profiles import HardwareProfile
from search import Bound
from store import evaluations as eq
from store import job_keys
from store import prior as pq
from store.front import constraints_of, front_of_metrics
from store.tables import Evaluation, Job

from . import busy_device, failures


@dataclass(frozen=True)
class WarmStart:
    """What a warm start gave a job."""

    #: The job's evaluations: the copies, or what an earlier run of it had stored.
    stored: list[Evaluation]
    #: Sub-networks passed over: their latency was timed on a busy device.
    passed_over: int
    #: The job's spec, with the failures taken (``store.job_keys.FAILED``) and left to measure
    #: again (``store.job_keys.RETRYING``).
    spec: dict[str, Any]
    #: Measurements of the pair left out for what they were made with, and why
    #: (``store.prior.NotAlike``).
    not_alike: pq.NotAlike = field(default_factory=pq.NotAlike)


def copy_earlier(
    session: Session,
    job: Job,
    spec: dict[str, Any],
    limit: int,
    profile: HardwareProfile,
    *,
    quality: bool,
    quality_metrics: Collection[str],
    earlier_codes: Collection[str | None] = (),
) -> WarmStart:
    """Copy at most ``limit`` earlier measurements of the job's supernet on its device
    (``profile``) into ``job`` (its row locked by the caller), and the failures of earlier
    jobs into its spec; ``quality``: the job evaluates quality metrics (a job measuring
    latency only takes no failure of a step it never runs); ``quality_metrics``: the
    supernet's (``store.prior.prior_failures``); ``earlier_codes``: the forms an earlier
    hwnas gave its code (``store.prior.measuring_alike``'s ``earlier``)."""
    constraints = constraints_of(spec)
    needed = set(spec["objectives"]) | set(constraints)
    noisy: set[str] = set()

    def usable(evaluation: Evaluation) -> bool:
        if not needed <= set(evaluation.metrics):
            return False
        if "latency_ms" in needed and busy_device.noisy(evaluation, profile):
            noisy.add(evaluation.subnet_id)
            return False
        return True

    alike = measured_alike(job.id, spec)
    not_alike = pq.NotAlike()
    jobs = pq.measuring_alike(  # read once, for both
        session, **alike, not_alike=not_alike, earlier=earlier_codes
    )
    prior = pq.prior_evaluations(session, **alike, limit=limit, usable=usable, jobs=jobs)
    eq.add_reused_evaluations(session, job, prior, constraints)
    stored, _ = eq.list_evaluations(session, job.id)
    _set_progress(job, [e.metrics for e in stored], spec["objectives"], constraints)
    listed = job.spec.get(job_keys.FAILED, [])  # by a run that died before measuring
    earlier = pq.prior_failures(
        session, **alike, limit=min(limit, failures.SHARED_MAX), quality=quality, jobs=jobs,
        quality_metrics=quality_metrics,
        skip={e.subnet_id for e in stored} | {e["subnet_id"] for e in listed}
        | set(job.spec.get(job_keys.RETRYING, {})),  # an earlier run's choices stand
    )  # fmt: skip
    if earlier:
        retry = failures.to_retry(job.id, earlier)
        taken = [e for e in earlier if e["subnet_id"] not in retry]
        retrying = {**job.spec.get(job_keys.RETRYING, {}), **retry}  # and an earlier run's
        job.spec = {
            **job.spec,
            job_keys.FAILED: [*failures.shared(taken), *listed],
            job_keys.RETRYING: retrying,
        }
    kept = {key: job.spec[key] for key in (job_keys.FAILED, job_keys.RETRYING) if key in job.spec}
    passed_over = len(noisy - {e.subnet_id for e in stored})
    return WarmStart(stored, passed_over, {**spec, **kept}, not_alike)


def earlier_measurements(
    session: Session, job_id: str, spec: dict[str, Any], limit: int, **where: Any
) -> list[Evaluation]:
    """Other jobs' measurements of the job's supernet, accuracy on its validation data
    (``store.prior.prior_evaluations``; ``where``: its device, time and usability filters)."""
    return pq.prior_evaluations(session, **measured_alike(job_id, spec), limit=limit, **where)


def measured_alike(job_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """What ``store.prior.prior_evaluations`` and ``prior_failures`` take to find other jobs
    that measured the job's supernet as it does."""
    return {
        "supernet": spec["supernet"],
        "device": spec["device"],
        "validation_data": spec.get("validation_data"),
        "measured_with": spec.get(job_keys.MEASURED_WITH),
        "measured_code": spec.get(job_keys.MEASURED_CODE),
        "exclude_job": job_id,
        "submitted_by": spec.get(job_keys.REUSES_OF),  # None: every key's jobs
    }


def _set_progress(
    job: Job,
    metrics: list[dict[str, float]],
    objectives: dict[str, str],
    constraints: dict[str, Bound],
) -> None:
    """Set the job's front size and hypervolume from its evaluations' metrics (in order)."""
    front, job.hypervolume = front_of_metrics(metrics, objectives, constraints)
    job.front_size = len(front)
