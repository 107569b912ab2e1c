"""``api.disk_space``: a full disk said by /healthz and by an export's answer."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from fastapi.testclient import TestClient

import api.disk_space
import api.routes.jobs
from api.app import create_app

from ..conftest import embedded_settings
from .helpers import job_spec, wait_for


class _Usage(NamedTuple):
    total: int
    used: int
    free: int


def test_health_is_degraded_while_the_disk_it_writes_on_is_nearly_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said ok while every write failed for want of space (ops audit 29)."""
    settings = embedded_settings(tmp_path, embedded_devices="none")
    Path(settings.data_dir).mkdir()
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        monkeypatch.setattr(shutil, "disk_usage", lambda _path: _Usage(10**9, 10**9, 5 * 2**20))
        health = client.get("/healthz").json()
    assert health["status"] == "degraded"
    [problem] = health["problems"]  # one file system: the data directory and the database's
    assert problem.startswith("5 MiB free where HWNAS_DATA_DIR and HWNAS_DATABASE_URL write (")
    assert problem.endswith("): exports and the database's writes fail once it is full")
    small = _Usage(200 * 2**20, 50 * 2**20, 150 * 2**20)  # a small volume, mostly free
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: small)
    assert api.disk_space.low_space(settings) == []  # was degraded for good (review 29)


def test_an_export_that_finds_no_room_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It answered a bare 500 (ONNX), or blamed the export process's death (TorchScript)."""

    def full(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        job = wait_for(
            client, client.post("/v1/jobs", json=job_spec(budget={"evaluations": 1})).json()["id"]
        )
        [evaluation] = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
        monkeypatch.setattr(api.routes.jobs, "export_subnet", full)
        answer = client.get(f"/v1/jobs/{job['id']}/subnets/{evaluation['subnet_id']}/export")
    assert answer.status_code == 503, answer.text
    assert answer.json()["message"].startswith("no space left where HWNAS_DATA_DIR writes (")
    assert "Retry-After" in answer.headers
    assert api.disk_space.no_room(OSError(errno.EACCES, "denied"), tmp_path) is None
