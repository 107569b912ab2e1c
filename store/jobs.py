"""Queries on jobs and evaluations. Callers own the session (see ``store.db.transaction``)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound

from .tables import Evaluation, Job, JobStatus, utcnow


def new_job_id() -> str:
    return uuid.uuid4().hex


def create_job(session: Session, spec: dict[str, Any]) -> Job:
    job = Job(
        id=new_job_id(),
        supernet=spec["supernet"],
        device=spec["device"],
        strategy=spec["strategy"],
        seed=spec["seed"],
        budget=spec["budget"]["evaluations"],
        spec=spec,
        status=JobStatus.queued,
        evaluations_done=0,
        front_size=0,
        cancel_requested=False,
        attempts=0,
        eval_seconds=0.0,
        run_seconds=0.0,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str, *, lock: bool = False) -> Job:
    query = select(Job).where(Job.id == job_id)
    if lock:
        query = query.with_for_update()
    job = session.scalars(query).one_or_none()
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    return job


def list_jobs(
    session: Session, *, offset: int, limit: int, status: JobStatus | None = None
) -> tuple[list[Job], int]:
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    query = query.order_by(Job.created_at.desc(), Job.id).offset(offset).limit(limit)
    rows = session.scalars(query)
    return list(rows), total


def claim_job(session: Session, job_id: str, worker_id: str, *, stale_after_s: float) -> Job | None:
    """Mark a job running for ``worker_id`` if nobody else holds a live lease on it.

    The row lock makes two workers racing for the same job serialise here; the loser sees a
    fresh heartbeat and backs off. A finished job is never claimed again.
    """
    job = get_job(session, job_id, lock=True)
    now = utcnow()
    if job.status.finished:
        return None
    if (
        job.status == JobStatus.running
        and job.worker_id != worker_id
        and _alive(job, now, stale_after_s)
    ):
        return None
    if job.cancel_requested:
        _finish(job, JobStatus.cancelled, now, message="cancelled before it started")
        return None
    job.status, job.worker_id, job.heartbeat_at = JobStatus.running, worker_id, now
    job.attempts += 1
    job.started_at = job.started_at or now
    return job


def _alive(job: Job, now: datetime, stale_after_s: float) -> bool:
    beat = job.heartbeat_at
    if beat is None:
        return False
    if beat.tzinfo is None:  # SQLite returns naive datetimes
        beat = beat.replace(tzinfo=now.tzinfo)
    return now - beat < timedelta(seconds=stale_after_s)


def stale_jobs(
    session: Session, *, stale_after_s: float, devices: list[str] | None = None
) -> list[Job]:
    """Unfinished jobs not touched for ``stale_after_s``.

    For a running job ``heartbeat_at`` is its worker's last heartbeat; for a queued job it is
    when it was last (re-)published, so a job waiting behind another is not re-sent often.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    query = select(Job).where(
        Job.status.in_([JobStatus.queued, JobStatus.running]),
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at <= cutoff),
    )
    if devices:
        query = query.where(Job.device.in_(devices))
    return list(session.scalars(query.order_by(Job.created_at)))


def heartbeat(session: Session, job_id: str, worker_id: str) -> bool:
    """Refresh the lease; False when the job was taken over or cancellation was asked."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.running)
        .values(heartbeat_at=utcnow())
        .returning(Job.cancel_requested)
    ).first()
    return result is not None and not result[0]


def requeue(job: Job, message: str) -> None:
    """Put a job back in the queue (its worker died or stopped); it resumes from storage."""
    job.status, job.worker_id, job.heartbeat_at, job.message = (
        JobStatus.queued,
        None,
        utcnow(),
        message,
    )


def request_cancel(session: Session, job_id: str) -> Job:
    job = get_job(session, job_id, lock=True)
    if job.status.finished:
        raise Conflict(f"job {job_id} already {job.status.value}")
    job.cancel_requested = True
    if job.status == JobStatus.queued:
        _finish(job, JobStatus.cancelled, utcnow(), message="cancelled while queued")
    return job


def finish_job(
    session: Session,
    job_id: str,
    status: JobStatus,
    *,
    message: str | None = None,
    error: str | None = None,
) -> Job:
    job = get_job(session, job_id, lock=True)
    _finish(job, status, utcnow(), message=message, error=error)
    return job


def _finish(
    job: Job,
    status: JobStatus,
    now: datetime,
    *,
    message: str | None = None,
    error: str | None = None,
) -> None:
    job.status, job.finished_at = status, now
    job.message = message if message is not None else job.message
    job.error = error


def add_evaluation(
    session: Session,
    job: Job,
    *,
    subnet_id: str,
    arch: dict[str, Any],
    metrics: dict[str, float],
    details: dict[str, Any],
    feasible: bool,
    seconds: float,
) -> Evaluation:
    evaluation = Evaluation(
        job_id=job.id,
        seq=job.evaluations_done,
        subnet_id=subnet_id,
        arch=arch,
        metrics=metrics,
        details=details,
        feasible=feasible,
        on_front=False,
        seconds=seconds,
        created_at=utcnow(),
    )
    session.add(evaluation)
    job.evaluations_done += 1
    job.eval_seconds += seconds
    job.heartbeat_at = utcnow()
    session.flush()
    return evaluation


def list_evaluations(
    session: Session,
    job_id: str,
    *,
    offset: int = 0,
    limit: int | None = None,
    front_only: bool = False,
) -> tuple[list[Evaluation], int]:
    query = select(Evaluation).where(Evaluation.job_id == job_id)
    if front_only:
        query = query.where(Evaluation.on_front.is_(True))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    query = query.order_by(Evaluation.seq).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query)), total


def get_evaluation(session: Session, job_id: str, subnet_id: str) -> Evaluation:
    evaluation = session.scalars(
        select(Evaluation).where(Evaluation.job_id == job_id, Evaluation.subnet_id == subnet_id)
    ).one_or_none()
    if evaluation is None:
        raise NotFound(f"sub-network {subnet_id!r} was not measured in job {job_id}")
    return evaluation


def set_front(session: Session, job_id: str, front_ids: list[int]) -> None:
    session.execute(
        update(Evaluation)
        .where(Evaluation.job_id == job_id)
        .values(on_front=Evaluation.id.in_(front_ids) if front_ids else False)
    )
