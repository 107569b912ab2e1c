"""Deleting jobs: DELETE /v1/jobs/{id}, HwnasClient.delete and `hwnas prune` (the database
and the export cache grew without bound: a soak of 429 jobs, 87 % of its evaluation rows
warm-start copies, and no way to remove any; soak probe, session 20)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, update

from api.app import create_app
from api.cli import main
from api.client import ClientError, HwnasClient
from api.export_cache import EXPORTS
from api.retention import RetentionSweeper, prune
from core.settings import Settings, get_settings
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction
from store.tables import Evaluation, Job, utcnow

from ..conftest import embedded_settings
from .helpers import job_spec, wait_for

FMNIST = job_spec(budget={"evaluations": 2}, strategy="random", constraints={})


def _rows(settings: Any, job_id: str) -> int:
    factory = make_session_factory(make_engine(settings.database_url))
    with transaction(factory) as session:
        return session.scalar(select(func.count()).where(Evaluation.job_id == job_id)) or 0


def test_a_finished_job_is_deleted_with_its_rows_and_files(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        first = wait_for(client, client.post("/v1/jobs", json=FMNIST).json()["id"])
        again = wait_for(client, client.post("/v1/jobs", json=dict(FMNIST, seed=3)).json()["id"])
        assert again["progress"]["evaluations_reused"] == 2
        subnet = client.get(f"/v1/jobs/{first['id']}/evaluations").json()["data"][0]["subnet_id"]
        url = f"/v1/jobs/{{}}/subnets/{subnet}/export"
        before = client.get(url.format(again["id"]), params={"format": "onnx"})
        exports = Path(settings.data_dir) / EXPORTS / first["id"]
        assert before.status_code == 200 and exports.is_dir()

        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204
        assert client.get(f"/v1/jobs/{first['id']}").status_code == 404
        assert _rows(settings, first["id"]) == 0 and not exports.exists()
        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 404
        # the job that reused its measurements keeps them, and its download is built again
        assert len(client.get(f"/v1/jobs/{again['id']}/evaluations").json()["data"]) == 4
        after = client.get(url.format(again["id"]), params={"format": "onnx"})
        assert after.status_code == 200 and after.content != before.content  # its own card
        assert not exports.exists()  # not rebuilt in the deleted job's folder, left for nobody
        assert (Path(settings.data_dir) / EXPORTS / again["id"] / f"{subnet}.onnx").is_file()

        queued = client.post("/v1/jobs", json=job_spec(device="cpu-all")).json()  # no worker
        refused = client.delete(f"/v1/jobs/{queued['id']}")
        assert refused.status_code == 409 and "cancel it first" in refused.json()["message"]
        client.post(f"/v1/jobs/{queued['id']}/cancel")
        assert client.delete(f"/v1/jobs/{queued['id']}").status_code == 204


def test_the_client_deletes_and_says_why_it_cannot(tmp_path: Path) -> None:
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices="none"))) as served:
        client = HwnasClient("http://testserver")
        client.http = served
        job = client.submit(job_spec())
        with pytest.raises(ClientError) as refused:
            client.delete(job["id"])
        assert refused.value.status == 409
        client.cancel(job["id"])
        assert client.delete(job["id"]) is None
        with pytest.raises(ClientError) as gone:
            client.delete(job["id"])
        assert gone.value.status == 404


def _submitted(settings: Settings, count: int, *, cancelled: int) -> tuple[list[str], Any]:
    """``count`` jobs nobody serves, the first ``cancelled`` of them cancelled (ended); their
    ids, and a session factory on their database."""
    with TestClient(create_app(settings)) as client:
        ids = [client.post("/v1/jobs", json=job_spec(seed=k)).json()["id"] for k in range(count)]
        for job_id in ids[:cancelled]:
            client.post(f"/v1/jobs/{job_id}/cancel")
    return ids, make_session_factory(make_engine(settings.database_url))


def test_prune_deletes_the_jobs_that_ended_before_the_cutoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = embedded_settings(tmp_path, embedded_devices="none")
    ids, factory = _submitted(settings, 3, cancelled=2)
    with transaction(factory) as session:  # the first ended 40 days ago, the second now
        ended = utcnow() - timedelta(days=40)
        session.execute(update(Job).where(Job.id == ids[0]).values(finished_at=ended))
    data = Path(settings.data_dir)
    (data / EXPORTS / ids[0]).mkdir(parents=True)
    (data / "exports" / "1" / "old-job").mkdir(parents=True)  # a cache version no longer served
    (data / EXPORTS / "deleted-before").mkdir(parents=True)  # a job deleted earlier
    (data / EXPORTS / ids[1]).mkdir(parents=True)  # a job that stays
    monkeypatch.setenv("HWNAS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("HWNAS_DATA_DIR", str(data))
    get_settings.cache_clear()
    try:
        assert main(["prune", "--older-than", "30", "--dry-run"]) == 0
        said = capsys.readouterr()
        assert said.out == f"{ids[0]}\n"
        assert said.err == (  # the old version's folder: unsaid before (upgrade audit 31)
            "would delete 1 job that ended over 30 days ago; would remove 1 old export cache "
            "folder\n"
        )
        assert (data / "exports" / "1").exists()  # nothing removed
        with transaction(factory) as session:
            assert set(session.scalars(select(Job.id))) == set(ids)
        assert main(["prune", "--older-than", "30"]) == 0
    finally:
        get_settings.cache_clear()
    assert "deleted 1 job that ended over 30 days ago; removed 1 old export cache" in (
        capsys.readouterr().out
    )
    with transaction(factory) as session:
        left = set(session.scalars(select(Job.id)))
    assert left == set(ids[1:])  # the recent one, and the queued one that never ended
    assert not (data / EXPORTS / ids[0]).exists() and not (data / "exports" / "1").exists()
    assert not (data / EXPORTS / "deleted-before").exists()
    assert (data / EXPORTS / ids[1]).is_dir()
    assert main(["prune", "--older-than", "1e300"]) == 2  # too far back: said, no traceback


def test_a_prune_says_when_it_finds_no_exported_files_where_it_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run without the server's HWNAS_DATA_DIR it deleted the rows and left their files,
    without a word (ops audit 29)."""
    settings = embedded_settings(tmp_path, embedded_devices="none")
    _submitted(settings, 1, cancelled=1)
    monkeypatch.setenv("HWNAS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("HWNAS_DATA_DIR", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    try:
        assert main(["prune", "--older-than", "30"]) == 0
        err = capsys.readouterr().err
        assert f"hwnas: no data directory at {tmp_path / 'elsewhere'}: " in err
        (tmp_path / "elsewhere").mkdir()  # a server's, with no export yet: nothing to say
        assert main(["prune", "--older-than", "30"]) == 0
        assert capsys.readouterr().err == ""
    finally:
        get_settings.cache_clear()


def test_the_api_removes_what_ended_before_its_retention_on_its_own(tmp_path: Path) -> None:
    """``HWNAS_RETENTION_DAYS``: at its start (then hourly) the API deletes the jobs that
    ended longer ago and their files, as ``hwnas prune`` does; a queued job of any age,
    and a job that ended since, stay. Without it, nothing goes."""
    settings = embedded_settings(tmp_path, embedded_devices="none")
    ids, factory = _submitted(settings, 3, cancelled=2)
    long_ago = utcnow() - timedelta(days=40)
    with transaction(factory) as session:  # ended 40 days ago; the third queued as long
        session.execute(update(Job).where(Job.id == ids[0]).values(finished_at=long_ago))
        session.execute(update(Job).where(Job.id == ids[2]).values(created_at=long_ago))
    data = Path(settings.data_dir)
    (data / EXPORTS / ids[0]).mkdir(parents=True)
    (data / "exports" / "99" / "a-newer-version").mkdir(parents=True)  # a rolling upgrade's

    def left() -> set[str]:
        with transaction(factory) as session:
            return set(session.scalars(select(Job.id)))

    with TestClient(create_app(settings)):  # no retention: nothing removed
        pass
    assert left() == set(ids)
    kept = embedded_settings(tmp_path, embedded_devices="none", retention_days=30)
    with TestClient(create_app(kept)):
        deadline = time.monotonic() + 10
        while left() != set(ids[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert left() == set(ids[1:])
    assert not (data / EXPORTS / ids[0]).exists()
    assert (data / "exports" / "99").is_dir()  # hwnas prune's to remove, not the sweep's


def test_a_prune_deletes_a_chunk_per_transaction_and_stops_between_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, factory = _submitted(embedded_settings(tmp_path, embedded_devices="none"), 5, cancelled=5)
    monkeypatch.setattr(q, "DELETE_CHUNK", 2)
    commits: list[None] = []
    event.listen(factory.kw["bind"], "commit", lambda _connection: commits.append(None))
    stop = threading.Event()
    stop.set()
    assert prune(factory, tmp_path / "data", 0, stop=stop).job_ids == []  # stopped at once
    commits.clear()
    pruned = prune(factory, tmp_path / "data", 0)
    # a read, then 2 + 2 + 1 jobs deleted, each chunk committed (no folder: no read of it)
    assert pruned.job_ids == ids and len(commits) == 4
    with transaction(factory) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_deleting_a_running_job_whose_cancel_was_asked_says_to_wait(tmp_path: Path) -> None:
    """It said "cancel it first" to a user who just had (soak probe, session 21)."""
    settings = embedded_settings(tmp_path, embedded_devices="none")
    factory = make_session_factory(make_engine(settings.database_url))
    with TestClient(create_app(settings)) as client:
        job = client.post("/v1/jobs", json=job_spec()).json()
        with transaction(factory) as session:  # as a worker holds it
            session.execute(
                update(Job).where(Job.id == job["id"]).values(status="running", worker_id="w")
            )
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["cancel_requested"] is True
        refused = client.delete(f"/v1/jobs/{job['id']}")
        assert refused.status_code == 409
        message = refused.json()["message"]
        assert "its cancel asked: it ends after the evaluation in flight" in message
        assert "cancel it first" not in message


def test_a_retention_sweep_that_fails_is_logged_and_tried_again_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unmigrated = make_session_factory(make_engine(f"sqlite:///{tmp_path}/empty.db"))
    sweeper = RetentionSweeper(unmigrated, tmp_path / "data", 30)
    with caplog.at_level(logging.ERROR, logger="api.retention"):
        assert sweeper.sweep() is None
    assert "retention: the sweep failed; trying again in 3600 s" in caplog.text
