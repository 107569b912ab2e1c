"""Engines and job queries: concurrent SQLite writers queue instead of failing, read rows."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from core.errors import NotFound
from store import jobs as q
from store.db import (
    make_engine,
    make_session_factory,
    one_statement_writing,
    reading,
    transaction,
    upgrade,
    writing,
)
from store.tables import JobStatus

from .backends import database_url, migrated_database, set_timezone

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


def _typed(row: Any) -> dict[str, tuple[type, str]]:
    """Each column's type and repr: ``==`` alone takes 0 for 0.0, a str enum for its value
    and one instant in two time zones as equal, where a response would show them apart."""
    return {name: (type(value), repr(value)) for name, value in row._mapping.items()}


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
        return q.record_evaluation(
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
            evaluations, total = q.list_evaluations(session, job_id)
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
            assert q.list_evaluations(session, job_id)[1] == 4
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
            details = {"reused_from": "x"} if copied else {}
            q.add_reused_evaluation(
                session, job, subnet_id=subnet, arch={"k": subnet},
                metrics={"accuracy": 0.5}, details=details, feasible=True,
            )  # fmt: skip
            job.evaluations_reused += 1

        with transaction(factory) as session:
            on_gpu = q.create_job(session, dict(SPEC, device="cuda-0"))
            on_cpu = q.create_job(session, SPEC)
        with transaction(factory) as session:
            add(session, q.get_job(session, on_gpu.id), "a")
            add(session, q.get_job(session, on_gpu.id), "b", copied=True)
            add(session, q.get_job(session, on_cpu.id), "c")
        with transaction(factory) as session:
            later = q.create_job(session, SPEC)
        with transaction(factory) as session:
            add(session, q.get_job(session, on_gpu.id), "d")

        def subnets(**kwargs: Any) -> set[str]:
            with transaction(factory) as session:
                found = q.prior_evaluations(
                    session, supernet=SPEC["supernet"], device="cpu-1t", validation_data=None,
                    exclude_job="none", limit=100, **kwargs,
                )  # fmt: skip
                return {e.subnet_id for e in found}

        assert subnets() == {"c"}
        assert subnets(other_devices=True) == {"a", "d"}
        assert subnets(other_devices=True, before=later.created_at) == {"a"}
        assert subnets(other_devices=True, before=on_cpu.created_at) == set()
