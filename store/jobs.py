"""Queries on jobs: creating, listing, claiming and leasing, cancelling, finishing and
deleting them (their evaluations: ``store.evaluations``; what other jobs measured, for a warm
start: ``store.prior``). Callers own the session (see ``store.db.transaction``)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Connection,
    Row,
    Select,
    Table,
    bindparam,
    delete,
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
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.errors import (
    Conflict,
    InvalidInput,
    LimitReached,
    NotFound,
    ServiceUnavailable,
    shown,
)

from .db import LOCKING_READ
from .job_keys import REUSES_OF
from .tables import (
    Evaluation,
    Job,
    JobKind,
    JobLabel,
    JobStatus,
    LatencyPredictorRecord,
    in_utc,
    utcnow,
)

JOBS = cast(Table, Job.__table__)
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
    session: Session | Connection,
    spec: dict[str, Any],
    *,
    message: str | None = None,
    submitted_by: str = "",
) -> JobRow:
    """A queued job. ``heartbeat_at`` of a queued job is when it was (last) published: now,
    since the caller publishes it right after this transaction commits."""
    return create_jobs(session, [Submission(spec, message, submitted_by)])[0]


class Submission(NamedTuple):
    """A new job: its spec (JSON data), the message it starts with (why it will wait), and
    the label of the API key that submitted it (``Job.submitted_by``)."""

    spec: dict[str, Any]
    message: str | None = None
    submitted_by: str = ""


#: The statuses a job counts against its API key's ``limit`` in: not ended.
ACTIVE = (JobStatus.queued, JobStatus.running)


def active_jobs(connection: Session | Connection, submitters: Collection[str]) -> Counter[str]:
    """How many jobs each of ``submitters`` (API key labels) has queued or running."""
    query = (
        select(JOBS.c.submitted_by, func.count())
        .where(JOBS.c.status.in_(ACTIVE), JOBS.c.submitted_by.in_(list(submitters)))
        .group_by(JOBS.c.submitted_by)
    )
    return Counter({by: n for by, n in connection.execute(query)})


#: The PostgreSQL advisory lock (its number: "hwnasLIM" in ASCII) held over a count of
#: API keys' active jobs and the insert it lets in, across the processes that share the
#: database: several API processes (``HWNAS_API_PROCESSES``) or servers each hold a lock
#: of their own (``api.submissions.JobSubmitter.limit_lock``), and with only those two
#: keyed submissions to two processes at once both counted below the limit.
LIMIT_LOCK = int.from_bytes(b"hwnasLIM", "big")


@contextmanager
def counting_across_processes(connection: Session | Connection) -> Iterator[None]:
    """Held over a count of active jobs and the insert it lets in, on PostgreSQL: a
    transaction's lock (released as it ends, the insert committed or not) or, where each
    statement commits on its own (autocommit), a session's lock released after the insert.
    On SQLite, the file's write lock, taken before the count (a read, which began no
    transaction there: ``LOCKING_READ``), held until the transaction ends."""
    bind = _bind(connection)
    if bind.dialect.name == "sqlite":
        bind.execute(text("SELECT 1").execution_options(**{LOCKING_READ: True}))
        yield
        return
    if bind.dialect.name != "postgresql":
        yield
        return
    if not bind.connection.dbapi_connection.autocommit:  # type: ignore[union-attr]
        _take(bind, "pg_try_advisory_xact_lock")
        yield
        return
    _take(bind, "pg_try_advisory_lock")
    unlock = text("SELECT pg_advisory_unlock(:k)")
    try:
        yield
    except BaseException:
        with suppress(SQLAlchemyError):  # a dropped connection: the server let the lock go
            bind.execute(unlock, {"k": LIMIT_LOCK})
        raise
    bind.execute(unlock, {"k": LIMIT_LOCK})


#: The longest a count waits for ``LIMIT_LOCK`` (held for a count and an insert: a few
#: milliseconds) before the submission is 503: a holder that hangs (a half-open
#: connection) stopped every process's submissions (review 34a L3).
LIMIT_LOCK_WAIT_S = 10.0


def _take(bind: Connection, function: str) -> None:
    """``LIMIT_LOCK`` by ``function`` (a try-lock), tried until ``LIMIT_LOCK_WAIT_S``."""
    attempt = text(f"SELECT {function}(:k)")
    deadline, pause = time.monotonic() + LIMIT_LOCK_WAIT_S, 0.002
    while not bind.execute(attempt, {"k": LIMIT_LOCK}).scalar_one():
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"another submission held the count of active jobs for over "
                f"{LIMIT_LOCK_WAIT_S:g} s: submit again"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def unscoped_searches(connection: Session | Connection) -> int:
    """Searches queued or running that were submitted without ``REUSES_OF`` (before
    ``HWNAS_JOB_VISIBILITY=own``): their warm starts read every key's jobs."""
    query = select(JOBS.c.spec).where(JOBS.c.kind == JobKind.search, JOBS.c.status.in_(ACTIVE))
    return sum(REUSES_OF not in spec for (spec,) in connection.execute(query))


def over_limit(submitted_by: str, limit: int) -> LimitReached:
    """The error of a submission past its API key's ``limit`` of active jobs."""
    whose = f"this API key ({submitted_by})" if submitted_by else "this server (no API keys)"
    return LimitReached(
        f"{whose} has {counted(limit, 'job')} queued or running, the most "
        "HWNAS_MAX_ACTIVE_JOBS_PER_KEY allows: submit again when one has ended, or cancel one"
    )


#: The spec's key for the digest of a keyed submission's request (``create_job_once``).
REQUEST_DIGEST = "request_digest"


def request_digest(asked: Mapping[str, Any], *, objectives_order: bool = True) -> str:
    """A digest of a request's body as sent (JSON data; ``JobCreate`` with what it was not
    given left out: defaults the server fills in may change between its retries),
    whatever the order of its keys but the objectives': their order is the job's (the
    columns of its front, its exports' cards), so objectives reordered under one
    Idempotency-Key are another request (multi-objective audit 33 L4). Objectives in
    sorted order digest as before that; ``objectives_order=False``: every request as
    before that (``create_job_once``'s ``earlier_digest``)."""
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    order = list(asked.get("body", {}).get("objectives") or ())
    if objectives_order and order != sorted(order):
        canonical += "\nobjectives:" + json.dumps(order, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def create_job_once(
    session: Session,
    spec: dict[str, Any],
    key: str,
    digest: str,
    *,
    message: str | None = None,
    submitted_by: str = "",
    limit: int = 0,
    earlier_digest: str | None = None,
) -> tuple[JobRow, bool]:
    """The job that the submission with idempotency key ``key`` (its request's
    ``request_digest``: ``digest``) by the API key ``submitted_by`` created, and whether
    this call created it (a new job of ``spec``): a retry of that submission (its answer
    lost, or a response it could not tell from a failure) finds the job the first one
    stored, where ``create_job`` would store a second. ``Conflict`` if the key's job was
    submitted with another request. Once that job is deleted the key is free: the next job
    with it is new, with a new id. Another API key's jobs are not looked at: each has keys
    of its own. ``limit``: ``LimitReached`` for a new job of an API key with that many
    active already (a retry finds its job whatever the count); 0, no limit.
    ``earlier_digest``: the request's digest as versions before 2026-12-08 made it (the
    objectives' order not counted): a job stored then is found by it where its objectives
    are in the request's order (review 34a: such a retry across the upgrade was 409)."""
    by_key = select(JOBS).where(JOBS.c.submitted_by == submitted_by, JOBS.c.idempotency_key == key)
    job = session.execute(by_key).first()  # a retry: a read, no write (SQLite's slot)
    if job is None:
        with counting_across_processes(session) if limit else nullcontext():
            if limit:  # looked up again under the lock: another process may have stored
                # the key's job meanwhile, the one that reached the limit (drill 34: 429)
                job = session.execute(by_key).first()
                if job is None and active_jobs(session, [submitted_by])[submitted_by] >= limit:
                    raise over_limit(submitted_by, limit)
            if job is None:
                created = _insert_keyed(session, spec, key, digest, message, submitted_by)
                if created is not None:
                    return created, True
        if job is None:
            job = session.execute(by_key).first()  # a request with the key stored it meanwhile
        if job is None:  # and its job was deleted since
            raise ServiceUnavailable(
                f"the job of Idempotency-Key {shown(key)} was deleted as this one came: send again"
            )
    stored = job.spec.get(REQUEST_DIGEST)
    # the order checked on both: a digest made before the order counted matches the same
    # objectives sorted as well (review 34b L1)
    in_order = list(job.spec.get("objectives") or ()) == list(spec.get("objectives") or ())
    if stored not in (digest, earlier_digest) or not in_order:
        raise Conflict(
            f"the Idempotency-Key {shown(key)} was sent with another request, which created "
            f"job {job.id}: use a new key for a new job"
        )
    return job, False


def _insert_keyed(
    session: Session,
    spec: dict[str, Any],
    key: str,
    digest: str,
    message: str | None,
    submitted_by: str,
) -> JobRow | None:
    """A new job with the idempotency key ``key``; None where a job of the key (of the API
    key ``submitted_by``) is there already (stored by a request meanwhile)."""
    now = _now_as_read(session)
    values = _new_job_values({**spec, REQUEST_DIGEST: digest}, message, now, submitted_by)
    values["idempotency_key"] = key
    upsert = sqlite_insert if dialect_of(session) == "sqlite" else postgresql_insert
    statement = (
        upsert(JOBS)
        .values(values)
        .on_conflict_do_nothing(index_elements=[JOBS.c.submitted_by, JOBS.c.idempotency_key])
        .returning(*JOBS.c)
    )
    job = session.execute(statement).first()
    if job is not None:
        labels = values["spec"].get(LABELS_KEY, {})
        if labels:
            rows = [{"job_id": job.id, "name": n, "value": v} for n, v in labels.items()]
            session.execute(_INSERT_LABELS, rows)
    return job


def create_jobs(
    connection: Session | Connection, submissions: Sequence[Submission | tuple[Any, ...]]
) -> list[JobRow]:
    """``create_job`` for each submission (``Submission``, or a (spec, message) pair), as
    one write (``NewJobs.insert``)."""
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

    def __init__(
        self, submissions: Sequence[Submission | tuple[Any, ...]], *, limit: int = 0
    ) -> None:
        self._submissions = [Submission(*item) for item in submissions]
        self._limit = limit
        self._values: list[dict[str, Any]] | None = None
        #: The submissions refused (indices), their API key at its ``limit`` of active
        #: jobs: known once ``insert`` has run; not in its rows.
        self.refused: list[int] = []

    def __len__(self) -> int:
        return len(self._submissions)

    def insert(self, connection: Session | Connection) -> list[JobRow]:
        """Insert the batch; its rows, in the order of the submissions (those ``refused``
        left out). ``limit``: a submission whose API key has that many jobs queued or
        running, the batch's earlier ones included, is refused (counted at the first call:
        a second, after a dropped connection, inserts what the first chose)."""
        if self._values is not None:  # a second call: what the first chose, uncounted
            return self._insert(connection, self._values)
        with counting_across_processes(connection) if self._limit else nullcontext():
            now, admitted = _now_as_read(connection), self._admitted(connection)
            self._values = [
                _new_job_values(spec, note, now, by)
                for k, (spec, note, by) in enumerate(self._submissions)
                if admitted[k]
            ]
            self.refused = [k for k, ok in enumerate(admitted) if not ok]
            return self._insert(connection, self._values)

    def _insert(
        self, connection: Session | Connection, values: list[dict[str, Any]]
    ) -> list[JobRow]:
        if not values:
            return []
        labels = [
            {"job_id": row["id"], "name": name, "value": value}
            for row in values
            for name, value in row["spec"].get(LABELS_KEY, {}).items()
        ]
        if dialect_of(connection) == "postgresql":
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

    def _admitted(self, connection: Session | Connection) -> list[bool]:
        """Which submissions the ``limit`` lets in, in order."""
        if not self._limit:
            return [True] * len(self._submissions)
        active = active_jobs(connection, {by for _, _, by in self._submissions})
        admitted = []
        for _, _, by in self._submissions:
            admitted.append(active[by] < self._limit)
            active[by] += admitted[-1]
        return admitted


def _json_timestamp(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()  # with its offset: a timestamptz keeps the instant
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _bind(connection: Session | Connection) -> Connection:
    return connection if isinstance(connection, Connection) else connection.connection()


def dialect_of(connection: Session | Connection) -> str:
    return _bind(connection).dialect.name


def _now_as_read(connection: Session | Connection) -> datetime:
    """Now, as a read of a timestamp column gives it back: SQLite keeps no time zone (its
    rows read back naive, in UTC); psycopg answers in the session's ``TimeZone``."""
    now = utcnow()
    bind = _bind(connection)
    if bind.dialect.name == "sqlite":
        return now.replace(tzinfo=None)
    return now.astimezone(bind.connection.driver_connection.info.timezone)  # type: ignore[union-attr]


def _new_job_values(
    spec: dict[str, Any], message: str | None, now: datetime, submitted_by: str = ""
) -> dict[str, Any]:
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
        submitted_by=submitted_by,
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


def read_job(session: Session | Connection, job_id: str, *, owner: str | None = None) -> JobRow:
    """The job as a read-only row (the API's reads); ``get_job`` for one to change.
    ``owner``: one ``submitted_by`` that one did not is not found either (the same error:
    whether another's job exists is not told)."""
    row = find_job(session, job_id)
    if row is None:
        raise NotFound(f"job {shown(job_id)} not found")
    check_owner(row, owner)
    return row


def check_owner(job: JobRow | Job, owner: str | None) -> None:
    """``NotFound``, as for no such job, unless ``owner`` (a ``submitted_by``; None:
    anyone) may see ``job``."""
    if owner is not None and job.submitted_by != owner:
        raise NotFound(f"job {shown(job.id)} not found")


def find_job(connection: Session | Connection, job_id: str) -> JobRow | None:
    """The job as a read-only row, None where there is none."""
    return connection.execute(_READ_JOB, {"job_id": job_id}).first()


def list_jobs(
    session: Session | Connection,
    *,
    offset: int,
    limit: int,
    status: JobStatus | Collection[JobStatus] | None = None,
    kind: JobKind | None = None,
    after: str | None = None,
    labels: Sequence[tuple[str, str | None]] = (),
    submitted_by: str | None = None,
) -> tuple[list[JobRow], int]:
    """A page of jobs, newest first (``created_at``, then id), of one ``status`` (or any
    of several) and ``kind`` if given, carrying every one of ``labels`` (name and value, or
    a name alone: any value), submitted with the API key labelled ``submitted_by`` if
    given, and how many match in all. ``after``: a ``listing_cursor`` of
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
    if submitted_by is not None:
        query = query.where(JOBS.c.submitted_by == submitted_by)
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
    said = json.dumps([in_utc(job.created_at).isoformat(), job.id])
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
        return in_utc(datetime.fromisoformat(created_at)), job_id
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidInput(
            f"after {shown(cursor)} is not a page's next_after", field="after"
        ) from None


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
#: Most job ids a query puts in one IN list (SQLite allows 32,766 parameters).
IN_LIST_MAX = 5000


def delete_ended(session: Session, job_ids: Sequence[str]) -> None:
    """Delete ``job_ids`` (at most ``IN_LIST_MAX``; a prune gives ``DELETE_CHUNK``) as
    ``delete_job`` does, jobs ``ended_before`` found: a job that ended stays ended."""
    _delete(session, list(job_ids))


def existing_jobs(session: Session, job_ids: Sequence[str]) -> set[str]:
    """Those of ``job_ids`` that are jobs."""
    found: set[str] = set()
    for start in range(0, len(job_ids), IN_LIST_MAX):
        chunk = list(job_ids[start : start + IN_LIST_MAX])
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
