"""The HTTP flow end to end against the real app and its real in-process worker."""

from __future__ import annotations

import io
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient

import api.presenters
from api.app import create_app
from api.schemas import JobCreate
from core.settings import Settings, get_settings
from hardware_profiles import device_lock
from models import registry
from models.base import Complexity
from models.fmnist_cnn import FmnistOFACNN
from models.registry import get_supernet
from search import non_dominated
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction
from store.tables import JobStatus

from ..conftest import embedded_settings
from ..store.backends import database_url, set_timezone
from .helpers import job_spec, wait_for


def test_submit_poll_front_and_export(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    response = client.post("/v1/jobs", json=job_spec(budget={"evaluations": 8}))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["url"].endswith(f"/v1/jobs/{job['id']}")
    assert response.headers["location"] == job["url"]  # for tools that follow a 202's
    assert job["status"] in {"queued", "running"}

    job = wait_for(client, job["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"]["evaluations_done"] == 8
    assert job["timing"]["eval_seconds"] <= job["timing"]["run_seconds"]

    evaluations = client.get(f"/v1/jobs/{job['id']}/evaluations?limit=100").json()
    assert evaluations["count"] == 8
    ids = [e["subnet_id"] for e in evaluations["data"]]
    assert len(set(ids)) == 8, "an architecture was measured twice"
    for e in evaluations["data"]:
        latency = e["details"]["latency"]
        assert latency["provenance"] == "measured" and latency["repeats"] > 0
        assert e["metrics"]["latency_ms"] == latency["median_ms"]

    front = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
    assert front and all(p["latency_ms"] <= 50.0 for p in front)
    points = np.array([[p["accuracy"], p["latency_ms"]] for p in front])
    assert len(non_dominated(points, ["max", "min"])) == len(front)
    measured = {e["subnet_id"] for e in evaluations["data"] if e["on_front"]}
    assert {p["subnet_id"] for p in front} == measured

    best = max(front, key=lambda p: p["accuracy"])
    exported = client.get(
        f"/v1/jobs/{job['id']}/subnets/{best['subnet_id']}/export", params={"format": "onnx"}
    )
    assert exported.status_code == 200
    session = ort.InferenceSession(exported.content, providers=["CPUExecutionProvider"])
    supernet = get_supernet("fmnist-ofa-cnn")
    x = supernet.example_input(best["arch"], 4)
    with torch.no_grad():
        expected = supernet.extract(best["arch"])(x).numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-4

    def no_tracing_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("traced in the API process: its JIT registry keeps every file")

    monkeypatch.setattr(torch.jit, "trace", no_tracing_here)  # a child traces it
    for fmt in ("torchscript", "state_dict"):
        response = client.get(
            f"/v1/jobs/{job['id']}/subnets/{best['subnet_id']}/export", params={"format": fmt}
        )
        assert response.status_code == 200 and len(response.content) > 1000
    scripted = torch.jit.load(
        io.BytesIO(
            client.get(
                f"/v1/jobs/{job['id']}/subnets/{best['subnet_id']}/export?format=torchscript"
            ).content
        )
    )
    assert np.abs(scripted(x).detach().numpy() - expected).max() <= 1e-4


def test_unmeetable_constraint_succeeds_with_an_empty_front_and_says_why(
    client: TestClient,
) -> None:
    spec = job_spec(constraints={"latency_ms": {"max": 1e-6}}, budget={"evaluations": 3})
    job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded"
    pareto = client.get(f"/v1/jobs/{job['id']}/pareto").json()
    assert pareto["data"] == []
    assert "latency_ms" in job["message"] and "closest" in job["message"]


@pytest.mark.parametrize("supernet", ["fmnist-ofa-cnn", "ofa_mbv3_d234_e346_k357_w1.0"])
def test_a_job_that_names_no_quality_metric_measures_none(
    client: TestClient, supernet: str
) -> None:
    """Latency and counted complexity only: no accuracy evaluation, so a supernet with no
    validation data of its own (OFA, random weights here) can be searched for speed."""
    spec = job_spec(
        supernet=supernet,
        objectives={"latency_ms": "min", "macs": "min"},
        constraints={},
        budget={"evaluations": 2},
        strategy="random",
        warm_start=False,
    )
    job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", job
    evaluations = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
    assert len(evaluations) == 2
    for evaluation in evaluations:
        assert "accuracy" not in evaluation["metrics"]
        assert evaluation["metrics"]["latency_ms"] > 0 and evaluation["metrics"]["macs"] > 0


def test_cancel_stops_a_running_job(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=job_spec(budget={"evaluations": 200})).json()
    wait_for(client, job["id"], until={"running"}, min_evaluations=1)
    assert job["cancel_requested"] is False
    asked = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert asked.status_code == 200 and asked.json()["cancel_requested"] is True
    job = wait_for(client, job["id"])
    assert job["status"] == "cancelled"
    assert job["progress"]["evaluations_done"] < 200
    again = client.post(f"/v1/jobs/{job['id']}/cancel")  # a retry, a clean-up script
    assert again.status_code == 200 and again.json() == client.get(job["url"]).json()


def test_a_job_interrupted_by_shutdown_resumes_on_restart(settings: Settings) -> None:
    budget = 6
    with TestClient(create_app(settings)) as first:
        job_id = first.post("/v1/jobs", json=job_spec(budget={"evaluations": budget})).json()["id"]
        wait_for(first, job_id, until={"running"}, min_evaluations=2)
    # The server stopped mid-job: its run handed the job back, evaluations stored.
    engine = make_engine(settings.database_url)
    with transaction(make_session_factory(engine)) as session:
        stopped = q.get_job(session, job_id)
        assert stopped.status == JobStatus.queued and stopped.attempts == 0
        assert stopped.evaluations_done >= 2
        assert stopped.message.startswith("interrupted by a worker shutdown")
    engine.dispose()
    with TestClient(create_app(settings)) as second:
        job = wait_for(second, job_id)
        evaluations = second.get(f"/v1/jobs/{job_id}/evaluations").json()["data"]
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1  # the run handed back at the shutdown is no attempt
    assert len(evaluations) == budget
    assert len({e["subnet_id"] for e in evaluations}) == budget
    assert [e["seq"] for e in evaluations] == list(range(budget))


def test_jobs_carry_their_labels_and_the_listing_filters_by_them(client: TestClient) -> None:
    """Labels are shown as submitted and filter the listing (every one asked, a name alone
    for any value, across pages); a label that is not one is refused naming it."""
    posted = [
        client.post("/v1/jobs", json=job_spec(device="cpu-all", seed=k, labels=labels)).json()
        for k, labels in enumerate([{"project": "kws", "run": "1"}, {"project": "kws"}, {}])
    ]
    assert [job["labels"] for job in posted] == [
        {"project": "kws", "run": "1"},
        {"project": "kws"},
        {},
    ]
    assert client.get(f"/v1/jobs/{posted[0]['id']}").json()["labels"] == posted[0]["labels"]

    def listed(*labels: str, **params: Any) -> list[str]:
        page = client.get("/v1/jobs", params={"label": list(labels), **params}).json()
        return [job["id"] for job in page["data"]]

    assert listed("project=kws") == [posted[1]["id"], posted[0]["id"]]
    assert listed("project=kws", "run") == [posted[0]["id"]]
    assert listed("project=vision") == [] and listed("nothing") == []
    first = client.get("/v1/jobs", params={"label": "project", "limit": 1}).json()
    assert first["count"] == 2 and first["next_after"]
    assert listed("project", limit=1, after=first["next_after"]) == [posted[0]["id"]]
    for wrong in ["-x=1", "a b=1", "x=\x07", "x" * 64, "x=" + "v" * 201]:
        refused = client.get("/v1/jobs", params={"label": wrong})
        assert refused.status_code == 422 and refused.json()["field"] == "label", wrong
    too_many = client.get("/v1/jobs", params={"label": [f"l{k}" for k in range(17)]})
    assert too_many.status_code == 422 and "at most 16" in too_many.text
    for labels in [{"-x": "1"}, {"x": "\n"}, {f"l{k}": "" for k in range(17)}, {"x": 1}]:
        refused = client.post("/v1/jobs", json=job_spec(device="cpu-all", labels=labels))
        assert refused.status_code == 422 and "labels" in refused.text, labels


def test_a_jobs_labels_change_in_any_status_and_the_listing_follows(client: TestClient) -> None:
    """PATCH merges: a value sets (added or replaced), null removes, the rest is kept; the
    job (read before, so memoised), the listing's filter and a cancelled job follow; wrong
    changes are refused naming the field, and leave the labels as they were."""
    job = client.post(
        "/v1/jobs", json=job_spec(device="cpu-all", labels={"project": "kws", "stage": "try"})
    ).json()
    url = f"/v1/jobs/{job['id']}"
    assert client.get(url).json()["labels"] == {"project": "kws", "stage": "try"}
    changed = client.patch(url, json={"labels": {"stage": None, "chosen": "r24", "project": "x"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["labels"] == {"project": "x", "chosen": "r24"}
    assert client.get(url).json() == changed.json()

    def listed(label: str) -> list[str]:
        return [j["id"] for j in client.get("/v1/jobs", params={"label": label}).json()["data"]]

    assert listed("stage") == [] and listed("project=kws") == []
    assert listed("project=x") == [job["id"]] and listed("chosen=r24") == [job["id"]]
    assert client.post(f"{url}/cancel").json()["status"] == "cancelled"
    ended = client.patch(url, json={"labels": {"deployed": "no", "chosen": None}})
    assert ended.status_code == 200 and ended.json()["status"] == "cancelled"
    assert ended.json()["labels"] == {"project": "x", "deployed": "no"}
    assert client.patch(url, json={"labels": {"gone": None}}).json()["labels"] == {
        "project": "x",
        "deployed": "no",
    }  # removing what it does not carry: nothing to change
    wrong: list[tuple[Any, str]] = [
        ({"labels": {f"l{k}": "v" for k in range(15)}}, "would leave it 17"),
        ({"labels": {"-x": "1"}}, "label name '-x'"),
        ({"labels": {"x": 1}}, "labels"),
        ({"labels": {"x": "\n"}}, "not printable"),
        ({"labels": {}, "status": "succeeded"}, "status"),
        ({}, "labels"),
    ]
    for body, said in wrong:
        refused = client.patch(url, json=body)
        assert refused.status_code == 422 and said in refused.text, (body, refused.text)
    assert client.get(url).json()["labels"] == {"project": "x", "deployed": "no"}
    as_text = client.patch(url, content=b'{"labels": {}}', headers={"content-type": "text/plain"})
    assert as_text.status_code == 422 and "Content-Type" in as_text.text
    merge_patch = {"content-type": "application/merge-patch+json"}
    merge = client.patch(url, content=b'{"labels": {"m": "1"}}', headers=merge_patch)
    assert merge.status_code == 200 and merge.json()["labels"]["m"] == "1"
    missing = client.patch("/v1/jobs/nope", json={"labels": {"a": "b"}})
    assert missing.status_code == 404


def test_a_repeated_status_lists_the_jobs_in_any_of_them(client: TestClient) -> None:
    ids = [client.post("/v1/jobs", json=job_spec(device="cpu-all")).json()["id"] for _ in range(3)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")

    def listed(*statuses: str) -> list[str]:
        page = client.get("/v1/jobs", params={"status": list(statuses)}).json()
        assert page["count"] == len(page["data"]) and page["status"] == list(statuses)
        return [job["id"] for job in page["data"]]

    assert listed("queued") == ids[:0:-1] and listed("cancelled") == [ids[0]]
    assert listed("queued", "cancelled") == ids[::-1] == listed("cancelled", "queued", "failed")
    assert listed("running", "failed") == []
    wrong = client.get("/v1/jobs", params={"status": ["queued", "done"]})
    assert wrong.status_code == 422 and "status.1: Input should be 'queued'" in wrong.text


def test_a_keyed_submission_sent_again_answers_with_the_job_it_created(
    client: TestClient,
) -> None:
    """An ``Idempotency-Key``: a retry (same key, same body) stores no second job and gets
    the first one's answer, marked replayed; the key with another body is 409; a key that
    is no key is 422; once its job is deleted the key creates a new job, under a new id
    (nothing kept by job id may name two jobs). The keyed job is dispatched like any
    other: it runs."""
    spec = job_spec(budget={"evaluations": 2}, labels={"run": "7"})
    key = {"Idempotency-Key": "pipeline-42/search"}
    first = client.post("/v1/jobs", json=spec, headers=key)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = client.post("/v1/jobs", json=dict(reversed(spec.items())), headers=key)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    listed = client.get("/v1/jobs", params={"label": "run=7"}).json()
    assert [job["id"] for job in listed["data"]] == [first.json()["id"]]  # one, labelled once
    other = client.post("/v1/jobs", json=dict(spec, seed=1), headers=key)
    assert other.status_code == 409 and "pipeline-42/search" in other.json()["detail"]
    # the objectives' order is the job's (its front's columns, its cards): not a retry
    turned = dict(spec, objectives=dict(reversed(spec["objectives"].items())))
    assert client.post("/v1/jobs", json=turned, headers=key).status_code == 409
    assert other.json()["detail"].endswith("use a new key for a new job")
    wrong_keys: list[str | bytes] = ["", "a b", "x" * 256, "é".encode()]
    for wrong in wrong_keys:
        refused = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": wrong})
        assert refused.status_code == 422 and refused.json()["field"] == "Idempotency-Key", wrong
    job = wait_for(client, first.json()["id"])
    assert job["status"] == "succeeded" and job["progress"]["evaluations_done"] == 2
    ended = client.post(f"{job['url']}/cancel")  # succeeded: nothing to stop
    assert ended.status_code == 409 and "nothing to cancel" in ended.json()["message"]
    assert client.delete(job["url"]).status_code == 204
    anew = client.post("/v1/jobs", json=spec, headers=key)
    assert anew.status_code == 202 and "idempotent-replayed" not in anew.headers
    assert anew.json()["id"] != job["id"] and anew.json()["progress"]["evaluations_done"] == 0
    assert client.get("/v1/jobs").json()["count"] == 1


def test_a_keyed_retry_is_compared_as_sent_not_with_the_defaults_filled_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server restarts between a submission and its retry with a lower budget cap:
    the default it fills in differs, the request does not: the retry gets the job."""
    settings = embedded_settings(tmp_path, embedded_devices="none")
    body = {"supernet": "fmnist-ofa-cnn", "device": "cpu-1t"}  # the budget: the default
    key = {"Idempotency-Key": "pipeline-9"}
    with TestClient(create_app(settings)) as client:
        first = client.post("/v1/jobs", json=body, headers=key).json()
    assert first["progress"]["budget"] == 60
    monkeypatch.setenv("HWNAS_MAX_BUDGET", "10")
    get_settings.cache_clear()
    try:
        with TestClient(create_app(settings)) as client:
            again = client.post("/v1/jobs", json=body, headers=key)
            given = client.post("/v1/jobs", json={**body, "budget": {"evaluations": 60}},
                                headers=key)  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first["id"]
    assert given.status_code == 422  # over the new cap: refused before the key is looked up


def test_validation_data_is_checked_after_every_other_field() -> None:
    """Its validator reads the other fields (``info.data``): pydantic validates in the
    order of declaration, so a field declared after it would be missed there."""
    assert list(JobCreate.model_fields)[-1] == "validation_data"


def test_list_jobs_is_paginated(client: TestClient) -> None:
    ids = [client.post("/v1/jobs", json=job_spec(device="cpu-all")).json()["id"] for _ in range(3)]
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert page["count"] == 3 and len(page["data"]) == 2
    rest = client.get("/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert {j["id"] for j in page["data"] + rest["data"]} == set(ids)
    assert rest["next_after"] is None  # not full: the last page
    after = client.get("/v1/jobs", params={"limit": 2, "after": page["next_after"]}).json()
    assert after["data"] == rest["data"] and after["count"] == 3
    assert after["next_after"] is None
    full = client.get("/v1/jobs", params={"limit": 1, "offset": 2}).json()
    assert len(full["data"]) == 1 and full["next_after"] is None  # full, but the last page
    every = client.get("/v1/jobs", params={"limit": 3}).json()
    assert len(every["data"]) == 3 and every["next_after"] is None
    wrong = client.get("/v1/jobs", params={"after": "nope"})
    assert wrong.status_code == 422 and "is not a page's next_after" in wrong.text


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_submitted_job_answers_as_it_reads_back(backend: str, tmp_path: Path) -> None:
    """POST's body is made from the row the submitter inserted, not one read back: it must
    be, byte for byte, what a GET of the job answers (no worker serves the device, so the
    job stays queued in between, with a message saying why). PostgreSQL answers in a zone
    other than UTC here, which a row made in UTC would not show."""
    with database_url(backend, tmp_path) as url:
        if backend == "postgresql":
            set_timezone(url, "America/New_York")
        settings = embedded_settings(tmp_path, database_url=url, embedded_devices="none")
        with TestClient(create_app(settings)) as client:
            keyed = {"Idempotency-Key": "as-read"}  # stored on its own: the row it returns
            for spec, headers in (
                (job_spec(), {}),
                (job_spec(seed=7, constraints={"latency_ms": {"max": 5}}), {}),
                (job_spec(seed=8, labels={"a": "b"}), keyed),
                (job_spec(seed=8, labels={"a": "b"}), keyed),  # the replay: the row read
            ):
                posted = client.post("/v1/jobs", json=spec, headers=headers)
                assert posted.status_code == 202, posted.text
                got = client.get(f"/v1/jobs/{posted.json()['id']}")
                assert posted.json() == got.json()
                assert posted.content == got.content
                assert got.json()["message"].startswith("waiting")
                created = datetime.fromisoformat(got.json()["created_at"])
                assert got.json()["created_at"].endswith("Z")  # in UTC, and says so
                assert abs((datetime.now(UTC) - created).total_seconds()) < 60


def test_a_cancelled_run_keeps_its_notes_after_the_outcome(client: TestClient) -> None:
    """The outcome leads; what the run noted before (here, the warm start) stays."""
    first = job_spec(budget={"evaluations": 2}, strategy="random")
    wait_for(client, client.post("/v1/jobs", json=first).json()["id"])
    job = client.post("/v1/jobs", json=job_spec(budget={"evaluations": 200})).json()
    wait_for(client, job["id"], until={"running"}, min_evaluations=1)
    client.post(f"/v1/jobs/{job['id']}/cancel")
    job = wait_for(client, job["id"])
    assert job["status"] == "cancelled"
    assert job["worker"].startswith("embedded:") and job["heartbeat_at"] is None  # ran last
    outcome, *notes = job["message"].split("; ")
    done = job["progress"]["evaluations_done"]
    assert outcome == f"cancelled after {done} evaluation{'' if done == 1 else 's'}"
    # "2 earlier measurements ... reused", or on a loaded machine "1 ... reused, 1 other
    # not, their latency timed on a busy device" (CI under load, session 32)
    assert notes and notes[0].startswith("warm start: ") and " reused" in notes[0], notes


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_running_job_whose_worker_went_silent_says_so(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running job whose worker stopped heartbeating (killed) says since when and what
    happens next, in every answer that shows the job, although its row has not changed
    (a memoised poll included); once a worker heartbeats it again, the note is gone."""
    with database_url(backend, tmp_path) as url:
        settings = embedded_settings(tmp_path, database_url=url, embedded_devices="none")
        factory = make_session_factory(make_engine(url))
        with TestClient(create_app(settings)) as client:
            job_id = client.post("/v1/jobs", json=job_spec()).json()["id"]
            with transaction(factory) as session:
                assert q.claim_job(session, job_id, "worker-a", stale_after_s=0.0)
            polled = client.get(f"/v1/jobs/{job_id}").json()
            assert polled["status"] == "running" and polled["message"] is None
            beat = datetime.now(UTC)
            # which worker holds it, and when it last beat (chaos drill 32 L7)
            assert polled["worker"] == "worker-a"
            beaten = datetime.fromisoformat(polled["heartbeat_at"].replace("Z", "+00:00"))
            assert abs((beaten - beat).total_seconds()) < 5
            later = beat + timedelta(seconds=settings.stale_after_s + 1)
            monkeypatch.setattr(api.presenters, "utcnow", lambda: later)
            answers = {
                "poll": client.get(f"/v1/jobs/{job_id}").json(),
                "list": client.get("/v1/jobs").json()["data"][0],
                "front": client.get(f"/v1/jobs/{job_id}/pareto").json(),
            }
            for where, answer in answers.items():
                message = answer["message"] or ""
                assert message.startswith("waiting: its worker stopped heartbeating at "), where
                assert "no live worker serves device 'cpu-1t'" in message, where
                assert message.endswith("it resumes where it stopped"), where
            stamp = message.removeprefix("waiting: its worker stopped heartbeating at ")[:19]
            assert (
                abs((datetime.fromisoformat(stamp).replace(tzinfo=UTC) - beat).total_seconds()) < 5
            )
            with transaction(factory) as session:
                assert q.heartbeat(session, job_id, "worker-a")
            monkeypatch.setattr(api.presenters, "utcnow", lambda: datetime.now(UTC))
            assert client.get(f"/v1/jobs/{job_id}").json()["message"] is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_cancelling_a_job_whose_worker_died_ends_it_at_once(backend: str, tmp_path: Path) -> None:
    """Nobody would honour the request until a worker took the job again (its message said
    it "resumes"); the cancel ends it, keeping what was measured and the run's notes. A
    worker that was only slow finds the job ended at its next write. A job asked to cancel
    while its worker lived, which then died, says to cancel again; a claim ends it as
    cancelled after what it measured, not "before it started"."""
    with database_url(backend, tmp_path) as url:
        settings = embedded_settings(
            tmp_path, database_url=url, embedded_devices="none", stale_after_s=0.0
        )
        factory = make_session_factory(make_engine(url))
        with TestClient(create_app(settings)) as client:
            died, asked = (client.post("/v1/jobs", json=job_spec()).json()["id"] for _ in "ab")
            with transaction(factory) as session:
                for job_id in (died, asked):
                    assert q.claim_job(session, job_id, "worker-a", stale_after_s=0.0)
                q.get_job(session, died).message = "warm start: 3 earlier measurements reused"
                q.request_cancel(session, asked)  # while its worker lived (no staleness)
                q.get_job(session, asked).message = "hints: 4 sub-networks"  # its run's note
            cancelled = client.post(f"/v1/jobs/{died}/cancel").json()
            assert cancelled["status"] == "cancelled"
            outcome, notes = cancelled["message"].split("; its worker had stopped ")
            assert outcome == "cancelled after 0 evaluations"
            assert notes.endswith(" UTC; warm start: 3 earlier measurements reused")
            with transaction(factory) as session:  # the slow worker's next write: refused
                assert q.heartbeat(session, died, "worker-a") is False
            said = client.get(f"/v1/jobs/{asked}").json()
            assert said["status"] == "running" and said["cancel_requested"]
            assert said["message"].endswith(
                "UTC; cancel it again to end it now; hints: 4 sub-networks"
            )
            with transaction(factory) as session:
                assert q.claim_job(session, asked, "worker-b", stale_after_s=0.0) is None
            ended = client.get(f"/v1/jobs/{asked}").json()
            assert ended["status"] == "cancelled"
            assert ended["message"] == "cancelled after 0 evaluations; hints: 4 sub-networks"


def test_a_queued_job_says_why_it_waits_now_not_only_at_submission(tmp_path: Path) -> None:
    """A job a shutdown put back in the queue said it "resumes when a worker takes it
    again", and went on saying so after a restart that no longer served its device."""
    settings = embedded_settings(tmp_path, embedded_devices="none")
    factory = make_session_factory(make_engine(settings.database_url))
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/v1/jobs", json=job_spec()).json()["id"]
        waiting = "waiting: no live worker serves device 'cpu-1t'"
        assert client.get(f"/v1/jobs/{job_id}").json()["message"].startswith(waiting)
        with transaction(factory) as session:  # as the shutdown of an earlier server left it
            q.get_job(session, job_id).message = "interrupted by a worker shutdown"
        for answer in (client.get(f"/v1/jobs/{job_id}"), client.get("/v1/jobs")):
            job = answer.json()
            message = (job["data"][0] if "data" in job else job)["message"]
            assert message.startswith(waiting), message
            assert message.endswith("; interrupted by a worker shutdown")


def test_exports_waiting_for_their_turn_hold_no_api_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exports are written one at a time; those waiting held the API's threads, and other
    requests queued behind them for seconds. With one API thread, while one export is held
    and another waits, the catalog still answers; both exports then arrive."""
    import api.routes.jobs

    entered, release = threading.Event(), threading.Event()
    write = api.routes.jobs.export_subnet

    def held(*args: Any, **kwargs: Any) -> Path:
        entered.set()
        release.wait(20)
        return write(*args, **kwargs)

    monkeypatch.setattr(api.routes.jobs, "export_subnet", held)
    settings = embedded_settings(tmp_path, api_threads=1)
    with TestClient(create_app(settings)) as client:
        spec = job_spec(budget={"evaluations": 1}, strategy="random", constraints={})
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        [point] = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
        url = f"/v1/jobs/{job['id']}/subnets/{point['subnet_id']}/export"
        codes: dict[str, int] = {}

        def download(fmt: str) -> None:
            codes[fmt] = client.get(url, params={"format": fmt}).status_code

        downloads = [threading.Thread(target=download, args=(f,)) for f in ("onnx", "state_dict")]
        for thread in downloads:
            thread.start()
        try:
            assert entered.wait(20)
            time.sleep(0.2)  # the second is waiting for its turn by now
            started = time.perf_counter()
            assert client.get("/v1/devices").status_code == 200
            assert client.get("/v1/jobs").status_code == 200
            answered_in = time.perf_counter() - started
        finally:
            release.set()
            for thread in downloads:
                thread.join(30)
        assert answered_in < 5 and codes == {"onnx": 200, "state_dict": 200}


def test_an_export_waits_for_the_cpu_timing_in_flight(client: TestClient) -> None:
    """In the embedded mode the worker times sub-networks in the API's process: an export
    (BatchNorm recalibration, tracing) ran beside a timing and loaded its cores, and a
    TorchScript trace beside the cpu-ts runner's failed both ("Graphs differed across
    invocations"). The export now waits while a CPU measurement holds the device."""
    spec = job_spec(budget={"evaluations": 1}, strategy="random", constraints={})
    job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
    [point] = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
    url = f"/v1/jobs/{job['id']}/subnets/{point['subnet_id']}/export"
    codes: list[int] = []
    download = threading.Thread(target=lambda: codes.append(client.get(url).status_code))
    with device_lock("cpu"):  # as measure_latency holds it
        download.start()
        download.join(1.5)
        assert download.is_alive() and codes == []
    download.join(60)
    assert codes == [200]


def _plugin_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin: type, **spec: Any
) -> dict[str, Any]:
    """``plugin`` registered for this test, and a job of it run to its end."""
    monkeypatch.setitem(registry._FACTORIES, plugin.name, plugin)
    try:
        with TestClient(create_app(embedded_settings(tmp_path))) as client:
            body = job_spec(supernet=plugin.name, **spec)
            return wait_for(client, client.post("/v1/jobs", json=body).json()["id"])
    finally:
        registry._INSTANCES.pop(plugin.name, None)


class _FlatInput(FmnistOFACNN):
    """A plugin whose example input has the wrong shape: torch's error is all it raises."""

    name = "test-flat-input"

    def example_input(self, arch: dict[str, Any], batch_size: int = 1) -> torch.Tensor:
        return torch.zeros(batch_size, 784)


def test_a_plugin_error_says_which_step_of_which_sub_network_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job said only torch's message, and its error held six frames inside torch."""
    job = _plugin_job(
        tmp_path, monkeypatch, _FlatInput, objectives={"latency_ms": "min"},
        budget={"evaluations": 5, "failures": 0},  # the first failure fails the job
    )  # fmt: skip
    assert job["status"] == "failed"
    assert job["message"].startswith("failed: RuntimeError: ")
    outcome = job["message"].split("; ")[0]  # the run's notes follow it (e.g. its anchors)
    assert outcome.endswith(
        "(while timing, on example_input of batch 1, sub-network "
        f"{job['message'].split('sub-network ')[1].split(' ')[0]} of test-flat-input)"
    )
    error = job["error"]
    assert error.startswith("Traceback (last frames):") and "/torch/" in error
    assert "fmnist_cnn.py" in error  # the supernet's own frame, not only torch's


def test_a_job_whose_measurements_keep_failing_fails_after_its_budget_of_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed measurements are skipped, listed, and never measured again, up to
    ``budget.failures``; the next one fails the job (it failed at the first)."""
    job = _plugin_job(
        tmp_path, monkeypatch, _FlatInput, objectives={"latency_ms": "min"},
        budget={"evaluations": 10, "failures": 2}, strategy="random", constraints={},
    )  # fmt: skip
    assert job["status"] == "failed" and job["progress"]["evaluations_done"] == 0
    failed = job["failed_evaluations"]
    assert [f["anchor"] for f in failed] == [True, True, False, False]  # the anchors first
    assert job["progress"]["evaluations_failed"] == 2  # the anchors do not count
    assert job["progress"]["failures_allowed"] == 2
    assert len({f["subnet_id"] for f in failed}) == 4
    assert all(f["error"].startswith("RuntimeError: Expected 3D") for f in failed)
    assert "2 failed measurements skipped before it: budget.failures allows 2" in job["message"]
    assert "failed measurements are skipped, at most 2 (budget.failures" in job["message"]


class _TwoNetworks(FmnistOFACNN):
    """A space of two distinct sub-networks (resolution only)."""

    name = "test-two-networks"

    def space(self) -> dict[str, list[Any]]:
        full = super().space()
        return {gene: choices[:2] if gene == "r" else choices[:1] for gene, choices in full.items()}


def test_a_budget_larger_than_the_space_says_the_space_was_exhausted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _plugin_job(
        tmp_path, monkeypatch, _TwoNetworks, objectives={"latency_ms": "min"},
        budget={"evaluations": 5}, strategy="random", constraints={},
    )  # fmt: skip
    assert job["status"] == "succeeded" and job["progress"]["evaluations_done"] == 2
    assert job["progress"]["fraction"] == 1.0  # done, its budget unspent: the space was
    assert job["message"] == (
        "search space exhausted: every distinct sub-network of test-two-networks was "
        "measured (2 new measurements of a budget of 5)"
    )


class _ComplexityOff(FmnistOFACNN):
    """A plugin whose complexity() divides by 10 (audit 29: a front 10 times off)."""

    name = "test-complexity-off"

    def complexity(self, arch: dict[str, Any]) -> Complexity:
        counted = super().complexity(arch)
        return Complexity(macs=counted.macs // 10, params=counted.params // 10)


def test_a_plugin_whose_complexity_is_not_its_network_s_is_said_in_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MACs, params and model sizes 10 times off went into the front without a word."""
    job = _plugin_job(tmp_path, monkeypatch, _ComplexityOff, budget={"evaluations": 3})
    assert job["status"] == "succeeded"
    said = [part for part in job["message"].split("; ") if "complexity()" in part]
    assert len(said) == 1, job["message"]  # checked on the first measurement only
    assert said[0].startswith("test-complexity-off: complexity() gives ")
    assert " MACs where the network measured counts " in said[0]
    assert " params where the network measured counts " in said[0]
    assert said[0].endswith(
        "may be wrong (the registry's contract test checks complexity(): docs/plugins.md)"
    )


class _Undeclared(FmnistOFACNN):
    """A plugin whose evaluate() returns a metric its class does not declare."""

    name = "test-undeclared-metric"

    def evaluate(self, arch: dict[str, Any], module: Any = None) -> dict[str, float]:
        # params: hwnas counts it itself, over this (not said: review 32a)
        return {**super().evaluate(arch, module), "macro_f1": 0.5, "params": 1.0}


def test_a_metric_evaluate_returns_undeclared_is_said_in_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plugin audit 32: it was stored and shown, then refused as an unknown metric."""
    job = _plugin_job(tmp_path, monkeypatch, _Undeclared, budget={"evaluations": 2})
    assert job["status"] == "succeeded"
    said = [part for part in job["message"].split("; ") if "macro_f1" in part]
    assert said == [
        "test-undeclared-metric: evaluate() returned macro_f1, which the class's metrics "
        "['accuracy'] does not list: stored with each evaluation, but no objective or "
        "constraint may name it (list it in metrics: docs/plugins.md)"
    ], job["message"]


def test_the_built_in_supernets_counts_are_their_networks(tmp_path: Path) -> None:
    """The same check finds nothing to say of a job on the built-in supernet."""
    body = job_spec(budget={"evaluations": 2}, strategy="random")
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        job = wait_for(client, client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded" and "complexity()" not in (job["message"] or "")


class _WrongMetricName(FmnistOFACNN):
    name = "test-wrong-metric"

    def evaluate(self, arch: dict[str, Any], module: Any = None) -> dict[str, float]:
        return {"acc": super().evaluate(arch, module)["accuracy"]}


def test_a_plugin_whose_evaluate_leaves_out_a_declared_metric_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It failed saying only "objective 'accuracy' is missing from metrics"."""
    job = _plugin_job(tmp_path, monkeypatch, _WrongMetricName, budget={"evaluations": 2})
    assert job["status"] == "failed"
    assert job["message"] == (
        "failed: test-wrong-metric: evaluate() returned ['acc'], but the class declares "
        "metrics ['accuracy']; missing: accuracy"
    )


class _Sloppy(FmnistOFACNN):
    """evaluate() as plugin authors write it by mistake: ``returns`` maps an accuracy to
    what it gives back (a plugin probe's cases, session 20)."""

    name = "test-sloppy-metrics"
    returns: Any = None
    extract_training = False  # extract gives its module in training mode

    def evaluate(self, arch: dict[str, Any], module: Any = None) -> dict[str, Any]:
        assert module is None or not module.training  # hwnas puts it in eval mode
        accuracy = super().evaluate(arch, module)["accuracy"]
        return {"accuracy": type(self).returns(accuracy)}

    def extract(self, arch: dict[str, Any]) -> Any:
        return super().extract(arch).train(type(self).extract_training)


@pytest.mark.parametrize(
    ("returns", "said"),
    [
        (torch.tensor, None),  # a 0-d tensor: taken as its float
        (np.float32, None),
        (lambda a: torch.tensor([a, a]), "accuracy = a Tensor, not a number (give a float)"),
        (lambda a: float("nan"), "accuracy = nan, not a finite number"),
        (lambda a: 100 * a, "accuracy is a fraction of 0..1, not a percentage"),
    ],
)
def test_a_plugin_metric_that_is_no_finite_fraction_fails_the_job_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returns: Any, said: str | None
) -> None:
    """A tensor was refused by the database, retried as an outage for 60 s a time and
    failed after 8 minutes as "its worker kept dying"; a NaN failed as "points contain
    NaN"; a percentage was stored as it came."""
    monkeypatch.setattr(_Sloppy, "returns", staticmethod(returns))
    monkeypatch.setattr(_Sloppy, "extract_training", True)
    job = _plugin_job(tmp_path, monkeypatch, _Sloppy, budget={"evaluations": 2}, strategy="random")
    if said is None:
        assert job["status"] == "succeeded", job
        return
    assert job["status"] == "failed"
    assert job["message"].startswith("failed: test-sloppy-metrics: evaluate() returned ")
    assert said in job["message"] and ", for sub-network " in job["message"]


class _RandomEncoding(FmnistOFACNN):
    name = "test-random-encoding"
    calls = 0

    def encode(self, arch: dict[str, Any]) -> str:
        type(self).calls += 1
        return f"{super().encode(arch)}~{type(self).calls}"


def test_a_plugin_whose_encode_is_not_deterministic_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It made the job stop after a few measurements, claiming every distinct sub-network
    had been measured."""
    job = _plugin_job(tmp_path, monkeypatch, _RandomEncoding, budget={"evaluations": 3})
    assert job["status"] == "failed"
    assert "test-random-encoding: encode() gave " in job["message"]
    assert "it must be deterministic" in job["message"]


def test_a_stored_front_reads_while_its_supernet_cannot_be_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading it asked the supernet whether it is a recorded table: a 422 once its
    weights stopped loading."""
    job = _plugin_job(
        tmp_path, monkeypatch, _TwoNetworks, objectives={"latency_ms": "min"},
        budget={"evaluations": 2}, strategy="random", constraints={},
    )  # fmt: skip

    def broken(**_kwargs: Any) -> Any:
        raise RuntimeError("weights gone")

    monkeypatch.setitem(registry._FACTORIES, _TwoNetworks.name, broken)
    monkeypatch.setattr(registry, "_FAILED", {})
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        front = client.get(f"/v1/jobs/{job['id']}/pareto")
    assert front.status_code == 200, front.text
    assert front.json()["data"] and all(p["export_url"] is None for p in front.json()["data"])


def test_an_export_whose_child_is_killed_twice_is_503_and_leaves_no_file(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TorchScript file is traced in a child process; killed twice (out of memory), the
    export answered 500 "internal error" (session 22). Now 503 naming the cause, and a
    later request writes it."""
    import api.routes.jobs
    from hardware_profiles.isolated import ChildDied

    def killed(*args: Any, **kwargs: Any) -> None:
        raise ChildDied(
            "the export process (pid 1) ended during the export, exit code -9", killed=True
        )

    spec = job_spec(budget={"evaluations": 1}, strategy="random", constraints={})
    job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
    [point] = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
    url = f"/v1/jobs/{job['id']}/subnets/{point['subnet_id']}/export"
    with monkeypatch.context() as patch:
        patch.setattr(api.routes.jobs, "run_once", killed)
        answer = client.get(url, params={"format": "torchscript"})
    assert answer.status_code == 503, answer.text
    assert "the file could not be written: the export process" in answer.json()["detail"]
    again = client.get(url, params={"format": "torchscript"})
    assert again.status_code == 200 and len(again.content) > 1000


def test_a_job_deleted_while_its_file_is_written_answers_404_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELETE removed the job's export folder under a file being written (500), or just
    before it was written (the deleted job's file served with 200 and left on disk; fuzz
    probe, session 22). Now the DELETE waits for the file, removes it, and the export
    answers 404."""
    import api.routes.jobs

    write = api.routes.jobs.export_subnet
    settings = embedded_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        spec = job_spec(budget={"evaluations": 1}, strategy="random", constraints={})
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        [point] = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
        deleted: dict[str, int] = {}

        def delete() -> None:
            deleted["code"] = client.delete(f"/v1/jobs/{job['id']}").status_code

        def deleted_first(*args: Any, **kwargs: Any) -> Path:
            threading.Thread(target=delete).start()
            for _ in range(200):  # until the row is gone; its folder's removal waits for us
                if client.get(f"/v1/jobs/{job['id']}").status_code == 404:
                    break
                time.sleep(0.05)
            return write(*args, **kwargs)

        monkeypatch.setattr(api.routes.jobs, "export_subnet", deleted_first)
        answer = client.get(f"/v1/jobs/{job['id']}/subnets/{point['subnet_id']}/export")
        assert answer.status_code == 404, answer.text
        assert "was deleted while its file was written" in answer.json()["detail"]
        for _ in range(100):
            if deleted:
                break
            time.sleep(0.05)
        assert deleted == {"code": 204}
        assert (Path(settings.data_dir) / "exports").is_dir()  # where files are kept
        assert not list((Path(settings.data_dir) / "exports").rglob("*.onnx"))


def test_an_export_failing_because_another_process_deleted_its_job_answers_404(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another API process's DELETE takes no lock of this one: the write fails under it
    (torch: "Parent directory ... does not exist"), which was a 500 (review, session 22)."""
    import api.routes.jobs

    settings = embedded_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        spec = job_spec(budget={"evaluations": 1}, strategy="random", constraints={})
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        [point] = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]

        def deleted_elsewhere(*args: Any, **kwargs: Any) -> None:
            with transaction(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
                q.delete_job(session, job["id"])
            raise RuntimeError("Parent directory /x/.y.partial does not exist.")

        monkeypatch.setattr(api.routes.jobs, "export_subnet", deleted_elsewhere)
        answer = client.get(f"/v1/jobs/{job['id']}/subnets/{point['subnet_id']}/export")
        assert answer.status_code == 404, answer.text
