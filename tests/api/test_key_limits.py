"""Several teams on one server: who submitted each job, each API key's limit of active jobs
(HWNAS_MAX_ACTIVE_JOBS_PER_KEY) and its own Idempotency-Keys (tenancy audit 33)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.submissions import JobSubmitter
from core.errors import LimitReached, ServiceUnavailable
from core.redact import key_label
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus

from ..conftest import embedded_settings
from .helpers import job_spec

TEAM_A, TEAM_B = "team-a-key-0123456789", "team-b-key-0123456789"
LABEL_A = key_label(TEAM_A.encode())
WAITING = job_spec(device="cpu-all")  # nobody serves cpu-all here: its jobs stay queued


def _as(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[TestClient]:
    settings = embedded_settings(tmp_path, api_keys=f"{TEAM_A},{TEAM_B}", max_active_jobs_per_key=2)
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_key_past_its_limit_is_refused_429_and_other_keys_are_not(shared: TestClient) -> None:
    """Tenancy audit 33: one team's 200 jobs put every other team's behind them."""
    first, second = (
        shared.post("/v1/jobs", json=dict(WAITING, seed=i), headers=_as(TEAM_A)) for i in (1, 2)
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["submitted_by"] == LABEL_A
    third = shared.post("/v1/jobs", json=dict(WAITING, seed=3), headers=_as(TEAM_A))
    assert third.status_code == 429, third.text
    assert third.json()["error"] == "LimitReached"
    assert third.json()["detail"] == (
        f"this API key ({LABEL_A}) has 2 jobs queued or running, the most "
        "HWNAS_MAX_ACTIVE_JOBS_PER_KEY allows: submit again when one has ended, or cancel one"
    )
    calibration = shared.post(
        "/v1/devices/cpu-all/calibrations", json={"supernet": "fmnist-ofa-cnn"}, headers=_as(TEAM_A)
    )
    assert calibration.status_code == 429  # a calibration is a job too
    other = shared.post("/v1/jobs", json=WAITING, headers=_as(TEAM_B))
    assert other.status_code == 202 and other.json()["submitted_by"] == key_label(TEAM_B.encode())
    listed = shared.get("/v1/jobs", headers=_as(TEAM_B)).json()["data"]
    assert len(listed) == 3  # every key still sees every job: the limit is not isolation
    own = shared.get("/v1/jobs", params={"submitted_by": LABEL_A}, headers=_as(TEAM_B)).json()
    assert own["count"] == 2 and {j["submitted_by"] for j in own["data"]} == {LABEL_A}

    cancelled = shared.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=_as(TEAM_A))
    assert cancelled.json()["status"] == "cancelled"  # a queued job ends at once
    again = shared.post("/v1/jobs", json=dict(WAITING, seed=3), headers=_as(TEAM_A))
    assert again.status_code == 202, again.text


def test_idempotency_keys_are_each_api_key_s_own(
    shared: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Tenancy audit 33: team B sending the Idempotency-Key team A had used got A's job
    back (a 409 named it, with another body), and the log said B had created it."""
    keyed = {"Idempotency-Key": "nightly-42"}
    with caplog.at_level(logging.INFO, logger="api.auth"):
        made = shared.post("/v1/jobs", json=WAITING, headers=_as(TEAM_A, **keyed))
        replayed = shared.post("/v1/jobs", json=WAITING, headers=_as(TEAM_A, **keyed))
        theirs = shared.post("/v1/jobs", json=WAITING, headers=_as(TEAM_B, **keyed))
    assert made.status_code == replayed.status_code == theirs.status_code == 202
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["id"] == made.json()["id"]
    assert "idempotent-replayed" not in theirs.headers and theirs.json()["id"] != made.json()["id"]
    said = [r.getMessage() for r in caplog.records if r.name == "api.auth"]
    assert [line.endswith("(replayed)") for line in said] == [False, True, False]

    # at the limit (A has 1 job; one more fills it), a retry still finds its job
    filler = shared.post("/v1/jobs", json=dict(WAITING, seed=5), headers=_as(TEAM_A))
    assert filler.status_code == 202
    retry = shared.post("/v1/jobs", json=WAITING, headers=_as(TEAM_A, **keyed))
    assert retry.status_code == 202 and retry.json()["id"] == made.json()["id"]
    fresh = shared.post(
        "/v1/jobs", json=WAITING, headers=_as(TEAM_A, **{"Idempotency-Key": "nightly-43"})
    )
    assert fresh.status_code == 429 and fresh.json()["error"] == "LimitReached"


def test_keyed_submissions_at_once_stop_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 33a: keyed submissions (every ``hwnas submit`` sends a key) each counted the
    key's jobs, then inserted: 20 at once with a limit of 2 stored 9. A pause after the
    count makes the window wide."""
    count = q.active_jobs

    def slow_count(*args: Any, **kwargs: Any) -> Any:
        found = count(*args, **kwargs)
        time.sleep(0.05)
        return found

    monkeypatch.setattr(q, "active_jobs", slow_count)
    settings = embedded_settings(tmp_path, api_keys=TEAM_A, max_active_jobs_per_key=2)
    with TestClient(create_app(settings)) as client:

        def submit(seed: int) -> int:
            keyed = _as(TEAM_A, **{"Idempotency-Key": f"run-{seed}"})
            return client.post("/v1/jobs", json=dict(WAITING, seed=seed), headers=keyed).status_code

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(submit, range(8)))
        stored = client.get("/v1/jobs", headers=_as(TEAM_A)).json()["count"]
    assert (sorted(answers), stored) == ([202, 202] + [429] * 6, 2)


def test_one_batch_admits_a_key_s_jobs_up_to_its_limit(tmp_path: Path) -> None:
    """Submissions stored in one batch (``api.submissions``) count each other."""
    url = f"sqlite:///{tmp_path / 'batch.db'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))

    class Quiet:
        def dispatch_many(self, jobs: Any) -> None:
            pass

    submitter = JobSubmitter(factory, Quiet(), limit=2)  # type: ignore[arg-type]

    async def scenario() -> list[Any]:
        submissions = [q.Submission(dict(WAITING, seed=i), None, "a") for i in range(4)]
        submissions.insert(1, q.Submission(WAITING, None, "b"))
        answers = await asyncio.gather(
            *(submitter.submit(new) for new in submissions), return_exceptions=True
        )
        await submitter.aclose()
        return answers

    answers = asyncio.run(scenario())
    refused = [isinstance(answer, LimitReached) for answer in answers]
    assert refused == [False, False, False, True, True]  # a, b, a, then a's 3rd and 4th
    assert [a.submitted_by for a in answers if not isinstance(a, Exception)] == ["a", "b", "a"]
    with transaction(factory) as session:
        stored = q.list_jobs(session, offset=0, limit=10)[0]
        assert sorted(job.submitted_by for job in stored) == ["a", "a", "b"]
        assert {job.status for job in stored} == {JobStatus.queued}


def test_without_keys_jobs_name_no_submitter_and_the_limit_is_the_server_s(
    tmp_path: Path,
) -> None:
    with TestClient(create_app(embedded_settings(tmp_path, max_active_jobs_per_key=1))) as client:
        first = client.post("/v1/jobs", json=WAITING)
        assert first.status_code == 202 and first.json()["submitted_by"] is None
        second = client.post("/v1/jobs", json=dict(WAITING, seed=1))
    assert second.status_code == 429
    assert second.json()["detail"].startswith("this server (no API keys) has 1 job queued")


def test_the_process_s_own_lock_is_waited_for_a_while_then_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 34b M1: each submission queued behind a hung holder waited its own 10 s for
    the other processes' lock after this process's (4 at once: 503s after 1, 2, 3, 4 s)."""
    monkeypatch.setattr(q, "LIMIT_LOCK_WAIT_S", 0.2)
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    upgrade(url)
    submitter = JobSubmitter(make_session_factory(make_engine(url)), None, limit=2)  # type: ignore[arg-type]
    with submitter.limit_lock:  # held, as by a submission waiting on a hung holder
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="held the count"), submitter.counting():
            pass
        assert 0.2 <= time.monotonic() - started < 2
    with submitter.counting():  # let go: taken at once
        assert submitter.limit_lock.locked()
    assert not submitter.limit_lock.locked()
