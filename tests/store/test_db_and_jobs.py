"""Engines and job queries: concurrent SQLite writers queue instead of failing, read rows."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from core.errors import NotFound
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus

from .backends import database_url

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
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
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
