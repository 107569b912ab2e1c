"""Publishing jobs to their device's Celery queue on the real Redis: the message is the one
Celery's ``send_task`` would send; a batch goes out together and in order; a batch that
fails is published again one job at a time; a Redis restart does not stop the dispatcher."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection

from hardware_profiles.configured import device_profile
from store.db import database_id, make_engine, make_session_factory, upgrade
from workers import presence
from workers.celery_app import DATABASE_HEADER
from workers.celery_dispatch import CeleryDispatcher, publish

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
    dispatcher.stop()


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


# Fresh per message: the task id (also root_id and correlation_id) and kombu's delivery tag.
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag"}


def _raw_messages(broker_url: str, device: str) -> list[dict[str, Any]]:
    """The messages in ``device``'s queue as stored in Redis, ids blanked, oldest first."""
    client = redis.Redis.from_url(broker_url)
    try:
        raw = client.lrange(device_profile(device).queue, 0, -1)
    finally:
        client.close()
    messages = []
    for text in reversed(raw):  # kombu LPUSHes and its consumers pop from the right
        message = json.loads(text)
        for part in (message["headers"], message["properties"]):
            for key in PER_MESSAGE & part.keys():
                part[key] = "<fresh>"
        message["body"] = base64.b64decode(message["body"]).decode()
        messages.append(message)
    return messages


def test_the_message_is_the_one_celerys_send_task_sends(dispatcher: Any) -> None:
    """``publish`` bypasses ``send_task`` for speed; a worker must not see a difference
    (a newer Celery that changes its message would fail here, not in production)."""
    app, url = dispatcher.app, dispatcher.app.conf.broker_url
    app.send_task(
        "hwnas.run_job",
        args=["job-a"],
        queue=device_profile("cpu-1t").queue,
        ignore_result=True,  # the app's task_ignore_result, which publish states
    )
    publish(app, "job-a", "cpu-1t")  # alone: acquires a producer, retry policy
    with app.producer_or_acquire() as producer, producer.batch():
        publish(app, "job-a", "cpu-1t", producer, queue=device_profile("cpu-1t").queue)
    celerys, alone, batched = _raw_messages(url, "cpu-1t")
    # send_task also leaks its repr options into the transport properties; nothing reads them
    for key in ("argsrepr", "kwargsrepr"):
        assert celerys["properties"].pop(key, None) in (None, "['job-a']", "{}")
    assert alone == celerys
    assert batched == celerys
    assert celerys["headers"]["task"] == "hwnas.run_job"
    assert celerys["properties"]["delivery_info"] == {
        "exchange": "",
        "routing_key": device_profile("cpu-1t").queue,
    }


def test_each_message_names_the_database_it_was_published_for(dispatcher: Any) -> None:
    """Read by a worker that does not find the job (``workers.celery_app._unknown_job``)."""
    dispatcher._database = "d" * 32  # as start() reads it
    dispatcher.dispatch("job-a", "cpu-1t")
    dispatcher.dispatch_many(JOBS)
    messages = _raw_messages(dispatcher.app.conf.broker_url, "cpu-1t")
    assert len(messages) == 4
    assert {m["headers"][DATABASE_HEADER] for m in messages} == {"d" * 32}


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


def test_who_serves_what_comes_from_the_workers_announcements(dispatcher: Any) -> None:
    client = redis.Redis.from_url(dispatcher.app.conf.broker_url)
    ours = database_id(dispatcher.factory)
    dispatcher._database = ours  # as start() reads it
    presence.announce(client, "celery-a", ["cpu-1t", "nb201-pixel3"], ttl_s=10, database=ours)
    presence.announce(client, "celery-b", ["cpu-ort"], ttl_s=10, database=ours)
    dispatcher._served = dispatcher._ask_workers()
    assert dispatcher.served_devices() == {"cpu-1t", "nb201-pixel3", "cpu-ort"}
    assert dispatcher.waiting_message("cpu-1t") is None and dispatcher.problems() == []
    assert "no live worker serves device 'cpu-all'" in dispatcher.waiting_message("cpu-all")
    presence.withdraw(client, "celery-a")
    assert dispatcher._ask_workers() == {"cpu-ort"}


def test_workers_of_another_database_are_not_counted_and_are_a_problem(dispatcher: Any) -> None:
    """A worker on another database (a wrong HWNAS_DATABASE_URL, or another deployment on
    the same Redis) dropped this API's jobs as unknown while /healthz called its device
    served, and the jobs stayed queued with no message (operator probe, session 22)."""
    client = redis.Redis.from_url(dispatcher.app.conf.broker_url)
    ours = database_id(dispatcher.factory)
    assert ours is not None and len(ours) == 32
    dispatcher._database = ours
    presence.announce(client, "celery-a", ["cpu-ort"], ttl_s=10, database=ours)
    presence.announce(client, "celery-x", ["cpu-ts", "cpu-1t"], ttl_s=10, database="f" * 32)
    presence.announce(client, "celery-old", ["cpu-all"], ttl_s=10, database=None)  # counted
    dispatcher._served = dispatcher._ask_workers()
    assert dispatcher.served_devices() == {"cpu-ort", "cpu-all"}
    (problem,) = dispatcher.problems()
    assert problem.startswith("1 live worker(s) on this broker serve another database")
    assert "their devices (cpu-1t, cpu-ts) are not counted as served" in problem
    assert "no live worker serves device 'cpu-1t'" in dispatcher.waiting_message("cpu-1t")
    presence.withdraw(client, "celery-x")
    assert not client.exists(presence.DATABASE_PREFIX + "celery-x")
    dispatcher._ask_workers()
    assert dispatcher.problems() == []
    # What a version before the database's id reads: the devices alone, as a list.
    assert json.loads(client.get(presence.PREFIX + "celery-a")) == ["cpu-ort"]


def test_an_unreachable_broker_is_a_problem_a_new_job_is_told_of(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, broker_url="redis://127.0.0.1:1/0")  # nobody there
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    dispatcher = CeleryDispatcher(factory, settings)
    try:
        assert dispatcher._ask_workers() == set()
        (problem,) = dispatcher.problems()
        assert problem.startswith("broker unreachable")
        assert "the broker could not be reached" in dispatcher.waiting_message("cpu-1t")
        # A job whose publish failed says so once (its poll repeated the reason in other words)
        from api.presenters import stall_note
        from store import jobs as q
        from store.db import transaction

        spec = {"supernet": "nb201-cifar10", "device": "nb201-pixel3", "objectives": {},
                "budget": {"evaluations": 5}, "strategy": "random", "seed": 0}  # fmt: skip
        with transaction(factory) as session:
            job_id = q.create_job(session, spec).id
        dispatcher.dispatch(job_id, "nb201-pixel3")
        with transaction(factory) as session:
            job = q.get_job(session, job_id)
            assert job.message == dispatcher.waiting_message("nb201-pixel3")
            assert stall_note(job, 60.0, dispatcher) is None
    finally:
        dispatcher.stop()


def test_the_api_ends_a_job_whose_worker_died_after_its_cancel_was_asked(dispatcher: Any) -> None:
    """Nobody else would: the job's device may have no worker left to run a reaper."""
    from datetime import timedelta

    from store import jobs as q
    from store.db import transaction
    from store.tables import JobStatus, utcnow

    spec = {"supernet": "nb201-cifar10", "device": "nb201-pixel3", "objectives": {},
            "budget": {"evaluations": 5}, "strategy": "random", "seed": 0}  # fmt: skip
    with transaction(dispatcher.factory) as session:
        job_id = q.create_job(session, spec).id
        q.claim_job(session, job_id, "w1", stale_after_s=60)
        q.request_cancel(session, job_id, stale_after_s=60)
    dispatcher._end_abandoned_cancels()
    with transaction(dispatcher.factory) as session:
        job = q.get_job(session, job_id)
        assert job.status == JobStatus.running  # its worker is alive: it stops the job
        job.heartbeat_at = utcnow() - timedelta(seconds=dispatcher.settings.stale_after_s + 1)
    dispatcher._end_abandoned_cancels()
    with transaction(dispatcher.factory) as session:
        assert q.get_job(session, job_id).status == JobStatus.cancelled


def test_an_announcer_reads_its_database_identity_until_it_answers(dispatcher: Any) -> None:
    """Read once at the worker's start, a database away then stopped the reaper and the
    announcements for the worker's whole life (review, session 22)."""
    client = redis.Redis.from_url(dispatcher.app.conf.broker_url)
    answers: list[str | None] = []

    def database_of() -> str:
        answers.append(None)
        if len(answers) == 1:
            raise RuntimeError("the database is away")
        return "a" * 32

    announcer = presence.Announcer(
        client, "celery-z", ["cpu-1t"], heartbeat_s=0.05, database_of=database_of
    )
    announcer.start()
    reader = redis.Redis.from_url(dispatcher.app.conf.broker_url)
    try:
        for _ in range(100):
            if reader.get(presence.DATABASE_PREFIX + "celery-z") == b"a" * 32:
                break
            time.sleep(0.05)
        assert reader.get(presence.DATABASE_PREFIX + "celery-z") == b"a" * 32
        assert json.loads(reader.get(presence.PREFIX + "celery-z")) == ["cpu-1t"]
        assert len(answers) == 2  # asked again after the failure, then no more
    finally:
        announcer.stop()
        reader.close()
