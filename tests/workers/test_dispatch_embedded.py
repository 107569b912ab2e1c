"""The embedded dispatcher's start-up: what it resumes, and what it gives up on."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from api.schemas import JobCreate
from core.errors import UnknownName
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus, utcnow
from workers.dispatch import EmbeddedDispatcher, local_devices

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
    states["cancelled"] = (JobStatus.running, 3)  # crashing too, but its user cancelled it
    ids = _jobs(factory, spec, states)
    dispatcher = EmbeddedDispatcher(factory, settings)
    resumed: list[str] = []
    dispatcher._submit = lambda job_id, takeover_from=None: resumed.append(job_id)  # type: ignore[method-assign]
    dispatcher.start()
    assert sorted(resumed) == sorted(ids[n] for n in ("crashed", "requeued", "new"))
    with transaction(factory) as session:
        crashing = q.get_job(session, ids["crashing"])
        assert crashing.status == JobStatus.failed
        assert crashing.error is not None and "gave up after 3 attempts" in crashing.error
        assert q.get_job(session, ids["requeued"]).status == JobStatus.queued
        assert q.get_job(session, ids["cancelled"]).status == JobStatus.cancelled
    dispatcher.stop()


def test_a_server_that_serves_no_device_touches_no_job(tmp_path: Path) -> None:
    """No usable device (a GPU profile on a machine without one): other servers' jobs are
    neither resumed nor failed here."""
    settings = embedded_settings(tmp_path, embedded_devices="cuda-0", max_attempts=1)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(**SPEC).model_dump(mode="json")
    ids = _jobs(factory, spec, {"running": (JobStatus.running, 5), "queued": (JobStatus.queued, 0)})
    dispatcher = EmbeddedDispatcher(factory, settings)
    assert dispatcher.served_devices() == set()
    resumed: list[str] = []
    dispatcher._submit = lambda job_id, takeover_from=None: resumed.append(job_id)  # type: ignore[method-assign]
    dispatcher.start()
    assert resumed == []
    with transaction(factory) as session:
        assert q.get_job(session, ids["running"]).status == JobStatus.running
    dispatcher.stop()


def _jobs(factory: Any, spec: dict[str, Any], states: dict[str, tuple[JobStatus, int]]) -> dict:
    """One job per state (status, attempts), as a process that died left them; ids by name.
    The one called "cancelled" has a cancel request."""
    ids = {}
    with transaction(factory) as session:
        rows = q.create_jobs(session, [(spec, None)] * len(states))
        for (name, (status, attempts)), row in zip(states.items(), rows, strict=True):
            job = q.get_job(session, row.id)
            job.status, job.attempts, job.worker_id = status, attempts, "a-dead-process"
            job.heartbeat_at = utcnow() - timedelta(hours=1)  # silent since it died
            job.cancel_requested = name == "cancelled"
            ids[name] = row.id
    return ids


def test_a_job_another_live_server_runs_is_left_to_it(tmp_path: Path) -> None:
    """A second embedded server on the same database (``hwnas run`` beside ``hwnas
    serve``) does not take a running job from a live one; it takes at once the job of one
    whose process on this host has ended, and later one whose worker went silent."""
    settings = embedded_settings(
        tmp_path, embedded_devices="nb201-pixel3", stale_after_s=0.5, heartbeat_s=0.2
    )
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(**SPEC).model_dump(mode="json")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    host = socket.gethostname()
    holders = {
        "live here": f"embedded:{host}:{os.getpid()}:abc",
        "ended here": f"embedded:{host}:{ended.stdout.strip()}:def",
        "live elsewhere": f"embedded:another-host:{ended.stdout.strip()}:ghi",
    }
    ids = {}
    with transaction(factory) as session:
        for name, holder in holders.items():
            job = q.get_job(session, q.create_jobs(session, [(spec, None)])[0].id)
            job.status, job.worker_id, job.attempts = JobStatus.running, holder, 1
            job.heartbeat_at = utcnow() + timedelta(seconds=1.5)  # heartbeating for now
            ids[name] = job.id
    dispatcher = EmbeddedDispatcher(factory, settings)
    resumed: list[tuple[str, str | None]] = []
    dispatcher._submit = lambda job_id, takeover_from=None: resumed.append((job_id, takeover_from))  # type: ignore[method-assign]
    dispatcher.start()
    try:
        assert resumed == [(ids["ended here"], holders["ended here"])]
        deadline = time.monotonic() + 10  # the others go silent: taken by a later look
        while len({job_id for job_id, _ in resumed}) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {job_id for job_id, _ in resumed} == set(ids.values())
        with transaction(factory) as session:
            job = q.create_jobs(session, [(spec, None)])[0]  # queued by another server
        while (job.id, None) not in resumed and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (job.id, None) in resumed
    finally:
        dispatcher.stop()


def test_the_embedded_devices_setting_names_profiles(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def served(names: str) -> set[str]:
        return local_devices(embedded_settings(tmp_path, embedded_devices=names))

    everything = served("")
    assert {"cpu-1t", "nb201-pixel3"} <= everything
    assert served("none") == set()
    assert served(" cpu-1t , nb201-pixel3 ") == {"cpu-1t", "nb201-pixel3"}
    if "cuda-0" not in everything:  # a machine without a GPU: named, yet not served
        with caplog.at_level(logging.WARNING, logger="workers.dispatch"):
            assert served("cpu-1t,cuda-0") == {"cpu-1t"}
        assert "cannot run them: cuda-0" in caplog.text
    with pytest.raises(UnknownName, match="unknown device 'cpu-lt'") as raised:
        served("cpu-1t,cpu-lt")
    assert raised.value.field == "HWNAS_EMBEDDED_DEVICES"


def test_a_job_found_twice_is_queued_on_the_pool_once(tmp_path: Path) -> None:
    """The watcher may find a queued job between the submitter's commit and its dispatch:
    two runs of one job under one worker id would both be let in."""
    settings = embedded_settings(tmp_path, embedded_devices="nb201-pixel3", embedded_workers=2)
    upgrade(settings.database_url)
    dispatcher = EmbeddedDispatcher(
        make_session_factory(make_engine(settings.database_url)), settings
    )
    release, runs = threading.Event(), []

    def run(job_id: str, takeover_from: str | None = None) -> None:
        runs.append(job_id)
        release.wait(10)

    dispatcher.runner.run = run  # type: ignore[method-assign]
    dispatcher.dispatch("job-1", "nb201-pixel3")
    dispatcher._submit("job-1")
    release.set()
    dispatcher.stop()
    assert runs == ["job-1"]


def test_a_job_waiting_in_the_pool_says_how_many_are_before_it(tmp_path: Path) -> None:
    """With every thread busy, a queued job says how many of this server's jobs run or
    wait before it; once its turn comes, or for a job not in the pool, nothing."""
    settings = embedded_settings(tmp_path, embedded_devices="nb201-pixel3", embedded_workers=2)
    upgrade(settings.database_url)
    dispatcher = EmbeddedDispatcher(
        make_session_factory(make_engine(settings.database_url)), settings
    )
    release, started = threading.Event(), threading.Semaphore(0)

    def run(job_id: str, takeover_from: str | None = None) -> None:
        started.release()
        release.wait(10)

    dispatcher.runner.run = run  # type: ignore[method-assign]
    for k in range(4):
        dispatcher.dispatch(f"job-{k}", "nb201-pixel3")
    assert started.acquire(timeout=10) and started.acquire(timeout=10)  # two threads busy
    reasons = [dispatcher.queue_reason(f"job-{k}") for k in range(5)]
    release.set()
    dispatcher.stop()
    at_a_time = "(it runs 2 at a time: HWNAS_EMBEDDED_WORKERS)"
    assert reasons == [
        None,
        None,
        f"2 jobs of this server run or wait before it {at_a_time}",
        f"3 jobs of this server run or wait before it {at_a_time}",
        None,  # not in the pool
    ]
    assert dispatcher.queue_reason("job-3") is None  # it ran


def test_a_gone_workers_lease_is_taken_only_from_that_worker(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(**SPEC).model_dump(mode="json")
    with transaction(factory) as session:
        job_id = q.create_jobs(session, [(spec, None)])[0].id
        assert q.claim_job(session, job_id, "server-b", stale_after_s=60)  # b runs it, live
    with transaction(factory) as session:  # a process that saw "server-a" gone comes late
        assert q.claim_job(session, job_id, "c", stale_after_s=60, takeover_from="a") is None
        taken = q.claim_job(session, job_id, "c", stale_after_s=60, takeover_from="server-b")
        assert taken is not None and taken.worker_id == "c"


def test_an_idle_server_takes_another_server_s_queued_job_within_a_heartbeat(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two servers on one database: a job queued on the busy one waited up to
    ``stale_after_s`` (a minute) while the other idled (ops audit 29). A busy server keeps
    looking that rarely: its look reads every unfinished job while it may be timing."""
    settings = embedded_settings(
        tmp_path, embedded_devices="nb201-pixel3", stale_after_s=60, heartbeat_s=0.2
    )
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(**SPEC).model_dump(mode="json")
    dispatcher = EmbeddedDispatcher(factory, settings)
    taken: list[str] = []
    dispatcher._submit = lambda job_id, takeover_from=None: taken.append(job_id)  # type: ignore[method-assign]
    dispatcher.start()
    try:
        with caplog.at_level(logging.INFO, logger="workers.dispatch"):
            with transaction(factory) as session:
                queued = q.create_jobs(session, [(spec, None)])[0].id  # another server's
            deadline = time.monotonic() + 3
            while queued not in taken and time.monotonic() < deadline:
                time.sleep(0.05)
        assert queued in taken
        assert f"taking queued job {queued}" in caplog.text  # not "resuming": it never ran
        dispatcher._mine.add("a job of its own")  # busy now
        with transaction(factory) as session:
            later = q.create_jobs(session, [(spec, None)])[0].id
        time.sleep(1.0)  # five heartbeats
        assert later not in taken
    finally:
        dispatcher.stop()
