"""Engines and job queries: concurrent SQLite writers queue instead of failing, read rows;
the submitter's held connection writes a batch once, even across a dropped connection."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Text, event, func, select, text

from core.errors import (
    Conflict,
    InvalidInput,
    LimitReached,
    NotFound,
    ServiceUnavailable,
    StorageError,
)
from store import evaluations as eq
from store import job_keys
from store import jobs as q
from store import prior as pq
from store.db import (
    HeldConnectionWriter,
    make_engine,
    make_session_factory,
    one_statement_writing,
    reading,
    transaction,
    upgrade,
    writing,
)
from store.tables import Evaluation, JobStatus, utcnow

from .backends import database_url, end_other_sessions, migrated_database, set_timezone

SPEC: dict[str, Any] = {
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "strategy": "random",
    "seed": 3,
    "budget": {"evaluations": 7},
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "constraints": {},
}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_created_job_reads_back_as_a_row_with_typed_columns(backend: str, tmp_path: Path) -> None:
    with migrated_database(backend, tmp_path) as (url, engine, factory):
        with transaction(factory) as session:
            created = q.create_job(session, SPEC, message="waiting: nobody serves cpu-1t")
        with transaction(factory) as session:
            row = q.read_job(session, created.id)
            rows, total = q.list_jobs(session, offset=0, limit=10, status=JobStatus.queued)
            with pytest.raises(NotFound, match="nope"):
                q.read_job(session, "nope")
        assert row.status is JobStatus.queued and row.spec == SPEC and row.budget == 7
        assert row.message == "waiting: nobody serves cpu-1t"
        assert row.heartbeat_at is not None  # published at creation: the reaper's clock
        assert (total, [r.id for r in rows]) == (1, [created.id])
        with transaction(factory) as session:  # a worker takes it: the queue's word is stale
            claimed = q.claim_job(session, created.id, "worker-1", stale_after_s=10.0)
            assert claimed is not None and claimed.message is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_listing_goes_on_after_a_cursor_whatever_was_submitted_since(
    backend: str, tmp_path: Path
) -> None:
    """Pages read by ``after`` (a cursor of the previous page's last job) give every job
    once, in the listing's order, jobs created at the same instant included, and a job
    submitted meanwhile (newer: the first page's) moves none of them, where an offset would
    give a job twice. PostgreSQL answers in a zone other than UTC here."""
    with database_url(backend, tmp_path) as url:
        if backend == "postgresql":
            set_timezone(url, "Asia/Kolkata")
        upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        with transaction(factory) as session:
            q.create_jobs(session, [(dict(SPEC, seed=i), None) for i in range(7)])
            tied = q.create_jobs(session, [(dict(SPEC, seed=10 + i), None) for i in range(5)])
            for row in tied:  # five jobs created at one instant
                q.get_job(session, row.id).created_at = tied[0].created_at
        with transaction(factory) as session:
            everything, total = q.list_jobs(session, offset=0, limit=100)
        assert total == 12 and len({r.id for r in everything}) == 12

        pages: list[list[str]] = []
        after: str | None = None
        while True:
            with transaction(factory) as session:
                rows, total = q.list_jobs(session, offset=0, limit=5, after=after)
                if not pages:  # a job submitted after the first page was read
                    q.create_job(session, dict(SPEC, seed=99))
            pages.append([r.id for r in rows])
            if len(rows) < 5:
                break
            after = q.listing_cursor(rows[-1])
        assert [len(page) for page in pages] == [5, 5, 2] and total == 13
        assert sum(pages, []) == [r.id for r in everything]  # once each, in order
        with transaction(factory) as session:
            one, _ = q.list_jobs(session, offset=1, limit=2, after=q.listing_cursor(everything[3]))
            assert [r.id for r in one] == [r.id for r in everything[5:7]]  # offset from there
            for row in everything[1::3]:  # a filter holds on the pages after a cursor too
                q.get_job(session, row.id).status = JobStatus.failed
        failed = [r.id for r in everything[1::3]]
        with transaction(factory) as session:
            first, total = q.list_jobs(session, offset=0, limit=2, status=JobStatus.failed)
            cursor = q.listing_cursor(first[-1])
            rest, _ = q.list_jobs(session, offset=0, limit=9, status=JobStatus.failed, after=cursor)
        assert total == 4 and [r.id for r in first + rest] == failed
        engine.dispose()

        if backend == "postgresql":  # a cursor made in one zone, used in another
            set_timezone(url, "America/New_York")
        engine = make_engine(url)
        with transaction(make_session_factory(engine)) as session:
            rest, _ = q.list_jobs(session, offset=0, limit=9, status=JobStatus.failed, after=cursor)
            assert [r.id for r in rest] == failed[2:]

            def cursor_of(*said: Any) -> str:
                return base64.urlsafe_b64encode(json.dumps(said).encode()).decode()

            at = everything[3].created_at
            naive = at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at
            later, _ = q.list_jobs(session, offset=0, limit=2, after=cursor_of(
                naive.isoformat(), everything[3].id))  # fmt: skip
            assert [r.id for r in later] == [r.id for r in everything[4:6]]  # naive: UTC
            wrong = [
                "nope", "bm9wZQ", q.listing_cursor(everything[0])[:-3], cursor + "!",
                cursor_of(naive.isoformat(), "\ud800"), cursor_of(naive.isoformat(), "a\x00"),
                cursor_of(naive.isoformat(), 5), cursor_of(naive.isoformat()),
                cursor_of("yesterday", everything[0].id),
            ]  # fmt: skip
            for after in wrong:
                with pytest.raises(InvalidInput, match="is not a page's next_after") as refused:
                    q.list_jobs(session, offset=0, limit=5, after=after)
                assert refused.value.field == "after"
        engine.dispose()


def _typed(row: Any) -> dict[str, tuple[type, str]]:
    """Each column's type and repr: ``==`` alone takes 0 for 0.0, a str enum for its value
    and one instant in two time zones as equal, where a response would show them apart."""
    return {name: (type(value), repr(value)) for name, value in row._mapping.items()}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_listing_filters_by_label_and_a_deleted_job_takes_its_labels(
    backend: str, tmp_path: Path
) -> None:
    """Labels travel with the batch's one write (PostgreSQL: one statement, stored once when
    it is sent again after a commit whose answer was lost); the listing keeps the jobs that
    carry every label asked for (a name alone: any value)."""
    with migrated_database(backend, tmp_path) as (_url, engine, factory):
        labelled = [
            {"project": "kws", "run": "7"}, {"project": "kws", "run": "8"},
            {"project": "vision"}, {},
        ]  # fmt: skip
        batch = q.NewJobs(
            [({**SPEC, "seed": k, "labels": lb}, None) for k, lb in enumerate(labelled)]
        )
        with transaction(factory) as session:
            ids = [row.id for row in batch.insert(session)]
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        if backend == "postgresql":  # the retry of a batch that had committed
            with autocommit.connect() as connection:
                batch.insert(connection)

        def listed(*labels: tuple[str, str | None]) -> set[int]:
            with transaction(factory) as session:
                rows, total = q.list_jobs(session, offset=0, limit=10, labels=labels)
            assert total == len(rows)
            return {ids.index(row.id) for row in rows}

        assert listed() == {0, 1, 2, 3}
        assert listed(("project", "kws")) == {0, 1}
        assert listed(("project", "kws"), ("run", "8")) == {1}
        assert listed(("project", None)) == {0, 1, 2}
        assert listed(("run", None), ("project", "vision")) == set()
        assert listed(("project", "KWS")) == set()  # values are compared as they are
        with transaction(factory) as session:
            stored = session.execute(select(q.LABELS.c.job_id, q.LABELS.c.name)).all()
            assert len(stored) == 5  # once, the retry's nothing
            assert q.read_job(session, ids[0]).spec["labels"] == labelled[0]
            for job_id in ids[:2]:
                q.get_job(session, job_id).status = JobStatus.succeeded
        with transaction(factory) as session:
            q.delete_job(session, ids[0])
            q.delete_job(session, ids[1])
        assert listed(("project", None)) == {2}
        with transaction(factory) as session:
            assert session.scalar(select(func.count()).select_from(q.LABELS)) == 1


def test_a_locked_read_holds_the_row_against_another_process_on_the_file(
    tmp_path: Path,
) -> None:
    """``hwnas run`` beside ``hwnas serve``: two engines on one SQLite file (each its own
    write slot) stand for the two processes. A worker's read-change-write of the spec and
    a label change in the other both land, in the spec and in the label rows."""
    url = f"sqlite:///{tmp_path}/two.db"
    upgrade(url)
    worker, api = (make_session_factory(make_engine(url)) for _ in range(2))
    with transaction(api) as session:
        job_id = q.create_job(session, {**SPEC, "labels": {"a": "1"}}).id
    read, errors = threading.Event(), []

    def record() -> None:
        try:
            with transaction(worker) as session:
                job = q.get_job(session, job_id, lock=True)
                read.set()
                time.sleep(0.3)  # the other process changes the labels meanwhile, unless held
                job.spec = {**job.spec, "anchors": ["x"]}
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=record)
    thread.start()
    assert read.wait(10)
    with transaction(api) as session:
        q.change_labels(session, job_id, {"b": "2"}, limit=16)
    thread.join()
    assert errors == []
    with reading(api) as connection:
        spec = q.read_job(connection, job_id).spec
        rows = {(r.name, r.value) for r in connection.execute(select(q.LABELS))}
    assert spec["labels"] == {"a": "1", "b": "2"} and spec["anchors"] == ["x"]
    assert rows == {("a", "1"), ("b", "2")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_changed_labels_replace_the_rows_the_listing_filters_on(
    backend: str, tmp_path: Path
) -> None:
    """``change_labels`` writes the spec and the rows alike, keeps the spec's other keys,
    and refuses (changing nothing) a change that leaves more than the limit."""
    with migrated_database(backend, tmp_path) as (_url, _engine, factory):
        with transaction(factory) as session:
            job_id = q.create_job(session, {**SPEC, "labels": {"a": "1", "b": "2"}}).id
            other = q.create_job(session, {**SPEC, "labels": {"a": "1"}}).id
            q.get_job(session, job_id).spec = {**SPEC, "labels": {"a": "1", "b": "2"}, "k": [1]}

        def rows() -> set[tuple[str, str, str]]:
            with reading(factory) as connection:
                return {tuple(row) for row in connection.execute(select(q.LABELS))}

        with transaction(factory) as session:
            job = q.change_labels(session, job_id, {"b": None, "c": "3", "a": "0"}, limit=3)
            assert job.spec == {**SPEC, "labels": {"a": "0", "c": "3"}, "k": [1]}
        assert rows() == {(job_id, "a", "0"), (job_id, "c", "3"), (other, "a", "1")}
        with pytest.raises(InvalidInput, match="would leave it 4"), transaction(factory) as s:
            q.change_labels(s, job_id, {"d": "4", "e": "5"}, limit=3)
        with transaction(factory) as session:
            q.change_labels(session, job_id, {"a": None, "c": None}, limit=3)
        assert rows() == {(other, "a", "1")}
        with reading(factory) as connection:
            assert q.read_job(connection, job_id).spec["labels"] == {}
        with pytest.raises(NotFound), transaction(factory) as session:
            q.change_labels(session, "nope", {"a": "1"}, limit=3)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_keyed_submission_is_stored_once_whatever_races_it(backend: str, tmp_path: Path) -> None:
    """Eight threads submit the same keyed spec at once: one stores it (with its labels),
    every one gets that job; the key with another spec is a ``Conflict``."""
    spec = {**SPEC, "labels": {"run": "1"}}
    with migrated_database(backend, tmp_path) as (_url, _engine, factory):
        start, results, errors = threading.Barrier(8), [], []

        def submit() -> None:
            try:
                start.wait()
                with transaction(factory) as session:
                    results.append(q.create_job_once(session, spec, "k-1", "d1"))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=submit) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(created for _, created in results) == [False] * 7 + [True]
        assert len({job.id for job, _ in results}) == 1
        with reading(factory) as connection:
            assert q.list_jobs(connection, offset=0, limit=10)[1] == 1
            assert connection.scalar(select(func.count()).select_from(q.LABELS)) == 1
        conflict = pytest.raises(Conflict, match="'k-1' was sent with another request")
        with conflict, transaction(factory) as session:
            q.create_job_once(session, {**spec, "seed": 9}, "k-1", "d2")
        with transaction(factory) as session:
            job, created = q.create_job_once(session, SPEC, "k-2", "d3")
        assert created and job.spec == {**SPEC, q.REQUEST_DIGEST: "d3"}
        assert job.idempotency_key == "k-2"
        with transaction(factory) as session:
            q.get_job(session, job.id).status = JobStatus.cancelled
        with transaction(factory) as session:
            q.delete_job(session, job.id)
        with transaction(factory) as session:  # the key is free again: a new job, a new id
            anew, created = q.create_job_once(session, SPEC, "k-2", "d3")
        assert created and anew.id != job.id


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_unfinished_jobs_are_counted_by_device_and_status(backend: str, tmp_path: Path) -> None:
    statuses = {"a": ["queued", "queued", "running", "succeeded"], "b": ["failed"],
                "c": ["running"]}  # fmt: skip
    with migrated_database(backend, tmp_path) as (_url, _engine, factory):
        with transaction(factory) as session:
            for device, listed in statuses.items():
                for k, status in enumerate(listed):
                    job = q.create_job(session, {**SPEC, "device": device, "seed": k})
                    q.get_job(session, job.id).status = JobStatus(status)
        with reading(factory) as connection:
            counts = q.unfinished_by_device(connection)
    assert counts == {
        "a": {JobStatus.queued: 2, JobStatus.running: 1},
        "c": {JobStatus.running: 1},
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_created_rows_are_the_rows_read_back(backend: str, tmp_path: Path) -> None:
    """``create_jobs`` makes its rows from what it inserted, not by reading them back: they
    must be what a read gives, column by column, time zones and types included."""
    specs = [dict(SPEC, seed=seed, constraints={"latency_ms": {"max": 5.0}}) for seed in (1, 2)]
    with database_url(backend, tmp_path) as url:
        if backend == "postgresql":
            set_timezone(url, "Asia/Kolkata")  # not UTC: a row made in UTC would show it
        upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        with writing(factory) as connection:  # as the API's submitter stores a batch
            created = q.create_jobs(connection, [(specs[0], "waiting"), (specs[1], None)])
        with transaction(factory) as session:  # and one at a time, in a session
            created.append(q.create_job(session, SPEC))
        with reading(factory) as connection:
            read = [q.read_job(connection, row.id) for row in created]
        assert [_typed(row) for row in created] == [_typed(row) for row in read]
        assert {(type(row), row._fields) for row in created + read} == {
            (type(read[0]), read[0]._fields)
        }
        assert [row.seed for row in created] == [1, 2, 3]
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_spec_is_stored_as_its_json_text(backend: str, tmp_path: Path) -> None:
    """Any JSON data the API accepts: a lone surrogate (a file name that is not UTF-8, as
    Python decodes it), other scripts, quotes, backslashes, a line separator."""
    strings = "val\udcff.npz", '数据 \u2028 "q" \\ x', ""
    spec = dict(SPEC, validation_data=strings[0], notes={"a": list(strings), "n": [1.5, -0.0]})
    with migrated_database(backend, tmp_path) as (_url, engine, factory):
        writer = HeldConnectionWriter(factory)
        (created,) = writer.write(q.NewJobs([(spec, None)]).insert)
        writer.close()
        with engine.connect() as connection:
            read = q.read_job(connection, created.id)
            stored = connection.execute(select(func.cast(q.JOBS.c.spec, Text))).scalar_one()
        assert _typed(read) == _typed(created) and read.spec == spec
        assert stored == json.dumps(spec)  # as SQLAlchemy's JSON type would send it


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_error_quoting_any_text_ends_the_job(backend: str, tmp_path: Path) -> None:
    """A failure naming a file that is not UTF-8 (a lone surrogate, as Python reads it) or
    holding a NUL: PostgreSQL text takes neither, and the job stayed running until reaped."""
    with migrated_database(backend, tmp_path) as (_url, _engine, factory):
        with transaction(factory) as session:
            job_id = q.create_job(session, SPEC).id
        with transaction(factory) as session:
            q.finish_job(session, job_id, JobStatus.failed, message="failed: bad\udcff.npz",
                         error="x\x00y 数据")  # fmt: skip
        with reading(factory) as connection:
            row = q.read_job(connection, job_id)
        assert row.status is JobStatus.failed
        assert (row.message, row.error) == ("failed: bad\\xff.npz", "x\\x00y 数据")


def test_database_errors_tell_the_client_no_sql_and_a_nul_is_the_requests_error(
    tmp_path: Path,
) -> None:
    """``/v1/jobs/%00``: psycopg refuses a NUL in a text parameter; that was a 503 whose
    message carried the statement (as every database error's did)."""
    with migrated_database("postgresql", tmp_path) as (_url, _engine, factory):
        with pytest.raises(InvalidInput, match="NUL"), reading(factory) as connection:
            q.read_job(connection, "a\x00b")
        with pytest.raises(StorageError) as caught, transaction(factory) as session:
            q.create_job(session, dict(SPEC, supernet=None))
        assert "supernet" in str(caught.value) and "[SQL" not in str(caught.value)
        assert "\n" not in str(caught.value)
        assert not caught.value.unreachable  # refused: asking again will not mend it
    away = make_session_factory(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/x"))
    with pytest.raises(StorageError) as caught, transaction(away) as session:
        q.read_job(session, "j1")
    assert caught.value.unreachable and "OperationalError" in str(caught.value)


def test_sqlite_writers_from_many_threads_all_commit(tmp_path: Path) -> None:
    """32 threads insert at once with SQLite's own busy timeout at 0: without the writer
    queue most of them would fail with 'database is locked'.

    The 32 connections are opened (and their connect-time PRAGMAs run) before the writes
    start: a connection being opened can hold SQLite's lock for an instant, which the
    service's 30 s busy timeout absorbs but a timeout of 0 would report as a failed write.
    """
    url = f"sqlite:///{tmp_path}/w.db"
    upgrade(url)
    engine = make_engine(url, connections=32)
    event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA busy_timeout=0"))
    factory = make_session_factory(engine)

    errors: list[BaseException] = []
    start = threading.Barrier(32)

    def write() -> None:
        try:
            with engine.connect() as connection:  # all 32 open at once, then back to the pool
                connection.exec_driver_sql("SELECT 1")
                start.wait()
            for _ in range(5):
                with transaction(factory) as session:
                    q.create_job(session, SPEC)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with transaction(factory) as session:
        assert q.list_jobs(session, offset=0, limit=1)[1] == 160
    engine.dispose()


def test_sqlite_write_slot_is_released_by_rollback_and_by_close(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with pytest.raises(RuntimeError), transaction(factory) as session:
        q.create_job(session, SPEC)
        raise RuntimeError("rolled back")
    session = factory()
    q.create_job(session, SPEC)
    session.close()  # returned to the pool mid-transaction
    done = threading.Event()

    def write() -> None:
        with transaction(factory) as s:
            q.create_job(s, SPEC)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert done.wait(10), "the write slot was never released"
    thread.join()
    with transaction(factory) as s:
        assert q.list_jobs(s, offset=0, limit=1)[1] == 1
    engine.dispose()


def _record(factory: Any, job_id: str, worker_id: str, n: int) -> bool | None:
    """Store evaluation ``n`` (the job's measured count before it is ``n``)."""
    with one_statement_writing(factory) as connection:
        return eq.record_evaluation(
            connection,
            job_id,
            worker_id,
            done=n,
            subnet_id=f"net-{n}",
            arch={"d": n},
            metrics={"accuracy": 0.5 + n / 100, "latency_ms": 1.0 + n},
            details={"worker": worker_id},
            feasible=True,
            seconds=0.25,
            front_size=n + 1,
            hypervolume=n / 10,
        )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_record_evaluation_books_the_job_with_it_under_the_lease_only(
    backend: str, tmp_path: Path
) -> None:
    """One write (one statement on PostgreSQL) stores the evaluation and the job's counters
    and progress together, only while the worker holds the job and only once per count (a
    retry is answered, not stored again); cancellation is seen."""
    with migrated_database(backend, tmp_path) as (url, engine, factory):
        with transaction(factory) as session:
            job_id = q.create_job(session, SPEC).id
        assert _record(factory, job_id, "w1", 0) is None  # queued: nobody's lease
        with transaction(factory) as session:
            assert q.claim_job(session, job_id, "w1", stale_after_s=60) is not None
        assert [_record(factory, job_id, "w1", n) for n in range(3)] == [False] * 3
        # a retry of evaluation 2 (its commit's acknowledgement lost): answered, not stored
        assert _record(factory, job_id, "w1", 2) is False
        assert _record(factory, job_id, "w1", 1) is None  # a count that is not ours: refused
        assert _record(factory, job_id, "w2", 3) is None  # not w2's job
        with transaction(factory) as session:
            q.request_cancel(session, job_id)
        assert _record(factory, job_id, "w1", 3) is True  # stored; cancellation asked
        with transaction(factory) as session:
            job = q.get_job(session, job_id)
            evaluations, total = eq.list_evaluations(session, job_id)
            assert (job.evaluations_done, job.front_size, job.hypervolume) == (4, 4, 0.3)
            assert job.eval_seconds == pytest.approx(1.0) and job.heartbeat_at is not None
            assert total == 4 and [e.seq for e in evaluations] == [0, 1, 2, 3]
            assert [e.subnet_id for e in evaluations] == ["net-0", "net-1", "net-2", "net-3"]
            assert evaluations[3].arch == {"d": 3} and evaluations[3].metrics["latency_ms"] == 4
            assert evaluations[3].details == {"worker": "w1"} and evaluations[3].feasible
            q.finish_job(session, job_id, JobStatus.cancelled)
        assert _record(factory, job_id, "w1", 4) is None  # finished: nothing stored
        assert _record(factory, job_id, "w1", 3) is None  # nor a retry once finished
        with transaction(factory) as session:
            assert eq.list_evaluations(session, job_id)[1] == 4
            assert q.get_job(session, job_id).evaluations_done == 4


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_prior_evaluations_on_other_devices_and_before_a_time(backend: str, tmp_path: Path) -> None:
    """What a job on cpu-1t may take from other devices: originals only (no copies), not its
    own device's, and with ``before`` only what was recorded before that time."""
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        if backend == "postgresql":  # times compared across zones: rows read in IST
            set_timezone(url, "Asia/Kolkata")
        factory = make_session_factory(make_engine(url))

        def add(session: Any, job: Any, subnet: str, copied: bool = False) -> None:
            measured = Evaluation(
                job_id=job.id, seq=job.evaluations_done + job.evaluations_reused,
                subnet_id=subnet, arch={"k": subnet}, metrics={"accuracy": 0.5}, details={},
                feasible=True, on_front=False, seconds=0.0, created_at=utcnow(),
            )  # fmt: skip
            if copied:  # a warm start's copy of it (reused_from: this job)
                eq.add_reused_evaluations(session, job, [measured], {})
            else:
                session.add(measured)
                job.evaluations_done += 1
                session.flush()

        with transaction(factory) as session:
            on_gpu = q.create_job(session, dict(SPEC, device="cuda-0"))
            on_cpu = q.create_job(session, SPEC)
            own_data = q.create_job(session, dict(SPEC, validation_data="v.npz"))
            # a file name that is not UTF-8: PostgreSQL's json operators refuse the document
            odd_name = q.create_job(session, dict(SPEC, validation_data="w\udcff.npz"))
            # the same content named by another path: its fingerprint says so
            printed = q.create_job(
                session, dict(SPEC, validation_data="./v.npz", measured_with="fp")
            )
        with transaction(factory) as session:
            add(session, q.get_job(session, on_gpu.id), "a")
            add(session, q.get_job(session, on_gpu.id), "b", copied=True)
            add(session, q.get_job(session, on_cpu.id), "c")
            add(session, q.get_job(session, own_data.id), "e")  # accuracy on other data
            add(session, q.get_job(session, odd_name.id), "f")
            add(session, q.get_job(session, printed.id), "g")
        with transaction(factory) as session:
            later = q.create_job(session, SPEC)
        with transaction(factory) as session:
            add(session, q.get_job(session, on_gpu.id), "d")

        def subnets(**kwargs: Any) -> set[str]:
            with transaction(factory) as session:
                found = pq.prior_evaluations(
                    session, supernet=SPEC["supernet"], device="cpu-1t",
                    exclude_job="none", limit=100, **{"validation_data": None, **kwargs},
                )  # fmt: skip
                return {e.subnet_id for e in found}

        assert subnets() == {"c"}
        assert subnets(validation_data="v.npz") == {"e"}
        assert subnets(validation_data="w\udcff.npz") == {"f"}
        assert subnets(measured_with="another") == set()
        assert subnets(validation_data="v.npz", measured_with="fp") == {"g"}
        assert subnets(validation_data=None, measured_with="fp") == {"g"}
        assert subnets(other_devices=True) == {"a", "d"}
        assert subnets(other_devices=True, before=later.created_at) == {"a"}
        assert subnets(other_devices=True, before=on_cpu.created_at) == set()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_prior_failures_of_the_pair_newest_first_with_their_origin(
    backend: str, tmp_path: Path
) -> None:
    """The failures other search jobs of the pair listed, measured alike, newest first:
    only those their job measured something after, not in a run of 3, not its anchors', not
    its copies, not of a sub-network one of those jobs measured; for a job measuring latency
    only, none that failed in a step only a quality evaluation runs."""
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        factory = make_session_factory(make_engine(url))

        def create(done: int, *entries: dict[str, Any], **spec: Any) -> str:
            failed = [{"error": "MemoryError: out", "anchor": False, **e} for e in entries]
            with transaction(factory) as session:  # one each: created at distinct times
                job_id = q.create_job(session, {**SPEC, **spec, "failed": failed}).id
                q.get_job(session, job_id).evaluations_done = done
                return job_id

        old = create(
            5,
            {"subnet_id": "a", "after": 2},
            {"subnet_id": "y", "after": 1, "anchor": True},  # skipped whatever it raised
            *[{"subnet_id": k, "after": 3} for k in "pqr"],  # three in a row: the device's
            {"subnet_id": "x", "after": 5},  # the run of failures it ended on
        )
        new = create(
            4,
            {"subnet_id": "m", "after": 0},  # measured in the old job
            {"subnet_id": "a", "reused_from": old},  # a copy: its origin lists it
            {"subnet_id": "b", "after": 1},
            {"subnet_id": "v", "after": 1, job_keys.QUALITY_STEP: True},  # evaluating accuracy
            {"subnet_id": "z"},  # an older version's entry: when it failed is not known
        )
        create(3, {"subnet_id": "c", "after": 0}, device="cuda-0")
        other = create(1, {"subnet_id": "d", "after": 0}, measured_with="fp")
        mine = create(1, {"subnet_id": "e", "after": 0})
        with transaction(factory) as session:
            session.add(
                Evaluation(
                    job_id=old, seq=0, subnet_id="m", arch={}, metrics={}, details={},
                    feasible=True, on_front=False, seconds=0.0, created_at=utcnow(),
                )
            )  # fmt: skip

        def found(**kwargs: Any) -> list[tuple[str, str]]:
            with transaction(factory) as session:
                entries = pq.prior_failures(
                    session, supernet=SPEC["supernet"], device="cpu-1t", validation_data=None,
                    exclude_job=mine, **{"limit": 100, **kwargs},
                )  # fmt: skip
                return [(e["subnet_id"], e["reused_from"]) for e in entries]

        assert found() == [("v", new), ("b", new), ("a", old)]
        assert found(limit=1) == [("v", new)]
        assert found(skip={"v", "b"}) == [("a", old)]
        assert found(quality=False) == [("b", new), ("a", old)]
        assert found(measured_with="fp") == [("d", other)]
        with transaction(factory) as session:  # the jobs read once, for prior_evaluations too
            jobs = pq.measuring_alike(
                session, supernet=SPEC["supernet"], device="cpu-1t", validation_data=None,
                exclude_job=mine,
            )  # fmt: skip
        assert [job.id for job in jobs] == [new, old]  # alike, newest first
        assert found(jobs=jobs) == found()
        assert found(jobs=jobs[1:]) == [("a", old)]  # those given, not read again


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_failure_s_age_is_the_jobs_that_measured_and_ended_after_it(
    backend: str, tmp_path: Path
) -> None:
    """``JOBS_SINCE``: the jobs of the pair that measured something and ended after the
    failure (its ``at``; an entry without one: when its job ended), whatever order they
    were created in (a batch's jobs share a time; a job may run long after it was queued);
    not its own job, not one still running, not one that measured nothing; of a
    sub-network that failed in several jobs, its newest failure."""
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        factory = make_session_factory(make_engine(url))
        t0 = utcnow()

        def create(done: int, ended: float | None, *entries: dict[str, Any]) -> str:
            failed = [{"error": "MemoryError: out", "anchor": False, "after": 0, **e}
                      for e in entries]  # fmt: skip
            with transaction(factory) as session:
                job = q.get_job(session, q.create_job(session, {**SPEC, "failed": failed}).id)
                job.evaluations_done = done
                job.finished_at = None if ended is None else t0 + timedelta(seconds=ended)
                return job.id

        def at(seconds: float) -> str:
            return (t0 + timedelta(seconds=seconds)).isoformat()

        # created first, ran last: x measured again (RETRIED_FROM) and failed again, in a
        # run of 3, which keeps the others (the device's state, perhaps), not it
        again = create(
            2, 28, *({"subnet_id": k, "at": at(25)} for k in "pq"),
            {"subnet_id": "x", "at": at(25), job_keys.RETRIED_FROM: "some-job"},
        )  # fmt: skip
        create(2, 5)  # ended after x's first failure
        origin = create(3, 10, {"subnet_id": "x", "at": at(1)}, {"subnet_id": "y"})  # y: at 10
        create(2, 20)  # ended after both
        create(0, 30)  # measured nothing
        create(5, None)  # still running
        mine = create(1, 40)  # the job asking: not counted
        with transaction(factory) as session:
            entries = pq.prior_failures(
                session, supernet=SPEC["supernet"], device="cpu-1t", validation_data=None,
                exclude_job=mine, limit=10,
            )  # fmt: skip
        found = {e["subnet_id"]: (e[job_keys.JOBS_SINCE], e[job_keys.REUSED_FROM]) for e in entries}
        assert found == {"x": (0, again), "y": (2, origin)}  # x: its newest failure


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_failure_of_the_evaluation_is_cleared_only_by_a_measurement_that_ran_it(
    backend: str, tmp_path: Path
) -> None:
    """A sub-network whose accuracy evaluation failed (out of memory with the validation
    batch) and that was timed alone since (a latency-only job, or accuracy taken from
    another device's measurement) would fail an accuracy job again: still taken; a
    measurement that evaluated it clears it. A latency-only job takes none of them."""
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        factory = make_session_factory(make_engine(url))

        def create(*failed: str, done: int = 0) -> str:
            entries = [{"subnet_id": k, "error": "MemoryError: out", "anchor": False,
                        "after": 0, job_keys.QUALITY_STEP: True} for k in failed]  # fmt: skip
            with transaction(factory) as session:
                job_id = q.create_job(session, {**SPEC, job_keys.FAILED: entries}).id
                q.get_job(session, job_id).evaluations_done = done
                return job_id

        def measured(job_id: str, **subnets: tuple[dict[str, float], dict[str, Any]]) -> None:
            with transaction(factory) as session:
                session.add_all(
                    Evaluation(
                        job_id=job_id, seq=seq, subnet_id=key, arch={}, metrics=metrics,
                        details=details, feasible=True, on_front=False, seconds=0.0,
                        created_at=utcnow(),
                    )
                    for seq, (key, (metrics, details)) in enumerate(subnets.items())
                )  # fmt: skip

        failed_in = create("x", "y", done=1)
        measured(
            create(),
            x=({"latency_ms": 1.0}, {}),  # a latency-only job
            y=({"accuracy": 0.5, "latency_ms": 1.0}, {job_keys.QUALITY_FROM: failed_in}),  # taken
        )
        mine = create()

        def found(**kwargs: Any) -> list[str]:
            with transaction(factory) as session:
                entries = pq.prior_failures(
                    session, supernet=SPEC["supernet"], device="cpu-1t", validation_data=None,
                    exclude_job=mine, limit=10, quality_metrics=["accuracy"], **kwargs,
                )  # fmt: skip
                return [e["subnet_id"] for e in entries]

        assert found() == ["y", "x"]  # newest first
        assert found(quality=False) == []
        measured(create(), x=({"accuracy": 0.4, "latency_ms": 1.0}, {}))  # evaluated
        assert found() == ["y"]


# HeldConnectionWriter (the API submitter's writes) and the batch write it runs,
# NewJobs.insert: one connection kept on PostgreSQL, a write run once more after the
# connection dropped, stored once whatever happened to the first try.


def _batch(*seeds: int) -> q.NewJobs:
    return q.NewJobs([(dict(SPEC, seed=seed), None) for seed in seeds])


def _stored(connection: Connection) -> list[int]:
    return sorted(connection.execute(select(q.JOBS.c.seed)).scalars())


class CountedInsert:
    """A batch's write, counting its tries."""

    def __init__(self, batch: q.NewJobs) -> None:
        self.batch = batch
        self.tries = 0

    def __call__(self, connection: Connection) -> list[q.JobRow]:
        self.tries += 1
        return self.batch.insert(connection)


def test_writes_share_one_connection_and_a_dropped_one_is_written_again(tmp_path: Path) -> None:
    with migrated_database("postgresql", tmp_path) as (url, engine, factory):
        checkouts: list[object] = []
        event.listen(engine.pool, "checkout", lambda *args: checkouts.append(args[0]))
        writer = HeldConnectionWriter(factory)
        first = [writer.write(_batch(seed).insert) for seed in (1, 2, 3)]
        assert [rows[0].seed for rows in first] == [1, 2, 3]
        assert len(checkouts) == 1  # held: no checkout (and no pre-ping) per write

        end_other_sessions(url)
        again = CountedInsert(_batch(4, 5))
        rows = writer.write(again)
        assert again.tries == 2 and [row.seed for row in rows] == [4, 5]
        assert len(checkouts) == 2
        writer.close()
        with engine.connect() as connection:
            assert _stored(connection) == [1, 2, 3, 4, 5]


def test_a_batch_written_again_after_it_was_committed_is_stored_once(tmp_path: Path) -> None:
    """The case a retry cannot tell apart: the first try committed, then the connection
    dropped before the answer came back."""
    with migrated_database("postgresql", tmp_path) as (_url, engine, _factory):
        batch = _batch(1, 2)
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        with autocommit.connect() as connection:
            first = batch.insert(connection)
        with autocommit.connect() as connection:
            second = batch.insert(connection)
            assert _stored(connection) == [1, 2]
        with engine.connect() as connection:
            read = [q.read_job(connection, row.id) for row in first]
        assert read == second  # the retry answers the rows the first try stored


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_failing_write_is_not_tried_again_and_the_next_one_goes(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, tmp_path) as (_url, engine, factory):
        writer = HeldConnectionWriter(factory)
        broken = CountedInsert(q.NewJobs([(dict(SPEC, supernet=None), None)]))  # NOT NULL
        with pytest.raises(StorageError, match="supernet"):
            writer.write(broken)
        assert broken.tries == 1
        assert [row.seed for row in writer.write(_batch(6).insert)] == [6]
        writer.close()
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(q.JOBS)).scalar() == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_servers_claiming_one_job_at_once_one_gets_it(backend: str, tmp_path: Path) -> None:
    """Two processes (two engines) claim a queued job; the second reads it before the first
    commits. SQLite has no row lock: both claims used to succeed and both servers ran it."""
    with migrated_database(backend, tmp_path) as (url, _engine, factory):
        with transaction(factory) as session:
            job_id = q.create_job(session, SPEC).id
        other_engine = make_engine(url)  # as another process has
        first, second = factory(), make_session_factory(other_engine)()
        try:
            assert q.claim_job(first, job_id, "server-a", stale_after_s=60) is not None
            answers: list[bool] = []

            def claim() -> None:
                answers.append(
                    q.claim_job(second, job_id, "server-b", stale_after_s=60) is not None
                )
                second.commit()

            racer = threading.Thread(target=claim)
            racer.start()
            racer.join(1)  # it waits for the first claim's commit (or has read before it)
            first.commit()
            racer.join(30)
            assert answers == [False]
        finally:
            first.close()
            second.close()
            other_engine.dispose()
        with transaction(factory) as session:
            job = q.get_job(session, job_id)
            assert (job.worker_id, job.attempts) == ("server-a", 1)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_cancel_asked_before_the_worker_died_ends_the_job_once_it_is_stale(
    backend: str, tmp_path: Path
) -> None:
    """Asked while its worker lived, which then died: with no worker of the device left, the
    job stayed running (and `hwnas wait` on it) until cancelled a second time."""
    from datetime import timedelta

    with migrated_database(backend, tmp_path) as (url, engine, factory):
        with transaction(factory) as session:
            asked, alive, running = (q.create_job(session, SPEC).id for _ in range(3))
        with transaction(factory) as session:
            for job_id in (asked, alive, running):
                assert q.claim_job(session, job_id, "w1", stale_after_s=60) is not None
            q.request_cancel(session, asked, stale_after_s=60)  # the worker was alive
            q.request_cancel(session, alive, stale_after_s=60)
            for job_id in (asked, running):  # their worker died two minutes ago
                q.get_job(session, job_id).heartbeat_at = utcnow() - timedelta(seconds=120)
        with transaction(factory) as session:
            assert q.cancel_abandoned(session, stale_after_s=60) == [asked]
        with transaction(factory) as session:
            job = q.get_job(session, asked)
            assert job.status == JobStatus.cancelled
            assert job.message.startswith("cancelled after 0 evaluations; its worker had stopped")
            assert q.get_job(session, alive).status == JobStatus.running  # still heartbeating
            assert q.get_job(session, running).status == JobStatus.running  # not asked
            assert q.cancel_abandoned(session, stale_after_s=60) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_locked_read_holds_the_row_until_its_writer_commits(backend: str, tmp_path: Path) -> None:
    """Two read-change-write steps on one job's spec (a worker recording a failure, a
    client changing labels) both land: the second's locked read waits for the first's
    commit. On SQLite, where a read takes no lock, the read takes the engine's write slot."""
    with migrated_database(backend, tmp_path) as (_url, _engine, factory):
        with transaction(factory) as session:
            job_id = q.create_job(session, SPEC).id
        first_read, errors = threading.Event(), []

        def change(key: str, *, first: bool) -> None:
            try:
                with transaction(factory) as session:
                    if not first:
                        assert first_read.wait(10)
                    job = q.get_job(session, job_id, lock=True)
                    if first:
                        first_read.set()
                        time.sleep(0.3)  # the other reads meanwhile, unless it waits
                    job.spec = {**job.spec, key: True}
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=change, args=("a",), kwargs={"first": True}),
            threading.Thread(target=change, args=("b",), kwargs={"first": False}),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with reading(factory) as connection:
            spec = q.read_job(connection, job_id).spec
        assert spec["a"] is True and spec["b"] is True


def test_what_changed_since_a_job_measured_is_told_and_what_it_did_not_record_is_not() -> None:
    """A job stored by a version that recorded no fingerprint (a plugin without
    ``quality_inputs``, or any code, before 2026-12-07) is exported and resumed as then;
    review 29: the code's fingerprint folded into ``measured_with`` made every stored job
    of a plugin with ``quality_inputs`` unexportable after the upgrade."""
    recorded = {job_keys.MEASURED_WITH: "fp", job_keys.MEASURED_CODE: "src"}
    assert job_keys.measuring_change(recorded, "fp", ("src",)) is None
    assert job_keys.measuring_change(recorded, "other", ("src",)) == "weights or data"
    assert job_keys.measuring_change(recorded, None, ("src",)) == "weights or data"
    assert job_keys.measuring_change(recorded, "fp", ("edited",)) == "code"
    assert (
        job_keys.measuring_change({job_keys.MEASURED_WITH: "fp"}, "fp", ("src",)) is None
    )  # before code
    assert job_keys.measuring_change({job_keys.MEASURED_WITH: None}, "now one", ("src",)) is None
    assert job_keys.measuring_change({}, "now one", (None,)) is None  # before fingerprints at all


def test_a_database_that_cannot_be_written_is_refused_at_the_start(tmp_path: Path) -> None:
    """A read-only file passed every start-up check: each submission then answered 503, a
    temporary error to its clients, while /healthz said ok (ops audit 29)."""
    from core.errors import ServiceUnavailable
    from store.db import check_migrated

    with migrated_database("sqlite", tmp_path) as (url, engine, _factory):
        check_migrated(engine)  # writable: passes
        path = url.split("///", 1)[1]
        read_only = make_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
        try:
            with pytest.raises(ServiceUnavailable, match="cannot write to the database .*readonly"):
                check_migrated(read_only)
        finally:
            read_only.dispose()


def test_a_sub_network_whose_measurement_failed_is_said_so_not_only_unmeasured(
    tmp_path: Path,
) -> None:
    """Plugin audit 32: its export (and look-up) said only "was not measured"."""
    failed = [
        {"subnet_id": "r28-a", "error": "RuntimeError: Expected 3D", "anchor": False},
        {
            "subnet_id": "r28-b",
            "error": "OSError: gone",
            "anchor": False,
            job_keys.REUSED_FROM: "j0",
        },
    ]
    with migrated_database("sqlite", tmp_path) as (_url, _engine, factory):
        with transaction(factory) as session:
            job = q.create_job(session, {**SPEC, job_keys.FAILED: failed})
        with transaction(factory) as session:
            said = {}
            for subnet in ("r28-a", "r28-b", "r28-c"):
                with pytest.raises(NotFound) as caught:
                    eq.get_evaluation(session, job.id, subnet)
                said[subnet] = str(caught.value)
    unmeasured = f"was not measured in job {job.id}"
    assert said["r28-a"] == (
        f"sub-network 'r28-a' {unmeasured}: its measurement failed: RuntimeError: Expected 3D"
    )
    assert said["r28-b"] == (
        f"sub-network 'r28-b' {unmeasured}: its measurement failed (in job j0, which this "
        "one's warm start took it from): OSError: gone"
    )
    assert said["r28-c"] == f"sub-network 'r28-c' {unmeasured}"


def test_a_request_digest_keeps_the_objectives_order_only() -> None:
    """Keys in any order digest alike, but objectives reordered are another request; ones
    in sorted order digest as before the order counted (a retry across an upgrade)."""
    body = {"supernet": "s", "objectives": {"accuracy": "max", "latency_ms": "min"}}
    asked = {"kind": "search", "body": body}
    turned = {"body": dict(reversed(body.items())), "kind": "search"}
    assert q.request_digest(asked) == q.request_digest(turned)
    before = hashlib.sha256(
        json.dumps(asked, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert q.request_digest(asked) == before
    reordered = {"latency_ms": "min", "accuracy": "max"}
    assert q.request_digest({**asked, "body": {**body, "objectives": reordered}}) != before


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_sharing_one_database_count_a_key_s_jobs_one_at_a_time(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each API process counts under a lock of its own (``JobSubmitter.limit_lock``): two
    processes on one PostgreSQL database both counted a key below its limit and both
    inserted (``LIMIT_LOCK`` now makes them wait). Here each "process" has an engine of its
    own, and a pause after each count widens the window: a batch per process (a held
    autocommit connection, as ``api.submissions`` writes), then keyed submissions (a
    transaction each, as ``create_job_once`` runs)."""
    _slow_counts(monkeypatch)
    with migrated_database(backend, tmp_path) as (url, engine, _):

        def batch(seed: int) -> int:
            own = make_engine(url)
            writer = HeldConnectionWriter(make_session_factory(own))
            new = q.NewJobs([q.Submission({**SPEC, "seed": seed}, None, "a")] * 2, limit=2)
            try:
                return len(writer.write(new.insert))
            finally:
                writer.close()
                own.dispose()

        def keyed(seed: int) -> bool:
            own = make_engine(url)
            try:
                with transaction(make_session_factory(own)) as session:
                    q.create_job_once(session, SPEC, f"k-{seed}", "d", submitted_by="b", limit=2)
                return True
            except LimitReached:
                return False
            finally:
                own.dispose()

        # one connection kept open, as a server's pool keeps them: on SQLite the last one
        # to close resets the WAL file, which one opening then may find busy (a flake)
        with engine.connect(), ThreadPoolExecutor(4) as pool:
            stored = list(pool.map(batch, range(3)))
            created = list(pool.map(keyed, range(4)))
        assert sum(stored) == 2 and sum(created) == 2, (stored, created)
        with reading(make_session_factory(engine)) as connection:
            assert q.active_jobs(connection, ["a", "b"]) == {"a": 2, "b": 2}
            if backend == "postgresql":  # every lock let go, none left on a pooled connection
                held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                assert connection.execute(text(held)).scalar_one() == 0


def test_a_keyed_job_stored_before_the_objectives_order_counted_is_found_again(
    tmp_path: Path,
) -> None:
    """Review 34a: a job keyed by an earlier version, its objectives unsorted, was 409 for
    the same request sent again after the upgrade (its digest now counts the order)."""
    turned = {**SPEC, "objectives": {"latency_ms": "min", "accuracy": "max"}}
    asked = {"route": "jobs", "body": {"objectives": turned["objectives"]}}
    now, before = q.request_digest(asked), q.request_digest(asked, objectives_order=False)
    assert now != before
    with migrated_database("sqlite", tmp_path) as (_, _, factory):
        with transaction(factory) as session:  # as the earlier version stored it
            old, created = q.create_job_once(session, turned, "k-old", before)
        assert created
        with transaction(factory) as session:
            found, created = q.create_job_once(session, turned, "k-old", now, earlier_digest=before)
        assert (found.id, created) == (old.id, False)
        # sorted, they digest as the earlier version did, but are in another order than
        # the job's: another request (review 34b L1)
        ordered = {**turned, "objectives": dict(sorted(turned["objectives"].items()))}
        with pytest.raises(Conflict), transaction(factory) as session:
            q.create_job_once(session, ordered, "k-old", before, earlier_digest=before)
        # the earlier digest with the objectives in another order: another request
        other = {**turned, "objectives": {"accuracy": "max", "latency_ms": "min"}}
        with pytest.raises(Conflict), transaction(factory) as session:
            q.create_job_once(session, other, "k-old", "d-x", earlier_digest=before)


def test_a_count_waits_for_the_lock_a_while_then_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 34a L3: a holder that hung (a half-open connection) would have stopped every
    process's submissions for good; now each waits ``LIMIT_LOCK_WAIT_S``, then is 503."""
    monkeypatch.setattr(q, "LIMIT_LOCK_WAIT_S", 0.3)
    with migrated_database("postgresql", tmp_path) as (_, engine, factory):
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": q.LIMIT_LOCK})
            started = time.monotonic()
            refused = pytest.raises(ServiceUnavailable, match="held the count")
            with refused, transaction(factory) as session:
                q.create_job_once(session, SPEC, "k-1", "d", submitted_by="a", limit=2)
            assert 0.3 <= time.monotonic() - started < 5
            writer = HeldConnectionWriter(factory)  # the batched path: the same
            with pytest.raises(ServiceUnavailable, match="held the count"):
                writer.write(q.NewJobs([q.Submission(SPEC, None, "a")], limit=2).insert)
            writer.close()
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": q.LIMIT_LOCK})
        with transaction(factory) as session:
            assert q.create_job_once(session, SPEC, "k-1", "d", submitted_by="a", limit=2)[1]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_keyed_retry_beside_its_first_try_finds_its_job_at_the_limit(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drill 34: the same keyed request sent twice at once to two API processes: one
    stored the key's job, the key's last allowed, while the other, having looked the key
    up before the lock, then counted it and was 429. Each "process" an engine of its own."""
    with migrated_database(backend, tmp_path) as (url, engine, factory):
        with transaction(factory) as session:
            q.create_job_once(session, SPEC, "first", "d0", submitted_by="a", limit=2)
        _slow_counts(monkeypatch)

        def send(_: int) -> str:
            own = make_engine(url)
            try:
                with transaction(make_session_factory(own)) as session:
                    job, _created = q.create_job_once(
                        session, SPEC, "again", "d1", submitted_by="a", limit=2
                    )
                return str(job.id)
            finally:
                own.dispose()

        with engine.connect(), ThreadPoolExecutor(2) as pool:  # kept open: as above
            answers = list(pool.map(send, range(2)))
        assert len(set(answers)) == 1  # one job, no LimitReached


def _slow_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pause after each count of active jobs: the window between a count and its insert
    made wide, where another "process" would count too without the lock."""
    count = q.active_jobs

    def slow_count(*args: Any, **kwargs: Any) -> Any:
        found = count(*args, **kwargs)
        time.sleep(0.2)
        return found

    monkeypatch.setattr(q, "active_jobs", slow_count)
