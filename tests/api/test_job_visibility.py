"""Teams kept apart on one server: with HWNAS_JOB_VISIBILITY=own each API key sees,
changes and exports only the jobs it submitted, and its searches warm-start from those
alone; admin keys (HWNAS_ADMIN_API_KEYS) see every job (tenancy audit 33 H2)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.errors import InvalidInput
from core.redact import key_label

from ..conftest import embedded_settings
from .helpers import job_spec, wait_for

TEAM_A, TEAM_B = "team-a-key-0123456789", "team-b-key-0123456789"
ADMIN = "operator-key-0123456789"
WAITING = job_spec(device="cpu-all")  # nobody serves cpu-all here: its jobs stay queued
RECORDED = {
    "supernet": "nb201-cifar10",
    "device": "nb201-pixel3",
    "budget": {"evaluations": 6},
    "strategy": "random",
}


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def apart(tmp_path: Path) -> Iterator[TestClient]:
    settings = embedded_settings(
        tmp_path, api_keys=f"{TEAM_A},{TEAM_B}", admin_api_keys=ADMIN, job_visibility="own",
        embedded_devices="nb201-pixel3",
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_key_sees_and_changes_its_own_jobs_only(apart: TestClient) -> None:
    mine = apart.post("/v1/jobs", json=WAITING, headers=_as(TEAM_A)).json()
    theirs = apart.post("/v1/jobs", json=WAITING, headers=_as(TEAM_B)).json()
    url = mine["url"]
    nowhere = apart.get("/v1/jobs/no-such-job", headers=_as(TEAM_B))
    assert nowhere.status_code == 404
    for method, path, body in [
        ("GET", url, None),
        ("GET", f"{url}/evaluations", None),
        ("GET", f"{url}/pareto", None),
        ("GET", f"{url}/subnets/r20-k3e2-k3e2-k3e2/export", None),
        ("PATCH", url, {"labels": {"x": "1"}}),
        ("POST", f"{url}/cancel", None),
        ("DELETE", url, None),
    ]:
        answer = apart.request(method, path, json=body, headers=_as(TEAM_B))
        assert answer.status_code == 404, (method, path, answer.text)
        # told as a job that does not exist: whether another team's does is not said
        assert answer.json()["message"] == f"job '{mine['id']}' not found", (method, path)
    listed = apart.get("/v1/jobs", headers=_as(TEAM_B)).json()
    assert [job["id"] for job in listed["data"]] == [theirs["id"]] and listed["count"] == 1
    asked = {"submitted_by": key_label(TEAM_A.encode())}
    assert apart.get("/v1/jobs", params=asked, headers=_as(TEAM_B)).json()["count"] == 0
    # the owner does all of it; an admin key sees and cancels every team's
    assert apart.get(url, headers=_as(TEAM_A)).json()["status"] == "queued"
    assert apart.get("/v1/jobs", headers=_as(ADMIN)).json()["count"] == 2
    assert apart.post(f"{url}/cancel", headers=_as(ADMIN)).json()["status"] == "cancelled"
    assert apart.delete(url, headers=_as(TEAM_A)).status_code == 204


def test_a_search_warm_starts_from_its_own_key_s_jobs_only(apart: TestClient) -> None:
    def finished(key: str, seed: int) -> dict[str, Any]:
        apart.headers.update(_as(key))
        job = apart.post("/v1/jobs", json={**RECORDED, "seed": seed}).json()
        return wait_for(apart, job["id"])

    first = finished(TEAM_A, 0)
    assert first["status"] == "succeeded" and first["progress"]["evaluations_reused"] == 0
    other_team = finished(TEAM_B, 1)
    assert other_team["progress"]["evaluations_reused"] == 0  # team A's not copied in
    same_team = finished(TEAM_A, 2)
    assert same_team["progress"]["evaluations_reused"] == 6  # its own earlier job's


def test_own_visibility_needs_api_keys(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="HWNAS_JOB_VISIBILITY=own needs API keys"):
        create_app(embedded_settings(tmp_path, job_visibility="own"))


def test_searches_queued_before_own_was_set_are_said_at_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Security test 34 L2: such a search warm-starts from every key's jobs when it runs."""
    keys = {"api_keys": f"{TEAM_A},{TEAM_B}", "embedded_devices": "nb201-pixel3"}
    with TestClient(create_app(embedded_settings(tmp_path, **keys))) as before:
        for _ in range(2):
            assert before.post("/v1/jobs", json=WAITING, headers=_as(TEAM_A)).status_code == 202
    caplog.set_level(logging.WARNING, logger="api.app")
    with TestClient(create_app(embedded_settings(tmp_path, job_visibility="own", **keys))) as now:
        assert now.post("/v1/jobs", json=WAITING, headers=_as(TEAM_B)).status_code == 202
    said = [r.getMessage() for r in caplog.records if "HWNAS_JOB_VISIBILITY=own" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("2 searches queued or running")
