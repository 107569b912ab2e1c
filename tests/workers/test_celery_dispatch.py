"""Publishing jobs to their device's Celery queue on the real Redis: a batch goes out
together and in order; a batch that fails is published again one job at a time; a Redis
restart does not stop the dispatcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from store.db import make_engine, make_session_factory, upgrade
from workers.celery_dispatch import CeleryDispatcher
from workers.devices import device_profile

from ..conftest import embedded_settings
from .distributed import fresh_broker_url, restart

JOBS = [("job-a", "cpu-1t"), ("job-b", "cpu-all"), ("job-c", "cpu-1t"), ("job-d", "cpu-1t")]


@pytest.fixture
def dispatcher(tmp_path: Path) -> Any:
    settings = embedded_settings(tmp_path, broker_url=fresh_broker_url())
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    dispatcher = CeleryDispatcher(factory, settings)
    yield dispatcher
    dispatcher.app.close()


def _queued(broker_url: str, device: str) -> list[tuple[str, list[Any]]]:
    """(task name, args) of each message waiting in ``device``'s queue, oldest first."""
    found = []
    with Connection(broker_url) as connection:
        queue = connection.SimpleQueue(device_profile(device).queue)
        while True:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                break
            args, _kwargs, _embed = message.decode()
            found.append((message.headers["task"], args))
            message.ack()
        queue.close()
    return found


def test_a_batch_reaches_each_device_queue_in_order(dispatcher: Any) -> None:
    dispatcher.dispatch_many(JOBS)
    url = dispatcher.app.conf.broker_url
    assert _queued(url, "cpu-1t") == [("hwnas.run_job", [j]) for j in ("job-a", "job-c", "job-d")]
    assert _queued(url, "cpu-all") == [("hwnas.run_job", ["job-b"])]


def test_a_failed_batch_is_published_one_job_at_a_time(
    dispatcher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu import Producer

    def refuse(self: Producer, max_size: int = 1000) -> Any:
        raise ConnectionError("pipeline refused")

    monkeypatch.setattr(Producer, "batch", refuse)
    dispatcher.dispatch_many(JOBS)
    url = dispatcher.app.conf.broker_url
    assert [args for _, args in _queued(url, "cpu-1t")] == [["job-a"], ["job-c"], ["job-d"]]
    assert [args for _, args in _queued(url, "cpu-all")] == [["job-b"]]


def test_publishing_and_asking_work_again_after_a_redis_restart(dispatcher: Any) -> None:
    """The API's dispatcher outlives a broker restart (it used to close kombu's connection
    pool for good after the first failure: every later publish failed)."""
    assert dispatcher._ask_workers() == set()  # connections open before the restart
    dispatcher.dispatch("job-a", "cpu-1t")
    restart("redis")
    dispatcher._ask_workers()  # may fail once on the dead connection (logged, not raised)
    dispatcher.dispatch("job-b", "cpu-1t")
    dispatcher.dispatch_many([("job-c", "cpu-1t"), ("job-d", "cpu-all")])
    assert dispatcher._ask_workers() == set()
    dispatcher.dispatch("job-e", "cpu-1t")
    url = dispatcher.app.conf.broker_url
    # job-a went down with the old server (shutdown nosave); the rest all arrived
    assert [args for _, args in _queued(url, "cpu-1t")] == [["job-b"], ["job-c"], ["job-e"]]
    assert [args for _, args in _queued(url, "cpu-all")] == [["job-d"]]
