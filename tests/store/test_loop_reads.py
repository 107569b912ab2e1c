"""Reads on the event loop (``store.db.LoopReads``): the same rows as the thread-pool path,
never stale, and the SQLite memo only while no other connection has committed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, update

from core.errors import NotFound, ServiceUnavailable, StorageError
from store import jobs as q
from store.db import make_engine, make_loop_reads, make_session_factory, transaction, upgrade
from store.tables import JobStatus

from .backends import database_url

SPEC: dict[str, Any] = {
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "strategy": "random",
    "seed": 1,
    "budget": {"evaluations": 5},
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "constraints": {},
}


def _set_done(url: str, job_id: str, done: int) -> None:
    """A commit by another connection (as a worker recording an evaluation makes)."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            update(q.JOBS).where(q.JOBS.c.id == job_id).values(evaluations_done=done)
        )
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_loop_reads_match_the_thread_path_and_see_every_commit(
    backend: str, tmp_path: Path
) -> None:
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        with transaction(make_session_factory(engine)) as session:
            job_id = q.create_job(session, SPEC).id

        async def scenario() -> None:
            reads = make_loop_reads(url)
            try:
                row = await reads(q.read_job, job_id)
                with engine.connect() as connection:
                    assert tuple(row) == tuple(q.read_job(connection, job_id))
                assert row.status is JobStatus.queued and row.spec == SPEC

                for done in (1, 2, 3):  # plain and memoised reads both see each commit
                    _set_done(url, job_id, done)
                    assert (await reads(q.read_job, job_id)).evaluations_done == done
                    assert (await reads.cached(q.read_job, job_id)).evaluations_done == done

                with pytest.raises(NotFound):
                    await reads.cached(q.read_job, "no-such-job")
                rows, total = await reads(_list, 0, 10)
                assert total == 1 and rows[0].id == job_id
            finally:
                await reads.aclose()

        asyncio.run(scenario())
        engine.dispose()


def _list(connection: Connection, offset: int, limit: int) -> Any:
    return q.list_jobs(connection, offset=offset, limit=limit, status=None)


@pytest.fixture
def sqlite_job(tmp_path: Path) -> tuple[str, str]:
    """A migrated SQLite file holding one job: (url, job id)."""
    url = f"sqlite:///{tmp_path}/reads.db"
    upgrade(url)
    engine = make_engine(url)
    with transaction(make_session_factory(engine)) as session:
        job_id = q.create_job(session, SPEC).id
    engine.dispose()
    return url, job_id


def test_sqlite_memo_answers_repeats_until_another_connection_commits(
    sqlite_job: tuple[str, str],
) -> None:
    url, job_id = sqlite_job
    calls: list[str] = []

    def counted(connection: Connection, wanted: str) -> Any:
        calls.append(wanted)
        return q.read_job(connection, wanted)

    async def scenario() -> None:
        reads = make_loop_reads(url)
        try:
            first = await reads.cached(counted, job_id)
            assert await reads.cached(counted, job_id) is first  # nothing committed since
            assert len(calls) == 1
            _set_done(url, job_id, 4)
            fresh = await reads.cached(counted, job_id)
            assert len(calls) == 2 and fresh.evaluations_done == 4
            await reads(counted, job_id)  # an uncached call always reads
            assert len(calls) == 3
        finally:
            await reads.aclose()

    asyncio.run(scenario())


def test_a_database_error_is_a_storage_error_and_the_next_read_reconnects(
    sqlite_job: tuple[str, str],
) -> None:
    url, job_id = sqlite_job

    def broken(connection: Connection) -> Any:
        return connection.exec_driver_sql("SELECT * FROM no_such_table").all()

    async def scenario() -> None:
        reads = make_loop_reads(url)
        try:
            with pytest.raises(StorageError, match="no_such_table"):
                await reads(broken)
            rows, total = await reads(_list, 0, 5)
            assert total == 1 and rows[0].id == job_id
        finally:
            await reads.aclose()

    asyncio.run(scenario())


def test_an_unknown_dialect_is_refused_by_name() -> None:
    with pytest.raises(ServiceUnavailable, match="mysql"):
        make_loop_reads("mysql://localhost/db")


def test_a_broken_connection_is_a_storage_error_then_replaced(
    sqlite_job: tuple[str, str],
) -> None:
    url, job_id = sqlite_job

    async def scenario() -> None:
        reads = make_loop_reads(url)
        try:
            await reads.cached(q.read_job, job_id)
            # The driver's connection dies under it (what a disk or WAL failure looks like):
            # the memo's PRAGMA fails first, on the raw connection.
            reads._connection.connection.driver_connection.close()  # type: ignore[union-attr]
            with pytest.raises(StorageError, match="ProgrammingError"):
                await reads.cached(q.read_job, job_id)
            assert (await reads.cached(q.read_job, job_id)).id == job_id  # a new connection
        finally:
            await reads.aclose()

    asyncio.run(scenario())
