"""Reads on the event loop (``store.db.LoopReads``): the same rows as the thread-pool path;
the SQLite memo only while no other connection has committed; the PostgreSQL memo per job,
dropped by the job's change notification, and off while its listener is down."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
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
                    if backend == "sqlite":  # PRAGMA data_version: at once
                        assert (await reads.cached(q.read_job, job_id)).evaluations_done == done
                    else:  # NOTIFY: once the notification has crossed the socket
                        await _until(lambda n=done: _done(reads, q.read_job, job_id, n))

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


@pytest.fixture
def postgres_job(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A migrated scratch PostgreSQL database with two jobs: (url, job id, other job id)."""
    with database_url("postgresql", tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        with transaction(make_session_factory(engine)) as session:
            ids = [q.create_job(session, SPEC).id for _ in range(2)]
        engine.dispose()
        yield url, ids[0], ids[1]


class _Counted:
    """``q.read_job`` that counts the reads reaching the database."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, connection: Connection, job_id: str) -> Any:
        self.calls += 1
        return q.read_job(connection, job_id)


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)


def _with_live_memo(
    url: str, job_id: str, read: _Counted, steps: Callable[[Any], Awaitable[None]]
) -> None:
    """``steps(reads)`` on fresh PostgreSQL loop reads, once their memo is live."""

    async def scenario() -> None:
        reads = make_loop_reads(url)
        try:
            await _until(lambda: _memo_live(reads, read, job_id))
            await steps(reads)
        finally:
            await reads.aclose()

    asyncio.run(scenario())


async def _memo_live(reads: Any, read: _Counted, job_id: str) -> bool:
    """True once a repeated read is answered without the database (the listener is up)."""
    await reads.cached(read, job_id)
    before = read.calls
    await reads.cached(read, job_id)
    return read.calls == before


def test_postgres_memo_is_dropped_per_job_by_notifications(
    postgres_job: tuple[str, str, str],
) -> None:
    url, job_id, other_id = postgres_job
    read = _Counted()

    async def steps(reads: Any) -> None:
        await reads.cached(read, other_id)
        calls = read.calls

        _set_done(url, other_id, 7)  # another job's commit keeps this job's memo
        await _until(lambda: _done(reads, read, other_id, 7))
        assert read.calls == calls + 1
        await reads.cached(read, job_id)
        assert read.calls == calls + 1

        _set_done(url, job_id, 3)  # this job's commit is seen, shortly after it
        await _until(lambda: _done(reads, read, job_id, 3))
        calls = read.calls
        assert (await reads.cached(read, job_id)).evaluations_done == 3
        assert read.calls == calls  # and memoised again

        await asyncio.to_thread(reads.forget, job_id)  # this process's own write
        await reads.cached(read, job_id)
        assert read.calls == calls + 1

    _with_live_memo(url, job_id, read, steps)


async def _done(reads: Any, read: Callable[..., Any], job_id: str, done: int) -> bool:
    return bool((await reads.cached(read, job_id)).evaluations_done == done)


def test_postgres_read_overtaken_by_a_notification_is_not_kept(
    postgres_job: tuple[str, str, str],
) -> None:
    """Unless the notification was another job's: busy jobs' commits do not keep the
    reads of the others from being memoised."""
    url, job_id, other_id = postgres_job
    read = _Counted()

    async def steps(reads: Any) -> None:
        def overtaken_by(changed: str) -> Callable[[Connection, str], Any]:
            def overtaken(connection: Connection, wanted: str) -> Any:
                reads.forget(changed)  # lands on the loop while this query waits on the socket
                return read(connection, wanted)

            return overtaken

        for changed, kept in ((job_id, False), (other_id, True)):
            overtaken = overtaken_by(changed)
            reads.forget(job_id)
            await asyncio.sleep(0)
            await reads.cached(overtaken, job_id)
            calls = read.calls
            await reads.cached(overtaken, job_id)
            assert read.calls == calls + (0 if kept else 1), changed

    _with_live_memo(url, job_id, read, steps)


def test_postgres_pollers_missing_at_once_share_one_read(
    postgres_job: tuple[str, str, str],
) -> None:
    """100 pollers that miss the memo together cost one read; one that comes after a
    change (here this process's own write) does not join a read begun before it."""
    url, job_id, _ = postgres_job
    read = _Counted()

    async def steps(reads: Any) -> None:
        calls = read.calls
        reads.forget(job_id)
        await asyncio.sleep(0)  # the forget lands
        rows = await asyncio.gather(*(reads.cached(read, job_id) for _ in range(100)))
        assert read.calls == calls + 1 and len({id(row) for row in rows}) == 1

        reads.forget(job_id)
        await asyncio.sleep(0)
        first = asyncio.ensure_future(reads.cached(read, job_id))
        await asyncio.sleep(0)  # its read has begun
        reads.forget(job_id)
        await asyncio.sleep(0)
        second = await reads.cached(read, job_id)
        assert read.calls == calls + 3 and second is not await first

        reads.forget(job_id)
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(reads.cached(read, job_id))
        await asyncio.sleep(0)
        gone.cancel()  # the first caller leaves: the others still get the read
        assert (await reads.cached(read, job_id)).id == job_id
        assert read.calls == calls + 4

    _with_live_memo(url, job_id, read, steps)


def test_postgres_a_stuck_read_is_not_joined_and_the_memo_is_bounded(
    postgres_job: tuple[str, str, str],
) -> None:
    """A poller does not wait on a shared read older than ``JOIN_S`` (before sharing, each
    poller waited for its own read only), and the replaced read is not memoised; a job
    polled under many base URLs keeps at most ``PER_JOB_MAX`` bodies, all jobs together
    ``CACHE_MAX``."""
    url, job_id, other_id = postgres_job
    read = _Counted()
    stuck = [True]

    def slow_once(connection: Connection, wanted: str, base: str) -> Any:
        if stuck.pop() if stuck else False:
            connection.exec_driver_sql("SELECT pg_sleep(1.5)")
        return read(connection, wanted)

    async def steps(reads: Any) -> None:
        first = asyncio.ensure_future(reads.cached(slow_once, job_id, "http://a"))
        await asyncio.sleep(reads.JOIN_S + 0.1)
        started = time.monotonic()
        second = await reads.cached(slow_once, job_id, "http://a")
        assert time.monotonic() - started < 1.0 and not first.done()
        assert await first is not second  # the replaced read, older, is not memoised:
        assert reads._memo[job_id][(slow_once, "http://a")] is second

        for n in range(3 * reads.PER_JOB_MAX):
            await reads.cached(slow_once, job_id, f"http://host-{n}")
        assert len(reads._memo[job_id]) <= reads.PER_JOB_MAX
        reads.CACHE_MAX = 10  # and at most CACHE_MAX in all
        for n in range(8):
            for job in (job_id, other_id):
                await reads.cached(slow_once, job, f"http://other-{n}")
        sizes = [len(held) for held in reads._memo.values()]
        assert sum(sizes) == reads._entries <= 10

    _with_live_memo(url, job_id, read, steps)


def test_postgres_memo_is_off_while_the_listener_is_down(
    postgres_job: tuple[str, str, str],
) -> None:
    url, job_id, _ = postgres_job
    read = _Counted()

    async def steps(reads: Any) -> None:
        os.kill(_listener_pid(url), signal.SIGTERM)  # what pg_terminate_backend sends
        await _until(lambda: _not_memoised(reads, read, job_id))
        _set_done(url, job_id, 5)  # a commit nobody hears: the listener is down
        assert (await reads.cached(read, job_id)).evaluations_done == 5
        await _until(lambda: _memo_live(reads, read, job_id))  # it reconnects
        assert (await reads.cached(read, job_id)).evaluations_done == 5
        _set_done(url, job_id, 6)  # and hears commits again
        await _until(lambda: _done(reads, read, job_id, 6))

    _with_live_memo(url, job_id, read, steps)


def _listener_pid(url: str) -> int:
    """The server process of the job-change listener on this database (there is one)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.exec_driver_sql(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = "
                    "'hwnas-job-listener' AND datname = current_database()"
                ).scalar_one()
            )
    finally:
        engine.dispose()


async def _not_memoised(reads: Any, read: _Counted, job_id: str) -> bool:
    before = read.calls
    await reads.cached(read, job_id)
    await reads.cached(read, job_id)
    return read.calls == before + 2


def test_postgres_memo_goes_off_when_the_listener_stops_answering(
    postgres_job: tuple[str, str, str],
) -> None:
    """A listener connection that dies without a word (here its server process is frozen
    with SIGSTOP; a vanished peer looks the same) would leave the memo on and deaf: after
    ``CHECK_S`` without a notification the listener asks, gets no answer, and drops it."""
    url, job_id, _ = postgres_job
    read = _Counted()

    async def steps(reads: Any) -> None:
        pid = _listener_pid(url)
        os.kill(pid, signal.SIGSTOP)
        try:
            await _until(lambda: _not_memoised(reads, read, job_id), timeout_s=10)
        finally:
            os.kill(pid, signal.SIGCONT)
        await _until(lambda: _memo_live(reads, read, job_id))  # and it listens again

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("store.db._AsyncDriverReads.CHECK_S", 0.5)
        _with_live_memo(url, job_id, read, steps)
