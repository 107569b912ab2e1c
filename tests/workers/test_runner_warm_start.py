"""Warm start: a job reuses earlier measurements of the same supernet on the same device."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import models
from api.app import create_app
from api.export_cache import EXPORTS
from api.schemas import JobCreate
from core.settings import get_settings
from models.fmnist_cnn import FmnistOFACNN
from models.registry import get_supernet
from search import LinasStrategy
from store import evaluations as eq
from store import job_keys
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus
from workers import busy_device
from workers.runner import UNFINGERPRINTED, JobRunner

from ..api.helpers import wait_for
from ..conftest import embedded_settings
from .resume import as_if_died_after_its_first

SPEC: dict[str, Any] = {
    "supernet": "nb201-cifar10",
    "device": "nb201-pixel3",
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "budget": {"evaluations": 25},
    "strategy": "random",
    "seed": 1,
}

FMNIST: dict[str, Any] = {  # two real measurements on the built-in supernet
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "strategy": "random",
    "budget": {"evaluations": 2},
}


def _evaluations(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/jobs/{job_id}/evaluations", params={"limit": 500}).json()["data"]


def _front(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    front: list[dict[str, Any]] = client.get(f"/v1/jobs/{job_id}/pareto").json()["data"]
    assert front
    return front


def test_a_second_job_on_the_same_pair_reuses_and_never_remeasures(tmp_path: Path) -> None:
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=""))) as client:
        first = wait_for(client, client.post("/v1/jobs", json=SPEC).json()["id"])
        assert first["progress"]["evaluations_reused"] == 0
        measured_first = {e["subnet_id"]: e for e in _evaluations(client, first["id"])}

        spec = dict(SPEC, seed=2, budget={"evaluations": 10})
        second = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        progress = second["progress"]
        assert (progress["evaluations_done"], progress["evaluations_reused"]) == (10, 25)
        evaluations = _evaluations(client, second["id"])
        assert [e["seq"] for e in evaluations] == list(range(35))
        reused = [e for e in evaluations if "reused_from" in e["details"]]
        new = [e for e in evaluations if "reused_from" not in e["details"]]
        assert len(reused) == 25 and len(new) == 10
        assert all(e["details"]["reused_from"] == first["id"] for e in reused)
        assert all(e["seconds"] == 0.0 for e in reused)
        for e in reused:  # the copy is the earlier measurement, unchanged
            assert e["metrics"] == measured_first[e["subnet_id"]]["metrics"]
        # never a duplicate: nothing measured again, in the job or across the two jobs
        assert len({e["subnet_id"] for e in evaluations}) == 35
        assert not {e["subnet_id"] for e in new} & set(measured_first)
        # the front is drawn from both: each of the first job's front points is kept or beaten
        for a in _front(client, first["id"]):
            assert any(
                b["accuracy"] >= a["accuracy"] and b["latency_ms"] <= a["latency_ms"]
                for b in _front(client, second["id"])
            )

        third = dict(SPEC, seed=3, budget={"evaluations": 5}, warm_start=False)
        cold = wait_for(client, client.post("/v1/jobs", json=third).json()["id"])
        assert cold["warm_start"] is False
        assert (cold["progress"]["evaluations_done"], cold["progress"]["evaluations_reused"]) == (
            5,
            0,
        )
        assert all("reused_from" not in e["details"] for e in _evaluations(client, cold["id"]))


def test_warm_start_takes_only_the_same_supernet_and_device(tmp_path: Path) -> None:
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=""))) as client:
        wait_for(
            client, client.post("/v1/jobs", json=dict(SPEC, budget={"evaluations": 8})).json()["id"]
        )
        other_device = dict(SPEC, device="nb201-fpga", budget={"evaluations": 4})
        job = wait_for(client, client.post("/v1/jobs", json=other_device).json()["id"])
        assert job["progress"]["evaluations_reused"] == 0
        other_net = dict(SPEC, supernet="nb201-cifar100", budget={"evaluations": 4})
        job = wait_for(client, client.post("/v1/jobs", json=other_net).json()["id"])
        assert job["progress"]["evaluations_reused"] == 0


def test_accuracy_on_other_validation_data_is_not_reused(tmp_path: Path, monkeypatch) -> None:
    """A job measuring accuracy on user data neither reuses nor lends to jobs on other data."""
    shipped = np.load(Path(models.__file__).parent / "data" / "fmnist_subset.npz")
    root = tmp_path / "user-data"
    root.mkdir()
    np.savez(root / "val40.npz", inputs=shipped["val_x"][:40], labels=shipped["val_y"][:40])
    monkeypatch.setenv("HWNAS_DATA_ROOTS", str(root))
    # about the data, not the device: on a loaded machine a latency timed while it was busy
    # would be passed over by the warm start, one fewer reused (seen in session 33)
    monkeypatch.setattr(busy_device, "noisy", lambda evaluation, profile: False)
    get_settings.cache_clear()
    spec = dict(FMNIST, validation_data="val40.npz")
    try:
        with TestClient(create_app(embedded_settings(tmp_path))) as client:
            on_user_data = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
            stored = _evaluations(client, on_user_data["id"])
            accuracies = [e["metrics"]["accuracy"] for e in stored]
            assert all(abs(a * 40 - round(a * 40)) < 1e-6 for a in accuracies)  # k / 40 images
            shipped_data = dict(spec, validation_data=None, budget={"evaluations": 1})
            job = wait_for(client, client.post("/v1/jobs", json=shipped_data).json()["id"])
            assert job["progress"]["evaluations_reused"] == 0
            same_data = dict(spec, seed=5, budget={"evaluations": 1})
            job = wait_for(client, client.post("/v1/jobs", json=same_data).json()["id"])
            assert job["progress"]["evaluations_reused"] == 2
            (root / "val40.npz").unlink()  # an export needs the data (BatchNorm, fingerprint)
            url = f"/v1/jobs/{on_user_data['id']}/subnets/{stored[0]['subnet_id']}/export"
            export = client.get(url, params={"format": "torchscript"})
            assert export.status_code == 409, export.text
            assert (
                "measured on validation data 'val40.npz', which cannot be read now"
                in (export.json()["message"])
            )
    finally:
        get_settings.cache_clear()


def test_measurements_made_with_other_weights_or_data_are_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job records what its supernet measured with (``Supernet.fingerprint``: weights and
    validation data). After the checkpoint changed (simulated: another fingerprint), a new
    job reuses nothing measured before, a job that began before fails on resuming instead
    of mixing the two, and an export of a point measured before is refused."""
    spec = FMNIST
    settings = embedded_settings(tmp_path)
    factory = make_session_factory(make_engine(settings.database_url))
    with TestClient(create_app(settings)) as client:
        before = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        subnet = _evaluations(client, before["id"])[0]["subnet_id"]
        with transaction(factory) as session:
            recorded = q.get_job(session, before["id"]).spec[job_keys.MEASURED_WITH]
        assert recorded == get_supernet("fmnist-ofa-cnn").fingerprint() is not None
        again = wait_for(client, client.post("/v1/jobs", json=dict(spec, seed=4)).json()["id"])
        assert again["progress"]["evaluations_reused"] == 2  # same weights: reused

        monkeypatch.setattr(FmnistOFACNN, "fingerprint", lambda self: "other-weights")
        after = wait_for(client, client.post("/v1/jobs", json=dict(spec, seed=5)).json()["id"])
        assert after["progress"]["evaluations_reused"] == 0
        began = {**JobCreate(**spec).model_dump(mode="json"), job_keys.MEASURED_WITH: recorded}
        with transaction(factory) as session:  # began under the old weights, then stopped
            job_id = q.create_jobs(session, [(began, None)])[0].id
        assert JobRunner(factory, settings, "worker-2").run(job_id) == JobStatus.failed
        failed = client.get(f"/v1/jobs/{job_id}").json()
        assert "changed since this job began measuring" in failed["error"]
        url = f"/v1/jobs/{before['id']}/subnets/{subnet}/export"
        export = client.get(url, params={"format": "onnx"})
        assert export.status_code == 409, export.text
        assert "not be the network that was measured" in export.json()["message"]


def test_a_job_an_earlier_version_began_without_fingerprints_resumes_reused_by_none(
    tmp_path: Path,
) -> None:
    """Upgrade audit 31: resumed, such a job recorded the fingerprint of the weights it
    resumed with, and what it had measured before (with whatever weights that version
    had) went into later jobs' warm starts and fronts; its exports said nothing."""
    settings = embedded_settings(tmp_path)
    factory = make_session_factory(make_engine(settings.database_url))
    with TestClient(create_app(settings)) as client:
        old = wait_for(client, client.post("/v1/jobs", json=FMNIST).json()["id"])
        unrecorded = {job_keys.MEASURED_WITH: None, job_keys.MEASURED_CODE: None}  # keys removed
        first, _ = as_if_died_after_its_first(factory, old["id"], **unrecorded)
        assert JobRunner(factory, settings, "worker-2").run(old["id"]) == JobStatus.succeeded
        with transaction(factory) as session:
            spec = q.get_job(session, old["id"]).spec
        assert (
            job_keys.MEASURED_WITH in spec and spec[job_keys.MEASURED_WITH] is None
        )  # known unknown
        resumed = client.get(f"/v1/jobs/{old['id']}").json()
        assert UNFINGERPRINTED in resumed["message"]
        as_if_died_after_its_first(factory, old["id"])  # again: said again (review 31)
        assert JobRunner(factory, settings, "worker-3").run(old["id"]) == JobStatus.succeeded
        assert UNFINGERPRINTED in client.get(f"/v1/jobs/{old['id']}").json()["message"]
        new = wait_for(client, client.post("/v1/jobs", json=dict(FMNIST, seed=4)).json()["id"])
        assert new["progress"]["evaluations_reused"] == 0
        assert (  # said, where weeks of history went unused without a word
            "warm start: 2 measurements of jobs an earlier hwnas began, which recorded no "
            "fingerprint of their weights and data, not reused" in new["message"]
        )
        url = f"/v1/jobs/{old['id']}/subnets/{first}/export?format=state_dict"
        export = client.get(url)
    assert export.status_code == 200, export.text
    with zipfile.ZipFile(io.BytesIO(export.content)) as archive:
        card = json.loads(archive.read("architecture.json"))
    assert card["measured_with"] is None
    assert "recorded no fingerprint of the weights and validation data" in card["warning"]


def test_other_devices_measurements_guide_a_job_but_are_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accuracy does not depend on the device: a job on fpga is hinted with what a job on
    pixel3 measured (Strategy.hint), yet measures its own budget and copies nothing."""
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=""))) as client:
        first = wait_for(
            client, client.post("/v1/jobs", json=dict(SPEC, budget={"evaluations": 8})).json()["id"]
        )
        assert "other devices" not in (first["message"] or "")
        on_fpga = dict(SPEC, device="nb201-fpga", strategy="linas", budget={"evaluations": 5})
        job = wait_for(client, client.post("/v1/jobs", json=on_fpga).json()["id"])
        assert (
            job["message"]
            == "search guided by the accuracy of 8 sub-networks measured on other devices"
        )
        assert (job["progress"]["evaluations_done"], job["progress"]["evaluations_reused"]) == (
            5,
            0,
        )
        evaluations = _evaluations(client, job["id"])
        assert len(evaluations) == 5 and all("reused_from" not in e["details"] for e in evaluations)

        cold = wait_for(
            client, client.post("/v1/jobs", json=dict(on_fpga, warm_start=False)).json()["id"]
        )
        assert cold["message"] is None
        # A strategy that ignores hints is not given any (nor told it was).
        blind = dict(on_fpga, strategy="random", seed=9)
        unhinted = wait_for(client, client.post("/v1/jobs", json=blind).json()["id"])
        assert "other devices" not in unhinted["message"]  # its own device's warm start only
        # Back on pixel3: the first job's 8 are reused (same device), the sub-networks the
        # fpga jobs measured (partly the same ones) are hints, less those reused here.
        reused = {e["subnet_id"] for e in _evaluations(client, first["id"])}
        on_fpga_ids = {
            e["subnet_id"] for j in (job, cold, unhinted) for e in _evaluations(client, j["id"])
        } - reused
        spec = dict(SPEC, strategy="linas", seed=4, budget={"evaluations": 2})
        again = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert again["progress"]["evaluations_reused"] == 8
        assert again["message"] == (
            "warm start: 8 earlier measurements of nb201-cifar10 on nb201-pixel3 reused; "
            f"search guided by the accuracy of {len(on_fpga_ids)} sub-networks measured on "
            "other devices"
        )
        monkeypatch.setattr(LinasStrategy, "hints_kept", 6)  # it said 16 while linas kept 6
        capped = wait_for(client, client.post("/v1/jobs", json=dict(spec, seed=5)).json()["id"])
        assert capped["message"].endswith(
            f"search guided by the accuracy of the latest 6 of {len(on_fpga_ids)} sub-networks "
            "measured on other devices"
        )


def test_a_job_on_another_device_takes_the_accuracy_measured_there_and_times_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Porting a search to a second device re-evaluated every sub-network on the validation
    data (60-75 % of each measurement, user probe of session 21), though accuracy with the
    same weights and data does not depend on the device: now it is taken, with the job that
    measured it in ``details.quality_from``, and only the latency is timed."""
    evaluated: list[str] = []
    original = FmnistOFACNN.evaluate

    def counting(self: FmnistOFACNN, arch: Any, module: Any = None) -> dict[str, float]:
        evaluated.append(self.encode(self.canonical(arch)))
        return original(self, arch, module)

    monkeypatch.setattr(FmnistOFACNN, "evaluate", counting)
    settings = embedded_settings(tmp_path, embedded_devices="cpu-1t,cpu-ort,cpu-ts,cpu-all")
    with TestClient(create_app(settings)) as client:
        first = wait_for(client, client.post("/v1/jobs", json=dict(FMNIST, seed=3)).json()["id"])
        on_first = {e["subnet_id"]: e for e in _evaluations(client, first["id"])}
        assert sorted(evaluated) == sorted(on_first)
        evaluated.clear()
        # a newer measurement of the same two without accuracy (review, session 21: it hid
        # the one with it, whose accuracy was then evaluated again)
        speed = dict(FMNIST, device="cpu-all", seed=3, objectives={"latency_ms": "min"})
        latency_only = wait_for(client, client.post("/v1/jobs", json=speed).json()["id"])
        assert {e["subnet_id"] for e in _evaluations(client, latency_only["id"])} == set(on_first)
        assert evaluated == []
        on_ort = dict(FMNIST, device="cpu-ort", seed=3)  # random, same seed: the same two
        second = wait_for(client, client.post("/v1/jobs", json=on_ort).json()["id"])
        assert second["status"] == "succeeded" and evaluated == []
        taken = _evaluations(client, second["id"])
        assert {e["subnet_id"] for e in taken} == set(on_first)
        for e in taken:
            assert e["metrics"]["accuracy"] == on_first[e["subnet_id"]]["metrics"]["accuracy"]
            assert e["details"]["quality_from"] == first["id"]
            latency = e["details"]["latency"]
            assert latency["provenance"] == "measured" and latency["runtime"] == "onnxruntime"
        assert (
            "accuracy of 2 new measurements taken from other devices' measurements of the "
            "same sub-networks" in second["message"]
        )
        url = f"/v1/jobs/{second['id']}/subnets/{taken[0]['subnet_id']}/export"
        exported = client.get(url, params={"format": "state_dict"})
        card = json.loads(zipfile.ZipFile(io.BytesIO(exported.content)).read("architecture.json"))
        assert card["quality_from"] == first["id"]  # the file says whose accuracy it carries
        # A third device's job reads the second's rows (the newest): it names the job that
        # evaluated the accuracy, not the one that took it
        on_ts = dict(on_ort, device="cpu-ts")
        third = wait_for(client, client.post("/v1/jobs", json=on_ts).json()["id"])
        assert third["status"] == "succeeded" and evaluated == []
        origins = {e["details"]["quality_from"] for e in _evaluations(client, third["id"])}
        assert origins == {first["id"]}
        cold = dict(on_ort, warm_start=False)
        cold_job = wait_for(client, client.post("/v1/jobs", json=cold).json()["id"])
        assert cold_job["status"] == "succeeded" and sorted(evaluated) == sorted(on_first)
        assert all("quality_from" not in e["details"] for e in _evaluations(client, cold_job["id"]))


def test_hints_are_what_other_devices_measured_before_the_job_was_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job resumed after more measurements on other devices gets the same hints, so it
    proposes what it would have proposed."""
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    runner = JobRunner(factory, settings, "worker-1")
    hinted: list[list[str]] = []
    original = LinasStrategy.hint

    def recording(self: LinasStrategy, arch: Any, metrics: Any) -> bool:
        hinted[-1].append(self.space.key(arch))
        return original(self, arch, metrics)

    monkeypatch.setattr(LinasStrategy, "hint", recording)

    def create(**overrides: Any) -> str:
        spec = JobCreate(**{**SPEC, **overrides}).model_dump(mode="json")
        with transaction(factory) as session:
            return q.create_jobs(session, [(spec, None)])[0].id

    def run(job_id: str) -> None:
        hinted.append([])
        assert runner.run(job_id) == JobStatus.succeeded

    run(create(budget={"evaluations": 6}))  # on pixel3, before the fpga job exists
    on_fpga = create(device="nb201-fpga", strategy="linas", budget={"evaluations": 3})
    run(create(seed=8, budget={"evaluations": 6}))  # on pixel3, after it was created
    run(on_fpga)
    first_hints = hinted[-1]
    assert len(first_hints) == 6  # the first pixel3 job's only
    kept = as_if_died_after_its_first(factory, on_fpga)
    run(on_fpga)
    assert hinted[-1] == first_hints
    with transaction(factory) as session:
        again = [e.subnet_id for e in eq.list_evaluations(session, on_fpga)[0]]
    assert again == kept  # the same proposals after the resume


def test_latencies_timed_on_a_busy_device_are_not_reused(tmp_path: Path) -> None:
    """A job's busy-device latencies (the median's 95 % interval over NOISY_FACTOR times
    the target) were copied into every later job, the newest measurement of a sub-network
    hiding an older quiet one, with nothing said (security review, session 20). Now the
    newest quiet measurement is taken, a sub-network with none is left to be measured
    again, and the job's message says how many were passed over."""
    from sqlalchemy import select

    from store.tables import Evaluation

    settings = embedded_settings(tmp_path, embedded_devices="")
    factory = make_session_factory(make_engine(settings.database_url))
    spec = dict(SPEC, budget={"evaluations": 6})
    with TestClient(create_app(settings)) as client:
        quiet = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        busy = wait_for(
            client, client.post("/v1/jobs", json=dict(spec, warm_start=False)).json()["id"]
        )
        both = {e["subnet_id"] for e in _evaluations(client, busy["id"])}
        assert both == {e["subnet_id"] for e in _evaluations(client, quiet["id"])}  # same seed

        def timed(job_id: str, rel_ci: float, subnets: set[str], p10_ms: float = 1.9) -> None:
            with transaction(factory) as session:
                rows = session.scalars(select(Evaluation).where(Evaluation.job_id == job_id))
                for row in rows:
                    if row.subnet_id in subnets:
                        latency = {"provenance": "measured", "rel_ci": rel_ci, "p10_ms": p10_ms}
                        row.details = {**row.details, "latency": {**latency, "median_ms": 2.0}}

        first_three = set(sorted(both)[:3])
        timed(quiet["id"], 0.01, both)
        # the newest measurement of each: busy, by a wide interval, or by a narrow one around
        # a median 6 times the fastest calls (steady contention, SKEW_FACTOR)
        timed(busy["id"], 0.9, set(sorted(both)[::2]))
        timed(busy["id"], 0.01, set(sorted(both)[1::2]), p10_ms=0.33)
        timed(quiet["id"], 0.5, first_three)  # and three have no quiet one at all
        later = wait_for(
            client,
            client.post("/v1/jobs", json=dict(spec, seed=2, budget={"evaluations": 1})).json()[
                "id"
            ],
        )
        reused = [e for e in _evaluations(client, later["id"]) if "reused_from" in e["details"]]
        assert {e["subnet_id"] for e in reused} == both - first_three
        assert {e["details"]["reused_from"] for e in reused} == {quiet["id"]}
        assert later["message"].startswith(
            f"warm start: {len(both) - 3} earlier measurements of nb201-cifar10 on nb201-pixel3 "
            "reused, 3 others not, their latency timed on a busy device (the median's 95 % "
            "interval over 5 times the profile's target, or the median over 2 times the "
            "fastest tenth of the calls): measured again"
        )

        size = dict(spec, seed=3, objectives={"accuracy": "max"}, budget={"evaluations": 1})
        accuracy_only = wait_for(client, client.post("/v1/jobs", json=size).json()["id"])
        assert accuracy_only["progress"]["evaluations_reused"] >= len(both)  # latency not asked


def test_a_reused_sub_network_is_exported_once_for_every_job_holding_it(tmp_path: Path) -> None:
    """Exports were kept per job id: every warm-started job (budget 1 copies up to 2,000
    sub-networks) could write each of them again, 60-100 MB apiece for ResNet50, and
    never removed (security review, session 20). A copy is the measuring job's file."""
    settings = embedded_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        first = wait_for(client, client.post("/v1/jobs", json=FMNIST).json()["id"])
        spec = dict(FMNIST, seed=7, budget={"evaluations": 1})
        second = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert second["progress"]["evaluations_reused"] == 2
        subnet = _evaluations(client, first["id"])[0]["subnet_id"]
        files = [
            client.get(f"/v1/jobs/{job['id']}/subnets/{subnet}/export", params={"format": "onnx"})
            for job in (second, first, second)
        ]
        assert [f.status_code for f in files] == [200, 200, 200]
        assert files[0].content == files[1].content == files[2].content
        written = sorted(
            p.relative_to(settings.data_dir) for p in Path(settings.data_dir).rglob("*.onnx")
        )
        assert written == [EXPORTS / first["id"] / f"{subnet}.onnx"]
        import onnx

        props = onnx.load_from_string(files[0].content).metadata_props
        card = json.loads(next(p.value for p in props if p.key == "hwnas.card"))
        assert card["job_id"] == first["id"] and card["validation_data"] is None  # its own
        # what it measured with: the job says, the file says, and the copy shares it
        assert card["measured_with"] == first["measured_with"] == second["measured_with"]
        assert isinstance(card["measured_with"], str) and first["validation_data"] is None
