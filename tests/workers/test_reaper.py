"""The reaper gives up on a job left running after ``max_attempts`` claims, and re-publishes
one a clean shutdown gave back (re-publishing after a worker's death is also covered by the
distributed-mode tests, against a real worker)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import redis
from celery import Celery

from api.schemas import JobCreate
from hardware_profiles.configured import device_profile
from store import jobs as q
from store.db import database_id, make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus
from workers.celery_app import DATABASE_HEADER
from workers.reaper import reap_once

from ..conftest import embedded_settings
from .distributed import fresh_broker_url


def test_an_exhausted_running_job_is_failed_a_given_back_one_republished(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, max_attempts=2, stale_after_s=0.0)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(supernet="nb201-cifar10", device="nb201-pixel3").model_dump(mode="json")
    with transaction(factory) as session:
        running, given_back = q.create_jobs(session, [(spec, None)] * 2)
        q.get_job(session, running.id).status = JobStatus.running  # its worker died
        for row in (running, given_back):
            q.get_job(session, row.id).attempts = 2
    broker = fresh_broker_url()
    assert reap_once(Celery(broker=broker), factory, settings, ["nb201-pixel3"]) == [given_back.id]
    with transaction(factory) as session:
        failed = q.get_job(session, running.id)
        assert failed.status == JobStatus.failed
        assert failed.error is not None and "gave up after 2 attempts" in failed.error
        assert q.get_job(session, given_back.id).status == JobStatus.queued
    queue = device_profile("nb201-pixel3").queue
    [message] = redis.Redis.from_url(broker).lrange(queue, 0, -1)  # the given-back job, once
    assert json.loads(message)["headers"][DATABASE_HEADER] == database_id(factory)  # whose


def test_waiting_jobs_are_published_again_only_when_their_queue_lost_them(
    tmp_path: Path,
) -> None:
    """A backlog waiting its turn must not gain a message per job at every pass, and a
    message lost from a queue that never runs dry is made good."""
    settings = embedded_settings(tmp_path, stale_after_s=0.0)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(supernet="nb201-cifar10", device="nb201-pixel3").model_dump(mode="json")
    with transaction(factory) as session:
        ids = sorted(row.id for row in q.create_jobs(session, [(spec, None)] * 3))
    broker_url = fresh_broker_url()
    app, broker = Celery(broker=broker_url), redis.Redis.from_url(broker_url)
    queue = device_profile("nb201-pixel3").queue

    def reap() -> list[str]:
        return sorted(reap_once(app, factory, settings, ["nb201-pixel3"], broker))

    assert reap() == ids and broker.llen(queue) == 3  # no message anywhere: published
    assert reap() == [] and broker.llen(queue) == 3  # their messages wait in the queue
    broker.delete(queue)  # as a Redis restart without persistence leaves it
    assert reap() == ids and broker.llen(queue) == 3
    broker.rpop(queue)  # one message lost while the others wait (the oldest, kombu pops right)
    assert reap() == ids and broker.llen(queue) == 5  # all again: which one is unknown
    assert reap() == [] and broker.llen(queue) == 5


def test_a_job_this_process_runs_is_not_reaped_while_its_run_waits_out_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its heartbeats stop while the database is away; when it answers again the run hands
    the job back uncounted. The worker's own reaper got there first and re-queued it, so the
    next claim counted an attempt (a few outages failed a healthy job)."""
    from workers import reaper

    settings = embedded_settings(tmp_path, stale_after_s=0.0)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(supernet="nb201-cifar10", device="nb201-pixel3").model_dump(mode="json")
    with transaction(factory) as session:
        (row,) = q.create_jobs(session, [(spec, None)])
        q.get_job(session, row.id).status = JobStatus.running  # stale: no heartbeat
    app = Celery(broker=fresh_broker_url())
    monkeypatch.setattr(reaper, "RUNNING_HERE", {row.id})
    assert reap_once(app, factory, settings, ["nb201-pixel3"]) == []
    monkeypatch.setattr(reaper, "RUNNING_HERE", set())  # no run of it here: its worker died
    assert reap_once(app, factory, settings, ["nb201-pixel3"]) == [row.id]


def test_a_broker_away_is_one_warning_a_pass_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Chaos drill 32: each pass while Redis was down logged ~60 lines at ERROR."""
    from kombu.exceptions import OperationalError

    import workers.reaper

    def away(*_args: object) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6391. Connection refused.")

    monkeypatch.setattr(workers.reaper, "reap_once", away)
    settings = embedded_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="workers.reaper"):
        workers.reaper.reap_logged(Celery(), None, settings, None)  # type: ignore[arg-type]
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == (
        "reaper: the broker cannot be reached (Error 111 connecting to 127.0.0.1:6391. "
        "Connection refused.): a later pass re-publishes the jobs once it is back (each "
        "once HWNAS_STALE_AFTER_S passed since it was last published)"
    )
