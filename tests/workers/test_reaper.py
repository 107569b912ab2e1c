"""The reaper gives up on a job claimed ``max_attempts`` times (re-publishing is covered by
the distributed-mode tests, against a real worker)."""

from __future__ import annotations

from pathlib import Path

from celery import Celery

from api.schemas import JobCreate
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus
from workers.reaper import reap_once

from ..conftest import embedded_settings


def test_a_stale_job_claimed_max_attempts_times_is_failed_not_republished(
    tmp_path: Path,
) -> None:
    settings = embedded_settings(tmp_path, max_attempts=2, stale_after_s=0.0)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(supernet="nb201-cifar10", device="nb201-pixel3").model_dump(mode="json")
    with transaction(factory) as session:
        running, queued = q.create_jobs(session, [(spec, None)] * 2)
        q.get_job(session, running.id).status = JobStatus.running
        for row in (running, queued):
            q.get_job(session, row.id).attempts = 2
    # a broker that cannot be reached: publishing anything would raise
    app = Celery(broker="redis://127.0.0.1:1/0")
    assert reap_once(app, factory, settings, ["nb201-pixel3"]) == []
    with transaction(factory) as session:
        for row in (running, queued):
            job = q.get_job(session, row.id)
            assert job.status == JobStatus.failed
            assert job.error is not None and "gave up after 2 attempts" in job.error
