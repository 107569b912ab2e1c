"""Queries on a job's evaluations: recording a measurement under the job's lease, copying
earlier jobs' (a warm start), reading them back, marking its front. Callers own the session
(see ``store.db.transaction``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, false, func, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from core.errors import NotFound, shown
from search import Bound, is_feasible

from .job_keys import FAILED, REUSED_FROM
from .jobs import JOBS, dialect_of, find_job
from .tables import Evaluation, Job, JobStatus, utcnow

EVALUATIONS = cast(Table, Evaluation.__table__)


def add_reused_evaluations(
    session: Session, job: Job, copies: Sequence[Evaluation], constraints: dict[str, Bound]
) -> None:
    """Store evaluations copied from earlier jobs (warm start), in one flush: not measured
    here, so they count as reused and took no evaluation time; ``details.reused_from``
    names the job that measured each. Measured ones: ``record_evaluation``."""
    now, first = utcnow(), job.evaluations_done + job.evaluations_reused
    rows = [
        {
            "job_id": job.id,
            "seq": first + k,
            "subnet_id": original.subnet_id,
            "arch": original.arch,
            "metrics": original.metrics,
            "details": {**original.details, REUSED_FROM: original.job_id},
            "feasible": is_feasible(original.metrics, constraints),
            "on_front": False,
            "reused": True,
            "seconds": 0.0,
            "created_at": now,
        }
        for k, original in enumerate(copies)
    ]
    if rows:  # one executemany, not an ORM object each (2,000: 1.3 s, scale audit 33)
        session.execute(_INSERT_EVALUATION, rows)
    job.evaluations_reused += len(copies)
    job.heartbeat_at = now
    session.flush()


# A running job's next evaluation, for the worker holding its lease: the UPDATE takes the
# row lock and checks the lease in one statement (its WHERE is re-checked under the lock) and
# returns what the INSERT needs; no ORM objects. On PostgreSQL both run as one statement.
_BOOK_EVALUATION = (
    update(JOBS)
    .where(
        JOBS.c.id == bindparam("b_job_id"),
        JOBS.c.worker_id == bindparam("b_worker_id"),
        JOBS.c.status == JobStatus.running,
        JOBS.c.evaluations_done == bindparam("b_done"),
    )
    .values(
        evaluations_done=JOBS.c.evaluations_done + 1,
        eval_seconds=JOBS.c.eval_seconds + bindparam("b_seconds"),
        run_seconds=JOBS.c.run_seconds + bindparam("b_run_seconds"),
        heartbeat_at=bindparam("b_now"),
        front_size=bindparam("b_front_size"),
        hypervolume=bindparam("b_hypervolume"),
    )
    .returning(JOBS.c.cancel_requested, JOBS.c.evaluations_done, JOBS.c.evaluations_reused)
)
_INSERT_EVALUATION = insert(EVALUATIONS)
_EVALUATION_VALUES = ("subnet_id", "arch", "metrics", "details", "feasible")
_BOOKED = _BOOK_EVALUATION.cte("booked")
# PostgreSQL: both in one statement (a data-modifying CTE), atomic by itself.
_RECORD_EVALUATION_PG = select(_BOOKED.c.cancel_requested).add_cte(
    insert(EVALUATIONS)
    .from_select(
        ["job_id", "seq", *_EVALUATION_VALUES, "on_front", "reused", "seconds", "created_at"],
        select(
            bindparam("b_job_id", type_=EVALUATIONS.c.job_id.type),
            _BOOKED.c.evaluations_done - 1 + _BOOKED.c.evaluations_reused,
            *[bindparam(f"b_{c}", type_=EVALUATIONS.c[c].type) for c in _EVALUATION_VALUES],
            false(),
            false(),
            bindparam("b_seconds", type_=EVALUATIONS.c.seconds.type),
            bindparam("b_now", type_=EVALUATIONS.c.created_at.type),
        ),
    )
    .cte("added")
)


def record_evaluation(
    connection: Session | Connection,
    job_id: str,
    worker_id: str,
    *,
    done: int,
    subnet_id: str,
    arch: dict[str, Any],
    metrics: dict[str, float],
    details: dict[str, Any],
    feasible: bool,
    seconds: float,
    front_size: int,
    hypervolume: float | None,
    run_seconds: float = 0.0,
) -> bool | None:
    """Store one measured evaluation of a job that ``worker_id`` runs, with the job's new
    progress (``front_size``, ``hypervolume``: the caller's summary including this one) and
    ``run_seconds`` more of run time (the run's wall time since it last booked some).

    Returns None, storing nothing, when the job is no longer running under this worker
    (taken over, finished or deleted); else whether cancellation has been asked. On
    PostgreSQL this is one statement, atomic by itself (the caller may run it in autocommit:
    one round trip); elsewhere two, which the caller runs in a transaction.

    ``done``: the job's measured evaluations before this one, as the caller counts them.
    The write applies only at that count, so a retry after a lost commit acknowledgement
    (the connection dropped after the database committed) does not store the evaluation a
    second time: it finds the count one higher and answers as the first write did.
    """
    params = {
        "b_job_id": job_id,
        "b_worker_id": worker_id,
        "b_done": done,
        "b_seconds": seconds,
        "b_run_seconds": run_seconds,
        "b_now": utcnow(),
        "b_front_size": front_size,
        "b_hypervolume": hypervolume,
        "b_subnet_id": subnet_id,
        "b_arch": arch,
        "b_metrics": metrics,
        "b_details": details,
        "b_feasible": feasible,
    }
    if dialect_of(connection) == "postgresql":
        cancel_requested = connection.execute(_RECORD_EVALUATION_PG, params).scalar()
        if cancel_requested is None:
            return _already_recorded(connection, job_id, worker_id, done)
        return bool(cancel_requested)
    booked = connection.execute(_BOOK_EVALUATION, params).first()
    if booked is None:
        return _already_recorded(connection, job_id, worker_id, done)
    cancel_requested, measured, reused = booked  # counts with this evaluation
    connection.execute(
        _INSERT_EVALUATION,
        {
            "job_id": job_id,
            "seq": measured - 1 + reused,
            **{c: params[f"b_{c}"] for c in _EVALUATION_VALUES},
            "on_front": False,
            "reused": False,
            "seconds": seconds,
            "created_at": params["b_now"],
        },
    )
    return bool(cancel_requested)


def _already_recorded(
    connection: Session | Connection, job_id: str, worker_id: str, done: int
) -> bool | None:
    """After a refused ``record_evaluation``: whether cancellation was asked if the job is
    still this worker's and counts ``done + 1`` (this evaluation was stored by an earlier
    try), None otherwise (the lease is gone)."""
    row = find_job(connection, job_id)
    if (
        row is None
        or row.worker_id != worker_id
        or row.status is not JobStatus.running
        or row.evaluations_done != done + 1
    ):
        return None
    return bool(row.cancel_requested)


def list_evaluations(
    session: Session,
    job_id: str,
    *,
    offset: int = 0,
    limit: int | None = None,
    front_only: bool = False,
    ids: Collection[int] | None = None,
) -> tuple[list[Evaluation], int]:
    """A page of the job's evaluations in the order measured, and how many there are; only
    those its stored front holds (``front_only``), or those of ``ids``.

    A page of all of them starts at ``seq`` ``offset``: a job's ``seq`` runs 0, 1, ... with
    no gap (``record_evaluation``, ``add_reused_evaluations``; nothing deletes one), so it
    is the same page as OFFSET gives, read from the index (an OFFSET of 49,900 sorted the
    job's 50,000 rows on disk: 265 ms, 0.1 ms so; scale audit 33)."""
    query = select(Evaluation).where(Evaluation.job_id == job_id)
    if front_only:
        query = query.where(Evaluation.on_front.is_(True))
    if ids is not None:
        query = query.where(Evaluation.id.in_(ids))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if front_only or ids is not None:
        query = query.order_by(Evaluation.seq).offset(offset)
    else:
        query = query.where(Evaluation.seq >= offset).order_by(Evaluation.seq)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query)), total


def evaluation_metrics(
    session: Session, job_id: str, after_seq: int = -1
) -> list[tuple[int, int, dict[str, Any]]]:
    """(id, seq, metrics) of the job's evaluations after ``after_seq``, in order: what its
    front is computed from, without reading (and decoding) their architectures and
    details."""
    query = (
        select(Evaluation.id, Evaluation.seq, Evaluation.metrics)
        .where(Evaluation.job_id == job_id, Evaluation.seq > after_seq)
        .order_by(Evaluation.seq)
    )
    return [(row[0], row[1], row[2]) for row in session.execute(query)]


def get_evaluation(session: Session, job_id: str, subnet_id: str) -> Evaluation:
    evaluation = session.scalars(
        select(Evaluation).where(Evaluation.job_id == job_id, Evaluation.subnet_id == subnet_id)
    ).one_or_none()
    if evaluation is None:
        raise NotFound(
            f"sub-network {shown(subnet_id)} was not measured in job {job_id}"
            f"{_failed_said(session, job_id, subnet_id)}"
        )
    return evaluation


def _failed_said(session: Session, job_id: str, subnet_id: str) -> str:
    """Where the job lists the sub-network as failed (``FAILED``): how, in its own words
    (plugin audit 32: an export of it said only "was not measured")."""
    job = session.get(Job, job_id)
    for failed in [] if job is None else job.spec.get(FAILED, []):
        if failed.get("subnet_id") == subnet_id:
            where = failed.get(REUSED_FROM)
            in_job = f" (in job {where}, which this one's warm start took it from)" if where else ""
            return f": its measurement failed{in_job}: {failed.get('error', '')}".rstrip(": ")
    return ""


def set_front(session: Session, job_id: str, front_ids: list[int]) -> int:
    """Mark the job's front; how many rows it changed: only those whose flag changes are
    written (every row of a 50,000-evaluation job was: 4.6 s and 151 MB of WAL on
    PostgreSQL, scale audit 33)."""
    on_front = Evaluation.id.in_(front_ids) if front_ids else false()
    changed = session.execute(
        update(Evaluation)
        .where(Evaluation.job_id == job_id, Evaluation.on_front.is_distinct_from(on_front))
        .values(on_front=on_front)
    )
    return cast(CursorResult[Any], changed).rowcount
