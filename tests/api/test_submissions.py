"""The group-commit submitter behind POST /v1/jobs: batches, commit before dispatch, and
what a failing batch, a failing or slow dispatch and a cancelled request do. Most run on
SQLite and on PostgreSQL (the distributed mode's database)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from api.submissions import JobSubmitter
from core.errors import ServiceUnavailable, StorageError
from store import jobs as q
from store.db import make_engine, make_session_factory, upgrade
from workers.dispatch import Dispatcher

from ..store.backends import database_url, end_other_sessions
from .helpers import job_spec


class CheckingDispatcher(Dispatcher):
    """Records dispatches; each job's row must already be committed (read on another
    connection); device ``unplugged`` raises, as a broker that refuses a publish would;
    device ``slow`` waits until ``release`` is set, as a broker that is away."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.dispatched: list[str] = []
        self.uncommitted: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()

    def dispatch(self, job_id: str, device: str) -> None:
        if device == "slow":
            assert self.release.wait(timeout=60)
        with self.engine.connect() as connection:
            found = connection.execute(select(q.JOBS.c.id).where(q.JOBS.c.id == job_id)).first()
        with self.lock:
            if found is None:
                self.uncommitted.append(job_id)
            if device == "unplugged":
                raise ConnectionError("broker refused the publish")
            self.dispatched.append(job_id)

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def served_devices(self) -> set[str]:
        return set()

    def waiting_reason(self, device: str) -> str | None:
        return None


def _spec(**overrides: Any) -> dict[str, Any]:
    spec = job_spec(**overrides)
    spec.update(warm_start=True, validation_data=None)
    return spec


def _stored(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(q.JOBS)).scalar_one()
    engine.dispose()
    return int(count)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        upgrade(url)
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For what depends on the writer thread's internals, not on the database."""
    url = f"sqlite:///{tmp_path}/submit.db"
    upgrade(url)
    return url


def test_concurrent_submissions_share_commits_and_each_is_dispatched_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = CheckingDispatcher(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)
    batches: list[int] = []
    insert = q.NewJobs.insert

    def counting(batch: q.NewJobs, connection: Any) -> Any:
        batches.append(len(batch))
        return insert(batch, connection)

    monkeypatch.setattr(q.NewJobs, "insert", counting)  # what both kinds of writes call

    async def scenario() -> list[Any]:
        rows = await asyncio.gather(
            *(submitter.submit(q.Submission(_spec(seed=i))) for i in range(60))
        )
        await submitter.aclose()
        return rows

    rows = asyncio.run(scenario())
    assert [row.seed for row in rows] == list(range(60))  # each request gets its own row
    assert len({row.id for row in rows}) == 60 and _stored(url) == 60
    assert sorted(dispatcher.dispatched) == sorted(row.id for row in rows)
    assert dispatcher.uncommitted == []  # committed before dispatched
    assert sum(batches) == 60 and len(batches) < 60, batches  # shared: 1 + the rest


def test_a_failing_batch_fails_all_its_requests_and_stores_none_of_them(url: str) -> None:
    dispatcher = CheckingDispatcher(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)
    broken = _spec()
    broken["supernet"] = None  # NOT NULL column: the batch's transaction fails

    async def scenario() -> list[Any]:
        results = await asyncio.gather(
            submitter.submit(q.Submission(_spec(seed=1))),
            submitter.submit(q.Submission(_spec(seed=2))),
            submitter.submit(q.Submission(broken)),
            return_exceptions=True,
        )
        after = await submitter.submit(q.Submission(_spec(seed=3)))  # the next batch is fine
        await submitter.aclose()
        return [*results, after]

    first, second, third, after = asyncio.run(scenario())
    # The first submission goes alone (no batch in flight); the two behind it share one.
    assert first.seed == 1
    assert isinstance(second, StorageError) and isinstance(third, StorageError)
    assert after.seed == 3
    assert _stored(url) == 2 and len(dispatcher.dispatched) == 2


def test_a_batch_whose_connection_dropped_is_stored_on_a_new_one(tmp_path: Path) -> None:
    """PostgreSQL restarted between two batches: the writer's held connection is gone, and
    the second batch is written again on a new one (not failed with a 503)."""
    with database_url("postgresql", tmp_path) as url:
        upgrade(url)
        dispatcher = CheckingDispatcher(url)
        submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)

        async def scenario() -> list[Any]:
            first = await submitter.submit(q.Submission(_spec(seed=1)))
            for _ in range(500):  # its dispatch (which reads it back) done first
                if dispatcher.dispatched:
                    break
                await asyncio.sleep(0.01)
            end_other_sessions(url)
            second = await submitter.submit(q.Submission(_spec(seed=2)))
            await submitter.aclose()
            return [first, second]

        rows = asyncio.run(scenario())
        assert [row.seed for row in rows] == [1, 2] and _stored(url) == 2
        assert sorted(dispatcher.dispatched) == sorted(row.id for row in rows)
        dispatcher.engine.dispose()


def test_a_failing_dispatch_is_logged_and_its_job_stays_stored(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = CheckingDispatcher(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)

    async def scenario() -> list[Any]:
        rows = [
            await submitter.submit(q.Submission(_spec(device=d))) for d in ("unplugged", "cpu-1t")
        ]
        await submitter.aclose()
        return rows

    unplugged, fine = asyncio.run(scenario())
    assert unplugged.device == "unplugged"  # accepted: its row is committed, queued
    assert dispatcher.dispatched == [fine.id] and _stored(url) == 2
    assert f"job {unplugged.id} is stored and queued but its dispatch failed" in caplog.text


def test_a_slow_dispatch_delays_neither_the_answer_nor_the_next_batch(url: str) -> None:
    dispatcher = CheckingDispatcher(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)

    async def scenario() -> None:
        slow = await asyncio.wait_for(submitter.submit(q.Submission(_spec(device="slow"))), 30)
        after = await asyncio.wait_for(submitter.submit(q.Submission(_spec(seed=9))), 30)
        assert dispatcher.dispatched == []  # both answered while the first publish hangs
        dispatcher.release.set()
        await submitter.aclose()  # waits for the dispatches, in order
        assert dispatcher.dispatched == [slow.id, after.id]

    asyncio.run(scenario())


def test_a_request_cancelled_before_its_batch_stores_nothing(url: str) -> None:
    dispatcher = CheckingDispatcher(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)

    async def scenario() -> None:
        first = asyncio.ensure_future(submitter.submit(q.Submission(_spec(seed=1))))
        gone = asyncio.ensure_future(submitter.submit(q.Submission(_spec(seed=2))))
        await asyncio.sleep(0)  # the first is being written, the second waits behind it
        gone.cancel()
        assert (await first).seed == 1
        await submitter.aclose()

    asyncio.run(scenario())
    assert _stored(url) == 1 and len(dispatcher.dispatched) == 1


def test_closing_stores_what_was_submitted_and_refuses_more(url: str) -> None:
    dispatcher = CheckingDispatcher(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)

    async def scenario() -> None:
        pending = [
            asyncio.ensure_future(submitter.submit(q.Submission(_spec(seed=i)))) for i in range(5)
        ]
        await asyncio.sleep(0)  # all five are waiting or in flight
        await submitter.aclose()
        # Everything is stored and dispatched once aclose returns. Each request's answer is
        # decided by then too; its task finishes on a later turn of the loop (the last
        # batch may be settled in the same turn that wakes aclose), so it is awaited, with
        # no writer left to produce it.
        assert _stored(url) == 5 and len(dispatcher.dispatched) == 5
        rows = await asyncio.wait_for(asyncio.gather(*pending), timeout=5)
        assert len({row.id for row in rows}) == 5
        with pytest.raises(ServiceUnavailable, match="shutting down"):
            await submitter.submit(q.Submission(_spec()))

    asyncio.run(scenario())
    assert _stored(url) == 5 and len(dispatcher.dispatched) == 5


class Interrupted(BaseException):
    """Not an ``Exception``: what a writer thread might meet beyond database errors."""


def test_an_interrupted_batch_is_answered_and_the_next_one_goes(sqlite_url: str) -> None:
    url = sqlite_url
    dispatcher = CheckingDispatcher(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)
    store = submitter._store

    def interrupted_once(pairs: list[Any]) -> Any:
        if pairs[0][0]["seed"] == 1:
            raise Interrupted("the writer was interrupted")
        return store(pairs)

    submitter._store = interrupted_once  # type: ignore[method-assign]

    async def scenario() -> list[Any]:
        first = await asyncio.wait_for(
            asyncio.gather(submitter.submit(q.Submission(_spec(seed=1))), return_exceptions=True),
            10,
        )
        after = await asyncio.wait_for(submitter.submit(q.Submission(_spec(seed=2))), 10)
        await asyncio.wait_for(submitter.aclose(), 10)
        return [*first, after]

    first, after = asyncio.run(scenario())
    assert isinstance(first, ServiceUnavailable) and "interrupted" in str(first)
    assert after.seed == 2 and _stored(url) == 1 and dispatcher.dispatched == [after.id]


def test_a_writer_that_refuses_work_fails_that_batch_only(sqlite_url: str) -> None:
    """A thread pool refuses new work at interpreter exit: the batch is answered 503, and the
    submitter is not left waiting for a batch that never started."""
    url = sqlite_url
    dispatcher = CheckingDispatcher(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)
    writer_submit = submitter._writer.submit
    refusals = [RuntimeError("cannot schedule new futures after interpreter shutdown")]

    def refusing_once(*args: Any) -> Any:
        if refusals:
            raise refusals.pop()
        return writer_submit(*args)

    submitter._writer.submit = refusing_once  # type: ignore[method-assign]

    async def scenario() -> Any:
        with pytest.raises(ServiceUnavailable, match="shutting down"):
            await asyncio.wait_for(submitter.submit(q.Submission(_spec(seed=1))), 10)
        after = await asyncio.wait_for(submitter.submit(q.Submission(_spec(seed=2))), 10)
        await asyncio.wait_for(submitter.aclose(), 10)
        return after

    after = asyncio.run(scenario())
    assert after.seed == 2 and _stored(url) == 1


def test_stored_jobs_are_answered_as_stored_when_dispatch_is_shut_down(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = CheckingDispatcher(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), dispatcher)
    submitter._dispatching.shutdown(wait=True)

    async def scenario() -> Any:
        row = await asyncio.wait_for(submitter.submit(q.Submission(_spec(seed=1))), 10)
        await asyncio.wait_for(submitter.aclose(), 10)
        return row

    row = asyncio.run(scenario())
    assert row.seed == 1 and _stored(url) == 1 and dispatcher.dispatched == []
    assert "1 stored jobs not dispatched (shutting down)" in caplog.text
