"""Distributed mode for real: PostgreSQL, Redis, Celery worker processes, the HTTP API.

None of these tests uses eager mode. In CI they fail, not skip, when a service is missing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings
from store.db import database_id, upgrade
from workers import presence
from workers.celery_app import make_celery
from workers.celery_dispatch import publish

from ..api.helpers import job_spec, wait_for
from ..store.backends import temporary_postgres
from .distributed import (
    RESTARTS,
    WorkerProcess,
    fresh_broker_url,
    restart,
    service_env,
    stop_all,
    workers,
)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A migrated PostgreSQL database, a Redis database, and the API (in this process)."""
    with temporary_postgres() as database_url:
        upgrade(database_url)
        broker_url = fresh_broker_url()
        env = service_env(database_url, broker_url, tmp_path / "data")
        settings = Settings(
            database_url=database_url,
            broker_url=broker_url,
            data_dir=tmp_path / "data",
            auto_migrate=False,
            stale_after_s=float(env["HWNAS_STALE_AFTER_S"]),  # as its workers
            heartbeat_s=float(env["HWNAS_HEARTBEAT_S"]),
        )
        with TestClient(create_app(settings)) as client:
            try:
                yield {"env": env, "client": client, "tmp": tmp_path}
            finally:  # a test that failed before stopping the worker it started itself
                stop_all()


def _evaluations(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/jobs/{job_id}/evaluations", params={"limit": 500}).json()["data"]


def _message_when(client: TestClient, job_id: str, part: str, timeout_s: float) -> str:
    """The job's message once it holds ``part``."""
    deadline = time.monotonic() + timeout_s
    while part not in (message := client.get(f"/v1/jobs/{job_id}").json()["message"] or ""):
        assert time.monotonic() < deadline, f"no {part!r} after {timeout_s} s: {message!r}"
        time.sleep(0.5)
    return message


def _assert_complete(client: TestClient, job: dict[str, Any], budget: int) -> list[dict]:
    assert job["status"] == "succeeded", (job["error"], job["message"])
    evaluations = _evaluations(client, job["id"])
    assert len(evaluations) == budget == job["progress"]["evaluations_done"]
    assert len({e["subnet_id"] for e in evaluations}) == budget, "measured twice"
    assert [e["seq"] for e in evaluations] == list(range(budget)), "an evaluation was lost"
    return evaluations


def test_http_to_celery_worker_to_postgres_to_export_and_calibration(
    stack: dict[str, Any],
) -> None:
    client = stack["client"]
    with workers(stack["env"], stack["tmp"]):
        keyed = {"json": job_spec(budget={"evaluations": 4}), "headers": {"Idempotency-Key": "d1"}}
        job = client.post("/v1/jobs", **keyed).json()  # a keyed job: stored on its own
        job = wait_for(client, job["id"], timeout_s=180)
        again = client.post("/v1/jobs", **keyed)
        assert again.headers["idempotent-replayed"] == "true" and again.json()["id"] == job["id"]
        evaluations = _assert_complete(client, job, 4)
        assert all(e["details"]["worker"].startswith("celery-") for e in evaluations)
        front = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
        exported = client.get(f"/v1/jobs/{job['id']}/subnets/{front[0]['subnet_id']}/export")
        assert exported.status_code == 200 and exported.content[:2] != b""
        devices = _served_when_seen(client, "cpu-1t")
        assert devices["cpu-1t"] is True and devices["cpu-all"] is False
        # The worker announces its database's identity beside its devices (the API counts
        # only its own database's workers).
        broker = redis.Redis.from_url(stack["env"]["HWNAS_BROKER_URL"])
        (key,) = broker.keys(presence.DATABASE_PREFIX + "*")
        ours = database_id(client.app.state.session_factory)  # type: ignore[attr-defined]
        assert ours is not None and broker.get(key) == ours.encode()
        broker.close()

        # A calibration of the live device is a job the device's worker measures.
        url = "/v1/devices/cpu-1t/calibrations"
        calibration = client.post(url, json={"supernet": "fmnist-ofa-cnn", "n_samples": 5})
        assert calibration.status_code == 202, calibration.text
        calibration = wait_for(client, calibration.json()["id"], timeout_s=180)
        measured = _assert_complete(client, calibration, 5)
        assert all(e["details"]["worker"].startswith("celery-") for e in measured)
        (stored,) = client.get(url, params={"job_id": calibration["id"]}).json()["data"]
        assert stored["latency_source"] == "measured" and stored["n_measurements"] == 5


def _served_when_seen(client: TestClient, device: str, timeout_s: float = 20) -> dict:
    """The API learns which queues workers consume every few seconds, in the background."""
    deadline = time.monotonic() + timeout_s
    while True:
        devices = {d["id"]: d["served"] for d in client.get("/v1/devices").json()}
        if devices[device] or time.monotonic() > deadline:
            return devices
        time.sleep(0.5)


def test_a_worker_tells_a_deleted_jobs_message_from_another_databases(
    stack: dict[str, Any],
) -> None:
    """A job deleted while its message waited, and a message published for another
    database: a real worker drops both, saying which (MLOps audit L7: both were logged as
    a possible misconfiguration)."""
    client = stack["client"]
    job_id = client.post("/v1/jobs", json=job_spec(warm_start=False)).json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204  # its message stays
    app = make_celery(stack["env"]["HWNAS_BROKER_URL"])
    publish(app, "f" * 16, "cpu-1t", database="f" * 32)
    app.close()
    with workers(stack["env"], stack["tmp"]) as (worker,):
        deadline = time.monotonic() + 60
        while "f" * 16 not in worker.log() and time.monotonic() < deadline:
            time.sleep(0.5)
        log = worker.log()
    assert f"job {job_id} was deleted since it was queued (message dropped)" in log
    assert f"job {'f' * 16} was queued on another database (id {'f' * 32})" in log


def test_sigkilled_worker_job_is_finished_by_another(stack: dict[str, Any]) -> None:
    client, budget = stack["client"], 8
    first = WorkerProcess(stack["env"], "cpu-1t", stack["tmp"] / "victim.log")
    first.wait_ready()
    job_id = client.post("/v1/jobs", json=job_spec(budget={"evaluations": budget})).json()["id"]
    wait_for(client, job_id, until={"running"}, min_evaluations=2, timeout_s=120)
    first.kill()
    done_at_kill = client.get(f"/v1/jobs/{job_id}").json()["progress"]["evaluations_done"]
    assert done_at_kill < budget
    # Until a worker of its device starts, the job says its worker died and what to do.
    said = _message_when(client, job_id, "no live worker serves device 'cpu-1t'", 60)
    assert said.startswith("waiting: its worker stopped heartbeating at "), said
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    with workers(stack["env"], stack["tmp"]):
        job = wait_for(client, job_id, timeout_s=240)
    evaluations = _assert_complete(client, job, budget)
    assert job["attempts"] == 2
    assert len({e["details"]["worker"] for e in evaluations}) == 2


@pytest.mark.parametrize("service", sorted(RESTARTS))
def test_service_restart_mid_job(stack: dict[str, Any], service: str) -> None:
    client, budget = stack["client"], 6
    with workers(stack["env"], stack["tmp"]):
        job_id = client.post("/v1/jobs", json=job_spec(budget={"evaluations": budget})).json()["id"]
        wait_for(client, job_id, until={"running"}, min_evaluations=1, timeout_s=120)
        restart(service)
        job = _wait_through_outage(client, job_id)
        # The API goes on taking jobs: the restart dropped its submitter's connection
        # (PostgreSQL) or its broker connection (Redis).
        after = client.post("/v1/jobs", json=job_spec(budget={"evaluations": 2}, warm_start=False))
        assert after.status_code == 202, after.text
        later = wait_for(client, after.json()["id"], timeout_s=120)
    _assert_complete(client, job, budget)
    _assert_complete(client, later, 2)


def _wait_through_outage(client: TestClient, job_id: str, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return wait_for(client, job_id, timeout_s=max(1.0, deadline - time.monotonic()))
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_two_workers_on_one_queue_never_run_the_same_job(stack: dict[str, Any]) -> None:
    client, budget = stack["client"], 3
    with workers(stack["env"], stack["tmp"], count=2):
        ids = [
            client.post(
                # cold starts: this test is about who runs a job, not what it may reuse
                "/v1/jobs",
                json=job_spec(budget={"evaluations": budget}, seed=seed, warm_start=False),
            ).json()["id"]
            for seed in range(4)
        ]
        jobs = [wait_for(client, job_id, timeout_s=240) for job_id in ids]
    used = set()
    for job in jobs:
        evaluations = _assert_complete(client, job, budget)
        assert job["attempts"] == 1
        runners = {e["details"]["worker"] for e in evaluations}
        assert len(runners) == 1, f"job {job['id']} ran on {runners}"
        used |= runners
    assert len(used) == 2, "both workers should have taken jobs"


def test_a_busy_worker_still_serves_its_device(stack: dict[str, Any]) -> None:
    """A solo worker cannot answer Celery's broadcast while it runs a job; its device must
    not look unserved then (new jobs were told to start a worker they had)."""
    client = stack["client"]
    with workers(stack["env"], stack["tmp"]):
        assert _served_when_seen(client, "cpu-1t")["cpu-1t"] is True
        spec = job_spec(budget={"evaluations": 40}, warm_start=False)
        running = client.post("/v1/jobs", json=spec).json()["id"]
        wait_for(client, running, until={"running"}, timeout_s=120)
        time.sleep(6)  # past the API's refresh of who serves what (every 5 s)
        devices = {d["id"]: d["served"] for d in client.get("/v1/devices").json()}
        waiting = client.post("/v1/jobs", json={**spec, "seed": 1}).json()
        assert client.get(f"/v1/jobs/{running}").json()["status"] == "running"
        assert devices["cpu-1t"] is True and devices["cpu-all"] is False
        assert waiting["status"] == "queued" and waiting["message"] is None
        assert client.get("/healthz").json()["devices_served"] == ["cpu-1t"]
        for job_id in (running, waiting["id"]):
            client.post(f"/v1/jobs/{job_id}/cancel")
            wait_for(client, job_id, until={"cancelled"}, timeout_s=120)
    # A worker that stopped withdraws its devices at once.
    assert _served_when_seen(client, "cpu-all", timeout_s=8)["cpu-1t"] is False
    health = client.get("/healthz").json()  # "ok" with no worker at all (audit 30)
    assert health["status"] == "degraded" and health["devices_served"] == []
    assert health["problems"][0].startswith("no live worker serves any device")


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM,), (signal.SIGTERM, signal.SIGQUIT), (signal.SIGINT, signal.SIGINT)],
    ids=["warm", "warm-then-cold", "ctrl-c-twice"],
)
def test_a_stopped_worker_hands_its_job_back(stack: dict[str, Any], signals: tuple) -> None:
    """A shutdown interrupts the job after the evaluation in flight and puts it back in
    the queue, published again; a second signal (cold shutdown) does not fail it."""
    client, budget = stack["client"], 8
    first = WorkerProcess(stack["env"], "cpu-1t", stack["tmp"] / "stopped.log")
    first.wait_ready()
    spec = job_spec(budget={"evaluations": budget}, warm_start=False)
    job_id = client.post("/v1/jobs", json=spec).json()["id"]
    wait_for(client, job_id, until={"running"}, min_evaluations=1, timeout_s=120)
    for sig in signals:
        os.killpg(first.process.pid, sig)
        time.sleep(0.3)
    first.process.wait(timeout=60)  # it stops after the evaluation in flight, not the job
    first.stop()
    broker = redis.Redis.from_url(stack["env"]["HWNAS_BROKER_URL"])
    assert broker.keys("hwnas:worker:*") == []  # its devices withdrawn, cold shutdown too
    handed_back = client.get(f"/v1/jobs/{job_id}").json()
    assert handed_back["status"] == "queued", (handed_back, first.log())
    assert handed_back["progress"]["evaluations_done"] < budget
    assert "interrupted by a worker shutdown" in handed_back["message"]
    with workers(stack["env"], stack["tmp"]):  # the message published again reaches it
        job = wait_for(client, job_id, timeout_s=240)
    _assert_complete(client, job, budget)
    assert job["attempts"] == 1  # a run handed back is no attempt
