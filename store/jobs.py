"""Queries on jobs and evaluations. Callers own the session (see ``store.db.transaction``)."""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Table,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult, result_tuple
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable, shown
from search import Bound, is_feasible

from .db import LOCKING_READ
from .tables import Evaluation, Job, JobKind, JobLabel, JobStatus, LatencyPredictorRecord, utcnow

JOBS = cast(Table, Job.__table__)
EVALUATIONS = cast(Table, Evaluation.__table__)
LABELS = cast(Table, JobLabel.__table__)
#: The spec's key for a job's labels, ``{name: value}`` (``JobCreate.labels``), also stored
#: as rows of ``LABELS`` for the listing's filter.
LABELS_KEY = "labels"
# What the API reads: a Core row of the jobs table, with the same attribute names as ``Job``
# (typed columns: enums, JSON, datetimes). Building ORM objects costs ~4x the query itself on
# SQLite, and read paths never change what they read.
JobRow = Row[Any]
# Built once: constructing a statement per call (bind coercion, cache key) costs more than
# running it. Parameters are passed at execution.
_INSERT_JOBS = insert(JOBS)
# Makes rows of the jobs table's columns, as ``select(JOBS)`` gives them, from values.
_JOB_COLUMNS = tuple(JOBS.c.keys())
_job_row = result_tuple(_JOB_COLUMNS)
# PostgreSQL: a batch of new jobs as one statement, whatever its size. The rows travel as one
# JSON array (one text parameter: json.dumps in C, where psycopg would quote every element
# of per-column arrays in Python), which json_populate_recordset turns into rows of the
# table's own type. ``spec`` travels as its own JSON text, a string in that array, cast back
# to ``json`` as a parameter of that type would be: the json type checks its syntax only,
# where decoding its strings would refuse some that it stores (a lone surrogate escape, as
# in a file name that is not UTF-8). One statement commits by itself, so the caller may run
# it in autocommit: one round trip. ON CONFLICT: the same batch sent again (a retry after a
# dropped connection that had committed it) stores nothing twice; ids are random 128-bit.
_SPEC_FROM_TEXT = "(spec #>> '{}')::json"
_INSERT_JOBS_FROM_JSON = text(
    f"INSERT INTO {JOBS.name} ({', '.join(_JOB_COLUMNS)}) SELECT "
    + ", ".join(_SPEC_FROM_TEXT if name == "spec" else name for name in _JOB_COLUMNS)
    + f" FROM json_populate_recordset(NULL::{JOBS.name}, :rows) "
    "ON CONFLICT (id) DO NOTHING"
)
# The same with the batch's labels, where it has any: one statement still (atomic, and
# idempotent: the labels of jobs the first try stored are not inserted again).
_INSERT_LABELS = insert(LABELS)
_INSERT_JOBS_AND_LABELS_FROM_JSON = text(
    "WITH new_jobs AS ("
    + _INSERT_JOBS_FROM_JSON.text
    + f" RETURNING id) INSERT INTO {LABELS.name} (job_id, name, value) "
    f"SELECT l.job_id, l.name, l.value FROM json_populate_recordset(NULL::{LABELS.name}, "
    ":labels) AS l JOIN new_jobs ON new_jobs.id = l.job_id"
)
_READ_JOB = select(JOBS).where(JOBS.c.id == bindparam("job_id"))


def new_job_id() -> str:
    return uuid.uuid4().hex


def create_job(
    session: Session | Connection, spec: dict[str, Any], *, message: str | None = None
) -> JobRow:
    """A queued job. ``heartbeat_at`` of a queued job is when it was (last) published: now,
    since the caller publishes it right after this transaction commits."""
    return create_jobs(session, [(spec, message)])[0]


#: The spec's key for the digest of a keyed submission's request (``create_job_once``).
REQUEST_DIGEST = "request_digest"


def request_digest(asked: Mapping[str, Any]) -> str:
    """A digest of a request's body as sent (JSON data; ``JobCreate`` with what it was not
    given left out: defaults the server fills in may change between its retries),
    whatever the order of its keys."""
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def create_job_once(
    session: Session, spec: dict[str, Any], key: str, digest: str, *, message: str | None = None
) -> tuple[JobRow, bool]:
    """The job that the submission with idempotency key ``key`` (its request's
    ``request_digest``: ``digest``) created, and whether this call created it (a new job
    of ``spec``): a retry of that submission (its answer lost, or a response it could not
    tell from a failure) finds the job the first one stored, where ``create_job`` would
    store a second. ``Conflict`` if the key's job was submitted with another request. Once
    that job is deleted the key is free: the next job with it is new, with a new id."""
    by_key = select(JOBS).where(JOBS.c.idempotency_key == key)
    job = session.execute(by_key).first()  # a retry: a read, no write (SQLite's slot)
    if job is None:
        values = _new_job_values({**spec, REQUEST_DIGEST: digest}, message, _now_as_read(session))
        values["idempotency_key"] = key
        upsert = sqlite_insert if _dialect(session) == "sqlite" else postgresql_insert
        statement = (
            upsert(JOBS)
            .values(values)
            .on_conflict_do_nothing(index_elements=[JOBS.c.idempotency_key])
            .returning(*JOBS.c)
        )
        job = session.execute(statement).first()
        if job is not None:
            labels = values["spec"].get(LABELS_KEY, {})
            if labels:
                rows = [{"job_id": job.id, "name": n, "value": v} for n, v in labels.items()]
                session.execute(_INSERT_LABELS, rows)
            return job, True
        job = session.execute(by_key).first()  # a request with the key stored it meanwhile
        if job is None:  # and its job was deleted since
            raise ServiceUnavailable(
                f"the job of Idempotency-Key {shown(key)} was deleted as this one came: send again"
            )
    if job.spec.get(REQUEST_DIGEST) != digest:
        raise Conflict(
            f"the Idempotency-Key {shown(key)} was sent with another request, which created "
            f"job {job.id}: use a new key for a new job"
        )
    return job, False


def create_jobs(
    connection: Session | Connection, submissions: list[tuple[dict[str, Any], str | None]]
) -> list[JobRow]:
    """``create_job`` for each (spec, message), as one write (``NewJobs.insert``)."""
    return NewJobs(submissions).insert(connection)


class NewJobs:
    """A batch of new queued jobs, one per (spec, message), and their write.

    ``insert`` is one statement on PostgreSQL (``_INSERT_JOBS_FROM_JSON``): the caller may
    run it in autocommit, and may run it again on another connection after a dropped one
    (``store.db.HeldConnectionWriter``): the rows (ids, times) are made at the first call,
    and a second inserts the same ones, or nothing where the first had committed them.
    Elsewhere it is one executemany, which the caller runs in a transaction. (psycopg's
    executemany is a pipeline, but it waits on the socket about 30 times per batch, by
    strace, and each wait gives up the GIL, which the API's busy event loop then holds for
    up to the 5 ms switch interval.)

    The rows are made from the inserted values, equal to what ``read_job`` gives (types and
    time zones included), so ``spec`` must be JSON data (``model_dump(mode="json")``); the
    row holds that same dict. Not read back: INSERT ... RETURNING of a batch is one long
    multi-row statement per batch size, which psycopg converts afresh each time; per job in
    batches of 10-50 it took 2.3-2.9x the time of one cached statement on PostgreSQL,
    1.4-1.6x on SQLite (issue 5).
    """

    def __init__(self, submissions: list[tuple[dict[str, Any], str | None]]) -> None:
        self._submissions = submissions
        self._values: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self._submissions)

    def insert(self, connection: Session | Connection) -> list[JobRow]:
        """Insert the batch; its rows, in the order of the submissions."""
        if self._values is None:
            now = _now_as_read(connection)
            self._values = [_new_job_values(spec, note, now) for spec, note in self._submissions]
        values = self._values
        labels = [
            {"job_id": row["id"], "name": name, "value": value}
            for row in values
            for name, value in row["spec"].get(LABELS_KEY, {}).items()
        ]
        if _dialect(connection) == "postgresql":
            documents = [{**row, "spec": json.dumps(row["spec"])} for row in values]
            rows = json.dumps(documents, default=_json_timestamp)
            if labels:
                connection.execute(
                    _INSERT_JOBS_AND_LABELS_FROM_JSON, {"rows": rows, "labels": json.dumps(labels)}
                )
            else:
                connection.execute(_INSERT_JOBS_FROM_JSON, {"rows": rows})
        else:
            connection.execute(_INSERT_JOBS, values)
            if labels:
                connection.execute(_INSERT_LABELS, labels)
        return [_job_row([row[name] for name in _JOB_COLUMNS]) for row in values]


def _json_timestamp(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()  # with its offset: a timestamptz keeps the instant
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _bind(connection: Session | Connection) -> Connection:
    return connection if isinstance(connection, Connection) else connection.connection()


def _dialect(connection: Session | Connection) -> str:
    return _bind(connection).dialect.name


def _now_as_read(connection: Session | Connection) -> datetime:
    """Now, as a read of a timestamp column gives it back: SQLite keeps no time zone (its
    rows read back naive, in UTC); psycopg answers in the session's ``TimeZone``."""
    now = utcnow()
    bind = _bind(connection)
    if bind.dialect.name == "sqlite":
        return now.replace(tzinfo=None)
    return now.astimezone(bind.connection.driver_connection.info.timezone)  # type: ignore[union-attr]


def _new_job_values(spec: dict[str, Any], message: str | None, now: datetime) -> dict[str, Any]:
    return dict(
        id=new_job_id(),
        kind=JobKind(spec.get("kind", JobKind.search)),
        supernet=spec["supernet"],
        device=spec["device"],
        strategy=spec["strategy"],
        seed=spec["seed"],
        budget=spec["budget"]["evaluations"],
        spec=spec,
        status=JobStatus.queued,
        evaluations_done=0,
        evaluations_reused=0,
        front_size=0,
        cancel_requested=False,
        attempts=0,
        eval_seconds=0.0,
        run_seconds=0.0,
        message=message,
        hypervolume=None,
        error=None,
        worker_id=None,
        heartbeat_at=now,
        created_at=now,
        started_at=None,
        finished_at=None,
        idempotency_key=None,
    )


def get_job(session: Session, job_id: str, *, lock: bool = False) -> Job:
    query = select(Job).where(Job.id == job_id)
    if lock:  # and the row as locked, not as this session loaded it before
        query = query.with_for_update().execution_options(
            populate_existing=True, **{LOCKING_READ: True}
        )
    job = session.scalars(query).one_or_none()
    if job is None:
        raise NotFound(f"job {shown(job_id)} not found")
    return job


def read_job(session: Session | Connection, job_id: str) -> JobRow:
    """The job as a read-only row (the API's reads); ``get_job`` for one to change."""
    row = session.execute(_READ_JOB, {"job_id": job_id}).first()
    if row is None:
        raise NotFound(f"job {shown(job_id)} not found")
    return row


def list_jobs(
    session: Session | Connection,
    *,
    offset: int,
    limit: int,
    status: JobStatus | Collection[JobStatus] | None = None,
    kind: JobKind | None = None,
    after: str | None = None,
    labels: Sequence[tuple[str, str | None]] = (),
) -> tuple[list[JobRow], int]:
    """A page of jobs, newest first (``created_at``, then id), of one ``status`` (or any
    of several) and ``kind`` if given, carrying every one of ``labels`` (name and value, or
    a name alone: any value), and how many match in all. ``after``: a ``listing_cursor`` of
    the last job of the previous page; the page starts after it (``offset`` counts from there):
    the index on ``created_at`` finds it, where a deep ``offset`` walks every row before it,
    and jobs submitted meanwhile, being newer, do not move the pages."""
    start = _from_listing_cursor(after) if after is not None else None  # before any read
    query = select(JOBS)
    if isinstance(status, JobStatus):
        query = query.where(JOBS.c.status == status)
    elif status:
        query = query.where(JOBS.c.status.in_(list(status)))
    if kind is not None:
        query = query.where(JOBS.c.kind == kind)
    for name, value in labels:
        carrying = select(LABELS.c.job_id).where(LABELS.c.name == name)
        if value is not None:
            carrying = carrying.where(LABELS.c.value == value)
        query = query.where(JOBS.c.id.in_(carrying))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if start is not None:
        created_at, job_id = start
        query = query.where(  # (created_at, id) after the cursor's in the listing's order
            JOBS.c.created_at <= created_at,
            or_(JOBS.c.created_at < created_at, JOBS.c.id > job_id),
        )
    query = query.order_by(JOBS.c.created_at.desc(), JOBS.c.id).offset(offset).limit(limit)
    return list(session.execute(query)), total


def listing_cursor(job: JobRow) -> str:
    """Where ``list_jobs`` goes on after ``job`` (its ``after``): an opaque string (the
    job's creation time in UTC, and its id)."""
    said = json.dumps([_in_utc(job.created_at).isoformat(), job.id])
    return base64.urlsafe_b64encode(said.encode()).decode().rstrip("=")


#: A job id as ``listing_cursor`` writes it (``create_jobs`` makes 32 hex digits).
_CURSOR_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def _from_listing_cursor(cursor: str) -> tuple[datetime, str]:
    """A ``listing_cursor``'s creation time (UTC) and job id; ``InvalidInput`` if it is
    none (nothing of it reaches the database unchecked: a lone surrogate or a NUL in the id
    was a driver's error)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        said = json.loads(raw.decode("utf-8"))
        if not (isinstance(said, list) and len(said) == 2):
            raise ValueError("not [time, id]")
        if not all(isinstance(part, str) for part in said):
            raise ValueError("not [time, id]")
        created_at, job_id = said
        if not _CURSOR_ID.fullmatch(job_id):
            raise ValueError("not a job id")
        return _in_utc(datetime.fromisoformat(created_at)), job_id
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidInput(
            f"after {shown(cursor)} is not a page's next_after", field="after"
        ) from None


def _in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is UTC already (SQLite's rows are)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def claim_job(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    stale_after_s: float,
    takeover_from: str | None = None,
) -> Job | None:
    """Mark a job running for ``worker_id`` if nobody else holds a live lease on it;
    ``takeover_from``: a worker known to be gone (its process ended), whose lease is taken
    however fresh its heartbeat, if that worker still holds it.

    Two workers racing for the same job serialise here: on PostgreSQL the row lock makes the
    loser see a fresh heartbeat and back off. SQLite has no row lock: the locked read takes
    the engine's write slot and begins the file's write transaction (``store.db.
    LOCKING_READ``), and the claim is also an UPDATE conditional on the row as read (the
    loser's matches nothing after the winner's commit), whatever holds the file. A finished
    job is never claimed again.
    """
    job = get_job(session, job_id, lock=True)
    now = utcnow()
    if job.status.finished:
        return None
    takes_from = {worker_id} | ({takeover_from} if takeover_from is not None else set())
    if (
        job.status == JobStatus.running
        and job.worker_id not in takes_from
        and lease_alive(job, now, stale_after_s)
    ):
        return None
    if job.cancel_requested:
        done = job.evaluations_done
        outcome = f"cancelled after {counted(done, 'evaluation')}" if job.started_at else None
        notes = job.message if job.started_at else None  # its run's (a queued one's: why)
        said = with_notes(outcome or "cancelled before it started", notes)
        _finish(job, JobStatus.cancelled, now, message=said)
        return None
    holder = JOBS.c.worker_id
    claimed = session.execute(
        update(JOBS)
        .where(
            JOBS.c.id == job_id,
            JOBS.c.status == job.status,
            holder.is_(None) if job.worker_id is None else holder == job.worker_id,
            JOBS.c.attempts == job.attempts,
        )
        .values(
            status=JobStatus.running,
            worker_id=worker_id,
            heartbeat_at=now,
            message=None,  # what the queue said (waiting, interrupted); the run adds its notes
            attempts=JOBS.c.attempts + 1,
            started_at=func.coalesce(JOBS.c.started_at, now),
        ),
        execution_options={"synchronize_session": False},
    )
    if cast(CursorResult[Any], claimed).rowcount != 1:
        return None  # another worker claimed it since it was read
    session.expire(job)
    return job


def lease_alive(job: Job | JobRow, now: datetime, stale_after_s: float) -> bool:
    """Whether the job's last heartbeat (or publication) is younger than ``stale_after_s``."""
    beat = last_heartbeat(job)
    return beat is not None and now - beat < timedelta(seconds=stale_after_s)


def last_heartbeat(job: Job | JobRow) -> datetime | None:
    """``heartbeat_at`` as an aware UTC time (SQLite returns naive datetimes)."""
    beat: datetime | None = job.heartbeat_at
    if beat is not None and beat.tzinfo is None:
        beat = beat.replace(tzinfo=UTC)
    return beat


def worker_lost_at(job: Job | JobRow, now: datetime, stale_after_s: float) -> datetime | None:
    """For a running job whose worker has not heartbeated for ``stale_after_s`` (it died, or
    cannot reach the database), the last heartbeat; None otherwise. A reaper of the job's
    device re-queues such a job (``stale_jobs``)."""
    if job.status != JobStatus.running or lease_alive(job, now, stale_after_s):
        return None
    return last_heartbeat(job)


def stale_jobs(
    session: Session, *, stale_after_s: float, devices: list[str] | None = None
) -> list[Job]:
    """Unfinished jobs not touched for ``stale_after_s``.

    For a running job ``heartbeat_at`` is its worker's last heartbeat; for a queued job it is
    when it was last (re-)published, so a job waiting behind another is not re-sent often.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    query = _unfinished(devices).where(or_(Job.heartbeat_at.is_(None), Job.heartbeat_at <= cutoff))
    return list(session.scalars(query.order_by(Job.created_at)))


def unfinished_jobs(session: Session, devices: list[str]) -> list[Job]:
    """Queued and running jobs of ``devices``, oldest first."""
    return list(session.scalars(_unfinished(devices).order_by(Job.created_at)))


def _unfinished(devices: list[str] | None) -> Select[Job]:
    """Queued and running jobs, of ``devices`` where given (an empty list: no job)."""
    query = select(Job).where(Job.status.in_([JobStatus.queued, JobStatus.running]))
    return query if devices is None else query.where(Job.device.in_(devices))


def count_queued(session: Session, device: str) -> int:
    """Jobs of ``device`` waiting in the queue."""
    query = select(func.count()).where(Job.device == device, Job.status == JobStatus.queued)
    return int(session.scalar(query) or 0)


def unfinished_by_device(session: Session | Connection) -> dict[str, Counter[JobStatus]]:
    """How many jobs of each device are queued and running now (devices with none left
    out): one grouped count, which the status index serves."""
    query = (
        select(JOBS.c.device, JOBS.c.status, func.count())
        .where(JOBS.c.status.in_([JobStatus.queued, JobStatus.running]))
        .group_by(JOBS.c.device, JOBS.c.status)
    )
    counts: dict[str, Counter[JobStatus]] = {}
    for device, status, n in session.execute(query):
        counts.setdefault(device, Counter())[status] = n
    return counts


def heartbeat(session: Session, job_id: str, worker_id: str, run_seconds: float = 0.0) -> bool:
    """Refresh the lease and add ``run_seconds`` (the run's wall time since its last
    booking) to the job's; False when the job is no longer this worker's running job
    (nothing is changed then)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.running)
        .values(heartbeat_at=utcnow(), run_seconds=Job.run_seconds + run_seconds)
        .returning(Job.id)
    ).first()
    return result is not None


def fail_exhausted(session: Session, job: Job, max_attempts: int) -> bool:
    """Finish ``job`` if a dead worker (or process) left it ``running`` after
    ``max_attempts`` claims: failed with the reason (a job that crashes whoever runs it must
    stop being retried), or cancelled if its user asked for that; True if it was finished
    here. A job a shutdown put back in the queue is never finished here, whatever its count.
    """
    if job.status != JobStatus.running or job.attempts < max_attempts:
        return False
    job = get_job(session, job.id, lock=True)
    if job.cancel_requested:  # what the user asked for, rather than a failure
        _finish(job, JobStatus.cancelled, utcnow(), message="cancelled (its worker had died)")
    else:
        _finish(
            job,
            JobStatus.failed,
            utcnow(),
            message="failed: too many attempts",
            error=f"gave up after {job.attempts} attempts: its worker kept dying or losing "
            "its lease",
        )
    return True


def requeue(job: Job, message: str, *, handed_back: bool = False) -> None:
    """Put a job back in the queue (its worker died or stopped); it resumes from storage.
    ``handed_back``: its own run gave it back at a shutdown; that run does not count as an
    attempt (``attempts`` counts runs that did not end cleanly), so redeploys never add
    up to a job failed as "too many attempts"."""
    if handed_back:
        job.attempts = max(0, job.attempts - 1)
    job.status, job.worker_id, job.heartbeat_at, job.message = (
        JobStatus.queued,
        None,
        utcnow(),
        message,
    )


def change_labels(
    session: Session, job_id: str, changes: Mapping[str, str | None], *, limit: int
) -> Job:
    """Set (a value) or remove (None) the job's labels named in ``changes``, keeping the
    others, in whatever status it is: in its spec (what the job shows) and its ``LABELS``
    rows (what the listing filters on). Under the row's lock: a worker's write of the spec
    meanwhile is neither lost nor loses this change. ``InvalidInput`` if more than
    ``limit`` labels would remain."""
    job = get_job(session, job_id, lock=True)
    before = job.spec.get(LABELS_KEY, {})
    labels = {**before, **{name: value for name, value in changes.items() if value is not None}}
    for name in (name for name, value in changes.items() if value is None):
        labels.pop(name, None)
    if len(labels) > limit:
        raise InvalidInput(
            f"a job carries at most {limit} labels: these changes would leave it "
            f"{len(labels)} (remove some with null)",
            field="labels",
        )
    if labels != before:
        job.spec = {**job.spec, LABELS_KEY: labels}
        session.execute(delete(JobLabel).where(JobLabel.job_id == job_id))
        if labels:
            rows = [{"job_id": job_id, "name": n, "value": v} for n, v in labels.items()]
            session.execute(_INSERT_LABELS, rows)
    return job


def request_cancel(session: Session, job_id: str, *, stale_after_s: float | None = None) -> Job:
    """Ask a job to stop: a queued one is cancelled now, a running one by its worker after
    the evaluation in flight. With ``stale_after_s``: a running job whose worker has not
    heartbeated for that long (it died) is cancelled now too; nobody would honour the
    request until a worker took the job again. Should its worker be alive after all, its
    next write finds the job finished and it stops. A job cancelled already is answered as
    it is (a cancel sent again, by a retry or a clean-up script, is no error); one that
    succeeded or failed is a ``Conflict``: there is nothing to stop."""
    job = get_job(session, job_id, lock=True)
    if job.status == JobStatus.cancelled:
        return job
    if job.status.finished:
        raise Conflict(f"job {job_id} already {job.status.value}: there is nothing to cancel")
    job.cancel_requested = True
    now = utcnow()
    if job.status == JobStatus.queued:
        _finish(job, JobStatus.cancelled, now, message="cancelled while queued")
    elif stale_after_s is not None and (lost := worker_lost_at(job, now, stale_after_s)):
        _cancel_lost(job, lost, now)
    return job


def delete_job(session: Session, job_id: str) -> None:
    """Delete a finished job, its evaluations and the link of any latency predictor it
    stored (the predictor is kept). A queued or running one is a ``Conflict``: cancel it
    first. Jobs that copied its measurements (warm start) keep their copies; later jobs no
    longer find its measurements to copy."""
    job = get_job(session, job_id, lock=True)
    if not job.status.finished:
        if job.cancel_requested and job.status == JobStatus.running:
            raise Conflict(
                f"job {job_id} is running, its cancel asked: it ends after the evaluation "
                "in flight, and can be deleted then"
            )
        raise Conflict(
            f"job {job_id} is {job.status.value}: cancel it first; a job is deleted once it ended"
        )
    _delete(session, [job_id])


def ended_before(session: Session, finished_before: datetime) -> list[str]:
    """The ids of the jobs that finished before ``finished_before``, oldest first."""
    query = (
        select(Job.id)
        .where(Job.finished_at.is_not(None), Job.finished_at < finished_before)
        .order_by(Job.finished_at, Job.id)
    )
    return list(session.scalars(query))


#: Jobs a prune deletes per transaction: each with up to HWNAS_WARM_START_MAX copies and
#: its own measurements, so that no transaction holds the database (SQLite's one write
#: slot) for long.
DELETE_CHUNK = 100


def delete_ended(session: Session, job_ids: Sequence[str]) -> None:
    """Delete ``job_ids`` (at most ``_IN_LIST_MAX``; a prune gives ``DELETE_CHUNK``) as
    ``delete_job`` does, jobs ``ended_before`` found: a job that ended stays ended."""
    _delete(session, list(job_ids))


def existing_jobs(session: Session, job_ids: Sequence[str]) -> set[str]:
    """Those of ``job_ids`` that are jobs."""
    found: set[str] = set()
    for start in range(0, len(job_ids), _IN_LIST_MAX):
        chunk = list(job_ids[start : start + _IN_LIST_MAX])
        found.update(session.scalars(select(Job.id).where(Job.id.in_(chunk))))
    return found


def _delete(session: Session, ids: list[str]) -> None:
    # Explicit rather than by the foreign keys' ON DELETE: SQLite applies those only where
    # a connection turned them on.
    session.execute(
        update(LatencyPredictorRecord)
        .where(LatencyPredictorRecord.job_id.in_(ids))
        .values(job_id=None)
    )
    session.execute(delete(Evaluation).where(Evaluation.job_id.in_(ids)))
    session.execute(delete(JobLabel).where(JobLabel.job_id.in_(ids)))
    session.execute(delete(Job).where(Job.id.in_(ids)))


def cancel_abandoned(session: Session, *, stale_after_s: float) -> list[str]:
    """End the running jobs whose cancel was asked while their worker lived and whose worker
    has since stopped heartbeating for ``stale_after_s`` (it died): nobody else would honour
    the request until a worker of the device took the job again. Their ids."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    query = select(Job.id).where(
        Job.status == JobStatus.running,
        Job.cancel_requested.is_(True),
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at <= cutoff),
    )
    ended = []
    for job_id in list(session.scalars(query)):
        job, now = get_job(session, job_id, lock=True), utcnow()
        lost = worker_lost_at(job, now, stale_after_s) if job.cancel_requested else None
        if lost is not None:  # still running, asked to stop, and stale (re-read, locked)
            _cancel_lost(job, lost, now)
            ended.append(job_id)
    return ended


def _cancel_lost(job: Job, lost: datetime, now: datetime) -> None:
    done = counted(job.evaluations_done, "evaluation")
    outcome = (
        f"cancelled after {done}; its worker had stopped heartbeating at "
        f"{lost:%Y-%m-%d %H:%M:%S} UTC"
    )
    # with the run's notes: warm start, hints, prior
    _finish(job, JobStatus.cancelled, now, message=with_notes(outcome, job.message))


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 evaluation", "3 evaluations"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def with_notes(outcome: str | None, notes: str | None) -> str | None:
    """A job's message: what happened first, then what its run noted (warm start, hints,
    a latency prior); None when neither says anything."""
    return "; ".join(part for part in (outcome, notes) if part) or None


def finish_job(
    session: Session,
    job_id: str,
    status: JobStatus,
    *,
    message: str | None = None,
    error: str | None = None,
) -> Job:
    """End a job its run holds. ``message`` (the outcome: why it failed or was cancelled)
    leads the notes the run left on the job (warm start, hints, prior), which stay."""
    job = get_job(session, job_id, lock=True)
    notes = job.message if job.status == JobStatus.running else None
    outcome = with_notes(message, notes)
    _finish(job, status, utcnow(), message=outcome, error=error)
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


def add_reused_evaluations(
    session: Session, job: Job, copies: Sequence[Evaluation], constraints: dict[str, Bound]
) -> None:
    """Store evaluations copied from earlier jobs (warm start), in one flush: not measured
    here, so they count as reused and took no evaluation time; ``details.reused_from``
    names the job that measured each. Measured ones: ``record_evaluation``."""
    now, first = utcnow(), job.evaluations_done + job.evaluations_reused
    session.add_all(
        Evaluation(
            job_id=job.id,
            seq=first + k,
            subnet_id=original.subnet_id,
            arch=original.arch,
            metrics=original.metrics,
            details={**original.details, REUSED_FROM: original.job_id},
            feasible=is_feasible(original.metrics, constraints),
            on_front=False,
            reused=True,
            seconds=0.0,
            created_at=now,
        )
        for k, original in enumerate(copies)
    )
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
    if _dialect(connection) == "postgresql":
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
    row = connection.execute(_READ_JOB, {"job_id": job_id}).first()
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
    those its stored front holds (``front_only``), or those of ``ids``."""
    query = select(Evaluation).where(Evaluation.job_id == job_id)
    if front_only:
        query = query.where(Evaluation.on_front.is_(True))
    if ids is not None:
        query = query.where(Evaluation.id.in_(ids))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    query = query.order_by(Evaluation.seq).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query)), total


def evaluation_metrics(session: Session, job_id: str) -> tuple[list[int], list[dict[str, Any]]]:
    """Ids and metrics of the job's evaluations, in order: what its front is computed from,
    without reading (and decoding) their architectures and details."""
    query = (
        select(Evaluation.id, Evaluation.metrics)
        .where(Evaluation.job_id == job_id)
        .order_by(Evaluation.seq)
    )
    rows = session.execute(query).all()
    return [row[0] for row in rows], [row[1] for row in rows]


#: The details key naming the job a warm start copied an evaluation from.
REUSED_FROM = "reused_from"
#: The key of an evaluation's ``details`` naming the job whose measurement gave its quality
#: metrics (accuracy), taken from another device's (``workers.evaluator.KnownQuality``).
QUALITY_FROM = "quality_from"
#: Most job ids ``prior_evaluations`` puts in one IN list (SQLite allows 32,766 parameters).
_IN_LIST_MAX = 5000
#: The spec's key for the fingerprint of what a search job's supernet measured with (its
#: weights and validation data: ``Supernet.fingerprint``), written at the job's first run.
MEASURED_WITH = "measured_with"


#: The spec's key for the fingerprint of the code a search job's supernet measured with
#: (``Supernet.code_fingerprint``: a plugin's ``version`` or source), written beside
#: ``MEASURED_WITH`` at the job's first run; absent in jobs stored before 2026-12-07.
MEASURED_CODE = "measured_code"


def measuring_change(
    spec: Mapping[str, Any], now: str | None, codes: Sequence[str | None]
) -> str | None:
    """What differs between how the job of ``spec`` measured and a supernet whose
    fingerprints are now ``now`` (weights and data) and ``codes`` (its code's, with what an
    earlier hwnas gave for the same code: ``Supernet.code_fingerprints``): "weights or
    data", "code", or None when nothing does. A fingerprint the job did not record is not
    compared (a job of a version that did not take it, as a plugin's without
    ``quality_inputs`` or any code before 2026-12-07: unchecked, as then)."""
    recorded = spec.get(MEASURED_WITH)
    if recorded is not None and recorded != now:
        return "weights or data"
    if spec.get(MEASURED_CODE) is not None and spec[MEASURED_CODE] not in codes:
        return "code"
    return None


#: The spec's key for the anchors a search job measures first (``workers.anchors``), by
#: sub-network id, written at the job's first run so that a resumed run measures the same.
ANCHORS = "anchors"
#: The spec's key for a search job's failed measurements: ``{"subnet_id", "error",
#: "anchor", "after", "at"}`` each (``after``: the measurements the job had made then;
#: ``at``: when, in UTC, ISO 8601;
#: ``QUALITY_STEP`` where it failed in a step only a quality evaluation runs), written as
#: they fail, so that a resumed run proposes none of them again and counts them towards the
#: job's ``budget.failures``; a warm start adds those of earlier jobs on the pair first, with
#: ``reused_from`` naming the job where each failed (``prior_failures``; not counted).
FAILED = "failed"
#: A failed measurement's key (``FAILED``), true where it failed while extracting the
#: sub-network for, or evaluating it on, the validation data: a job that measures latency
#: only never runs those steps, and takes no such failure from earlier jobs.
QUALITY_STEP = "quality_step"
#: The spec's key for the sub-networks whose measurement failed in earlier jobs that a warm
#: start left for the job to measure again if its search proposes them (a failure may have
#: been the device's state then, not the sub-network's): ``{subnet_id: job}``, the job where
#: it failed. One that fails again is listed in ``FAILED`` with ``RETRIED_FROM``: that job
#: (not counted).
RETRYING = "retrying"
RETRIED_FROM = "retried_from"
#: The key ``prior_failures`` adds to each failure it finds: how many of the pair's jobs
#: (measuring alike) that measured something ended after it failed: how old the failure is,
#: in jobs.
JOBS_SINCE = "jobs_since"


def counts_as_failure(entry: Mapping[str, Any]) -> bool:
    """Whether a failed measurement the job's spec lists (``FAILED``) counts against its
    allowance: its anchors' do not, nor those that failed in earlier jobs (``REUSED_FROM``),
    nor those it measured again after they failed in one (``RETRIED_FROM``)."""
    return not (entry.get("anchor") or entry.get(REUSED_FROM) or entry.get(RETRIED_FROM))


def failures_counted(spec: Mapping[str, Any]) -> int:
    """How many of a job's recorded failed measurements count against its allowance."""
    return sum(map(counts_as_failure, spec.get(FAILED, [])))


def failures_allowed(budget: Mapping[str, Any], *, fit_needs: int = 0) -> int:
    """How many failed measurements a job goes on after (its anchors' aside): its budget's
    ``failures``, else half its ``evaluations``, at least 3; for a calibration, whose fit
    needs ``fit_needs`` measurements of its sample, never more than leaves that many."""
    given, evaluations = budget.get("failures"), int(budget["evaluations"])
    allowed = int(given) if given is not None else max(3, evaluations // 2)
    return min(allowed, max(0, evaluations - fit_needs)) if fit_needs else allowed


def prior_evaluations(
    session: Session,
    *,
    supernet: str,
    device: str,
    validation_data: str | None,
    exclude_job: str,
    limit: int,
    measured_with: str | None = None,
    measured_code: str | None = None,
    other_devices: bool = False,
    before: datetime | None = None,
    usable: Callable[[Evaluation], bool] | None = None,
    jobs: Sequence[AlikeJob] | None = None,
) -> list[Evaluation]:
    """Measurements of ``supernet`` on ``device`` (accuracy on ``validation_data``) made by
    other search jobs: one per sub-network, the most recent that is ``usable`` (all, by
    default), at most ``limit``. Copies
    (``reused``; ``details.reused_from`` names their origin) are skipped: the original is
    what counts; so are calibration jobs' measurements (latency only, a uniform sample:
    they would shadow a search's full measurement of the same sub-network and fill the
    ``limit`` with what a search cannot use).

    ``measured_with``: only jobs whose supernet measured with the same weights and data
    (``spec.measured_with``, a ``Supernet.fingerprint``), whatever path named the data
    (``./v.npz`` and ``v.npz`` alike); None matches jobs that recorded none, as a recorded
    table's do, with the same ``validation_data``; ``measured_code``: and with the same
    code (``spec.measured_code``, a ``Supernet.code_fingerprint``). ``other_devices``:
    measurements on every device but ``device`` instead (for the metrics that do not
    depend on the device);
    ``before``: only those recorded before that time; ``jobs``: those jobs, as
    ``measuring_alike`` gave them for the same arguments (read once for this and
    ``prior_failures``)."""
    on_device = Job.device != device if other_devices else Job.device == device
    if jobs is not None and other_devices:  # a caller's slip, not a user's
        raise ValueError("jobs= lists the jobs on the device itself (measuring_alike)")
    if jobs is None:
        jobs = list(
            _measuring_alike(
                session,
                supernet,
                on_device,
                exclude_job,
                (measured_with, measured_code),
                validation_data,
            )  # fmt: skip
        )
    matching = [job.id for job in jobs]
    if not matching:
        return []
    # Copies are left out by the database, through the index on (job_id, reused): every
    # warm-started job adds one of each row it reused, so they outnumber the originals by
    # the jobs run on the pair (reading them made a backlog of jobs drain ever more slowly).
    query = (
        select(Evaluation)
        .where(Evaluation.reused.is_(False))
        .order_by(Evaluation.id.desc())
        .execution_options(yield_per=500)
    )
    if len(matching) <= _IN_LIST_MAX:
        query = query.where(Evaluation.job_id.in_(matching))
    else:  # beyond what one IN list should carry: the jobs' filter again, ids checked here
        query = query.join(Job, Job.id == Evaluation.job_id).where(
            Job.supernet == supernet, on_device, Job.kind == JobKind.search
        )
    if before is not None:
        query = query.where(Evaluation.created_at < before)
    ids = set(matching)
    found: dict[str, Evaluation] = {}
    for evaluation in session.scalars(query):
        if evaluation.job_id in ids and (usable is None or usable(evaluation)):
            found.setdefault(evaluation.subnet_id, evaluation)
            if len(found) >= limit:
                break
    return list(found.values())


class AlikeJob(NamedTuple):
    """Another job as ``measuring_alike`` gives it."""

    id: str
    spec: dict[str, Any]
    done: int  # measurements made
    finished_at: datetime | None


@dataclass
class NotAlike:
    """Measurements of other jobs of the pair that ``measuring_alike`` left out, counted in
    the same reading: a warm start says why it reused none of them."""

    #: Of jobs that recorded no fingerprint where the job has one (an earlier hwnas's:
    #: upgrade audit 31).
    unfingerprinted: int = 0
    #: Of jobs that measured with the same weights and data but other code of a plugin
    #: (its ``version`` or its source: plugin audit 32, where a script edited in the
    #: plugin's package left a job with no word of why nothing was reused).
    other_code: int = 0
    #: Of jobs that recorded a form an earlier hwnas gave the plugin's code (``earlier`` of
    #: ``measuring_alike``: the same code, as far as that hwnas could tell): exported and
    #: resumed, not reused.
    earlier_form: int = 0


def measuring_alike(
    session: Session,
    *,
    supernet: str,
    device: str,
    validation_data: str | None,
    exclude_job: str,
    measured_with: str | None = None,
    measured_code: str | None = None,
    not_alike: NotAlike | None = None,
    earlier: Collection[str | None] = (),
) -> list[AlikeJob]:
    """The other search jobs of ``supernet`` on ``device`` that measured as
    ``measured_with`` and ``measured_code`` say (``prior_evaluations``), newest first: what
    a warm start reads once for ``prior_evaluations`` and ``prior_failures`` (``jobs``).
    ``not_alike``: counts what was left out, where it says why; ``earlier``: the forms an
    earlier hwnas gave the plugin's code as it is now (``Supernet.code_fingerprints``)."""
    return list(
        _measuring_alike(
            session,
            supernet,
            Job.device == device,
            exclude_job,
            (measured_with, measured_code),
            validation_data,
            (not_alike, earlier),
        )  # fmt: skip
    )


def _measuring_alike(
    session: Session,
    supernet: str,
    on_device: ColumnElement[bool],
    exclude_job: str,
    measured: tuple[str | None, str | None],
    validation_data: str | None,
    counted: tuple[NotAlike | None, Collection[str | None]] = (None, ()),
) -> Iterator[AlikeJob]:
    """(id, spec, measurements made) of the other search jobs of ``supernet`` on the
    devices ``on_device`` selects that measured as ``measured`` (the weights' and data's
    fingerprint, the code's) says (``prior_evaluations``), newest first."""
    measured_with, measured_code = measured
    jobs = (
        select(Job.id, Job.spec, Job.evaluations_done, Job.finished_at)
        .where(Job.supernet == supernet, on_device, Job.id != exclude_job)
        .where(Job.kind == JobKind.search)
        .order_by(Job.created_at.desc(), Job.id.desc())
    )
    # The specs are compared here, not by the database's JSON operators: a spec may hold a
    # lone surrogate escape (a file name that is not UTF-8), which PostgreSQL's json
    # operators refuse for the whole document, and SQLite's driver refuses as a parameter.
    not_alike, earlier = counted
    for job_id, spec, done, finished_at in session.execute(jobs):
        same_data = spec.get(MEASURED_WITH) == measured_with and (
            # a fingerprint is the weights' and data's content, whatever path named the
            # data; without one (a recorded table, a plugin that gives none), the path
            measured_with is not None or spec.get("validation_data") == validation_data
        )
        code = spec.get(MEASURED_CODE)
        if same_data and code == measured_code:  # a job before codes: None, unknown code
            yield AlikeJob(job_id, spec, done, finished_at)
        elif not_alike is None:
            continue
        elif measured_with is not None and spec.get(MEASURED_WITH) is None:
            not_alike.unfingerprinted += done
        elif same_data and code is not None and measured_code is not None:
            if code in earlier:
                not_alike.earlier_form += done
            else:
                not_alike.other_code += done


#: ``prior_failures`` leaves out runs of this many failures in a row or more: a device's
#: passing state (a few minutes of another process holding its memory) more than the
#: sub-networks' (review 25b: a job whose measurements 4-8 failed, then the device worked).
#: A sub-network measured again after it failed in an earlier job (``RETRIED_FROM``) is in
#: the run too (not counted against the job's allowance, but the device failed it then),
#: though itself shared whatever run it was in: it failed in two jobs.
SHARED_RUN = 3


def prior_failures(
    session: Session,
    *,
    supernet: str,
    device: str,
    validation_data: str | None,
    exclude_job: str,
    limit: int,
    measured_with: str | None = None,
    measured_code: str | None = None,
    skip: Collection[str] = (),
    quality: bool = True,
    quality_metrics: Collection[str] = (),
    jobs: Sequence[AlikeJob] | None = None,
) -> list[dict[str, Any]]:
    """The sub-networks of ``supernet`` whose measurement failed on ``device`` in other
    search jobs that measured alike (``prior_evaluations``'s ``measured_with`` rule), each
    as the job that saw it fail lists it (``FAILED``) with ``REUSED_FROM``: that job, and
    ``JOBS_SINCE``: how many of those jobs, having measured something, ended after it
    failed (its ``at``; an entry written before it was recorded: when its job ended); the
    newest first, at most ``limit``, none of ``skip``. Only failures the job measured
    something after: not a run of failures that ended it or that it ended on (a device that
    broke, a plugin that fails every measurement); not a run of ``SHARED_RUN`` or more in a
    row; not its anchors' (skipped whatever they raised); not those it took from earlier
    jobs (their origin lists them, while it is kept); and none of a sub-network that one of
    those jobs measured (for a failure of a step only a quality evaluation runs,
    ``QUALITY_STEP``: a measurement holding every one of ``quality_metrics``, the supernet's,
    not taken from another device's). ``quality``: False for a job that measures latency
    only, which takes no failure of a step it never runs. ``jobs``: as
    ``prior_evaluations``'."""
    found: dict[str, dict[str, Any]] = {}
    read: list[str] = []
    if jobs is None:
        jobs = measuring_alike(
            session, supernet=supernet, device=device, validation_data=validation_data,
            exclude_job=exclude_job, measured_with=measured_with, measured_code=measured_code,
        )  # fmt: skip
    ended = sorted(_in_utc(j.finished_at) for j in jobs if j.done and j.finished_at)
    for job in jobs:
        read.append(job.id)
        own = [e for e in job.spec.get(FAILED, []) if not (e.get("anchor") or e.get(REUSED_FROM))]
        in_a_row = Counter(e.get("after") for e in own)  # the job's measurements then
        for entry in reversed(own):
            after = entry.get("after")  # None in entries written before it was
            if entry["subnet_id"] in skip or not isinstance(after, int) or after >= job.done:
                continue
            if not quality and entry.get(QUALITY_STEP):
                continue
            if in_a_row[after] < SHARED_RUN or entry.get(RETRIED_FROM):
                since = _jobs_ended_since(ended, _failed_at(entry, job), job)
                held = found.get(entry["subnet_id"])
                if held is None or since < held[JOBS_SINCE]:  # its newest failure
                    found[entry["subnet_id"]] = {**entry, REUSED_FROM: job.id, JOBS_SINCE: since}
        if len(found) >= _IN_LIST_MAX:  # enough to choose ``limit`` from
            break
    if found:  # measured in one of those jobs since, or before: not the sub-network's fault
        measured = select(Evaluation.subnet_id, Evaluation.metrics, Evaluation.details).where(
            Evaluation.reused.is_(False), Evaluation.subnet_id.in_(list(found))
        )
        if len(read) <= _IN_LIST_MAX:
            measured = measured.where(Evaluation.job_id.in_(read))
        else:  # as prior_evaluations: the jobs' filter again (a little wider: any data)
            measured = measured.join(Job, Job.id == Evaluation.job_id).where(
                Job.supernet == supernet, Job.device == device, Job.kind == JobKind.search
            )
        for subnet_id, metrics, details in session.execute(measured):
            entry = found.get(subnet_id)
            if entry is None:
                continue
            # a failure of the quality evaluation is cleared only by a measurement that ran
            # it: one timed alone (latency only, or accuracy taken from another device) ran
            # none of what failed
            evaluated = QUALITY_FROM not in details and set(quality_metrics) <= set(metrics)
            if evaluated or not entry.get(QUALITY_STEP):
                del found[subnet_id]
    return list(found.values())[:limit]


def _failed_at(entry: Mapping[str, Any], job: AlikeJob) -> datetime | None:
    """When a failure (``FAILED`` entry of ``job``) happened: its ``at``, else (an entry
    written before it was recorded) when its job ended; None if neither is known."""
    try:
        return _in_utc(datetime.fromisoformat(entry["at"]))
    except (KeyError, TypeError, ValueError):
        return None if job.finished_at is None else _in_utc(job.finished_at)


def _jobs_ended_since(ended: list[datetime], at: datetime | None, origin: AlikeJob) -> int:
    """Of the jobs that measured something, ended at ``ended`` (sorted), how many ended after
    ``at``, ``origin`` (the job where the failure was) aside; 0 when ``at`` is unknown."""
    if at is None:
        return 0
    later = len(ended) - bisect.bisect_right(ended, at)
    itself = bool(origin.done and origin.finished_at and _in_utc(origin.finished_at) > at)
    return later - itself


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


def set_front(session: Session, job_id: str, front_ids: list[int]) -> None:
    session.execute(
        update(Evaluation)
        .where(Evaluation.job_id == job_id)
        .values(on_front=Evaluation.id.in_(front_ids) if front_ids else False)
    )
