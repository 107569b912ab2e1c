"""The embedded dispatcher's start-up: what it resumes, and what it gives up on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.schemas import JobCreate
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus
from workers.dispatch import EmbeddedDispatcher

from ..conftest import embedded_settings

SPEC: dict[str, Any] = {
    "supernet": "nb201-cifar10",
    "device": "nb201-pixel3",
    "budget": {"evaluations": 4},
    "strategy": "random",
}


def test_start_fails_a_job_left_running_too_often_and_resumes_the_others(
    tmp_path: Path,
) -> None:
    """A job the previous process left ``running`` (it died mid-job) after ``max_attempts``
    claims is failed, not run again; one a shutdown put back in the queue is resumed
    whatever its count, as is a running one with attempts left."""
    settings = embedded_settings(tmp_path, embedded_devices="nb201-pixel3", max_attempts=3)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(**SPEC).model_dump(mode="json")
    states = {"crashing": (JobStatus.running, 3), "crashed": (JobStatus.running, 2)}
    states |= {"requeued": (JobStatus.queued, 7), "new": (JobStatus.queued, 0)}
    ids = {}
    with transaction(factory) as session:
        rows = q.create_jobs(session, [(spec, None)] * len(states))
        for (name, (status, attempts)), row in zip(states.items(), rows, strict=True):
            job = q.get_job(session, row.id)
            job.status, job.attempts, job.worker_id = status, attempts, "a-dead-process"
            ids[name] = row.id
    dispatcher = EmbeddedDispatcher(factory, settings)
    resumed: list[str] = []
    dispatcher._submit = lambda job_id, takeover: resumed.append(job_id)  # type: ignore[method-assign]
    dispatcher.start()
    assert sorted(resumed) == sorted(ids[n] for n in ("crashed", "requeued", "new"))
    with transaction(factory) as session:
        crashing = q.get_job(session, ids["crashing"])
        assert crashing.status == JobStatus.failed
        assert crashing.error is not None and "gave up after 3 attempts" in crashing.error
        assert q.get_job(session, ids["requeued"]).status == JobStatus.queued
    dispatcher.stop()
