"""Searching a recorded supernet through the service, and user profile directories."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import get_settings

from ..conftest import embedded_settings
from .helpers import wait_for

SPEC = {
    "supernet": "nb201-cifar10",
    "device": "nb201-pixel3",
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "budget": {"evaluations": 40},
    "strategy": "nsga2",
    "seed": 1,
}


def test_a_recorded_search_is_labelled_recorded_and_not_exportable(tmp_path: Path) -> None:
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=""))) as client:
        job = wait_for(client, client.post("/v1/jobs", json=SPEC).json()["id"])
        assert job["status"] == "succeeded" and job["progress"]["evaluations_done"] == 40
        front = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
        assert front and all(p["latency"]["provenance"] == "recorded" for p in front)
        assert all(p["export_url"] is None for p in front)
        exported = client.get(f"/v1/jobs/{job['id']}/subnets/{front[0]['subnet_id']}/export")
        assert exported.status_code == 409 and "no weights" in exported.json()["detail"]
        assert "field" not in exported.json()  # nothing the caller sent was wrong


def test_recorded_and_live_devices_do_not_mix(client: TestClient) -> None:
    response = client.post("/v1/jobs", json=dict(SPEC, device="cpu-1t"))
    assert response.status_code == 422 and "nb201-pixel3" in response.json()["message"]
    response = client.post("/v1/jobs", json=dict(SPEC, supernet="fmnist-ofa-cnn"))
    assert response.status_code == 422 and "cpu-1t" in response.json()["message"]


def test_profiles_from_hwnas_profile_dirs(tmp_path: Path, monkeypatch) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "remote-phone.yaml").write_text(
        "id: remote-phone\nname: a phone behind a slow link\nkind: recorded\nsource: nb201\n"
        "recorded_column: lat_ms_pixel2\nsimulated_delay_ms: 5\n"
    )
    (tmp_path / "none-here").mkdir()
    # a space after the comma, as in every other list setting
    monkeypatch.setenv("HWNAS_PROFILE_DIRS", f"{tmp_path / 'none-here'}, {profiles}")
    get_settings.cache_clear()
    try:
        with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=""))) as client:
            devices = {d["id"]: d for d in client.get("/v1/devices").json()}
            assert devices["remote-phone"]["served"] is True
            spec = dict(SPEC, device="remote-phone", budget={"evaluations": 5})
            job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
            evaluations = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
            assert all(e["seconds"] >= 0.005 for e in evaluations)  # the simulated link
    finally:
        get_settings.cache_clear()


def test_the_evaluations_of_a_job_that_did_not_succeed_flag_the_front_pareto_lists(
    tmp_path: Path,
) -> None:
    """on_front was stored only when a job succeeded: a cancelled (or running, or failed)
    job's listing said false for every point while /pareto showed a front."""
    from store import evaluations as eq
    from store import jobs as q
    from store.db import transaction
    from store.tables import JobStatus

    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=""))) as client:
        job_id = wait_for(client, client.post("/v1/jobs", json=SPEC).json()["id"])["id"]
        factory = client.app.state.session_factory  # type: ignore[attr-defined]
        with transaction(factory) as session:  # as a cancel before its end leaves it
            eq.set_front(session, job_id, [])
            q.get_job(session, job_id).status = JobStatus.cancelled
        front = {p["subnet_id"] for p in client.get(f"/v1/jobs/{job_id}/pareto").json()["data"]}
        listed = client.get(f"/v1/jobs/{job_id}/evaluations", params={"limit": 500}).json()
        assert front and {e["subnet_id"] for e in listed["data"] if e["on_front"]} == front
        page = client.get(f"/v1/jobs/{job_id}/evaluations", params={"offset": 30}).json()
        assert {e["subnet_id"] for e in page["data"] if e["on_front"]} <= front
