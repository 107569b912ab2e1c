"""A job that constrains latency screens its first proposals with the pair's calibration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import models.base as models_base
from api.app import create_app
from core.errors import InvalidInput
from hardware_profiles.latency_predictor import ArchEncoder, fit_latency_predictor
from models import registry
from models.recorded import NB201Supernet
from models.registry import get_supernet
from store.db import transaction
from store.predictors import add_predictor
from workers.calibration import PredictedLatency, latency_predictor_for, trusted_as_prior
from workers.runner import build_plan

from ..api.helpers import wait_for
from ..conftest import embedded_settings

DEVICE, COLUMN = "nb201-1080ti-1", "lat_ms_1080ti_1"
BUDGET = 20  # linas: min(20, max(4, 20 // 5)) = 4 initial proposals


def _spec(limit: float, seed: int) -> dict[str, Any]:
    return {
        "supernet": "nb201-cifar10",
        "device": DEVICE,
        "objectives": {"accuracy": "max", "latency_ms": "min"},
        "constraints": {"latency_ms": {"max": limit}},
        "budget": {"evaluations": BUDGET},
        "strategy": "linas",
        "warm_start": False,
        "seed": seed,
    }


def _first_feasible(client: TestClient, job_id: str, limit: float, n: int) -> int:
    evaluations = client.get(f"/v1/jobs/{job_id}/evaluations", params={"limit": n}).json()
    return sum(e["metrics"]["latency_ms"] <= limit for e in evaluations["data"][:n])


def test_initial_proposals_use_the_stored_latency_predictor(tmp_path: Path) -> None:
    supernet = get_supernet("nb201-cifar10")
    latencies = np.array([row[COLUMN] for row in supernet.rows.values()])
    limit = float(np.quantile(latencies, 0.15))  # 15 % of the cells are feasible
    seeds = range(1, 4)
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=""))) as client:
        before = [wait_for(client, client.post("/v1/jobs", json=_spec(limit, s)).json()["id"])
                  for s in seeds]  # fmt: skip
        calibration = client.post(
            f"/v1/devices/{DEVICE}/calibrations",
            json={"supernet": "nb201-cifar10", "n_samples": 50, "seed": 0},
        )
        assert calibration.status_code == 202, calibration.text
        wait_for(client, calibration.json()["id"], until={"succeeded"})
        after = [wait_for(client, client.post("/v1/jobs", json=_spec(limit, s)).json()["id"])
                 for s in seeds]  # fmt: skip
        # Warm-started from those ~120 measurements: more than its initial proposals, so the
        # predictor screens none, and the job does not claim it did.
        warm = {**_spec(limit, 9), "warm_start": True}
        warmed = wait_for(client, client.post("/v1/jobs", json=warm).json()["id"])
        # Turned off for a job: its seed proposes what it did before the calibration.
        off = {**_spec(limit, seeds[0]), "latency_prior": False}
        unscreened = wait_for(client, client.post("/v1/jobs", json=off).json()["id"])
        proposed = [
            [e["subnet_id"] for e in client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]]
            for job in (before[0], unscreened, after[0])
        ]
        n_initial = 4
        plain = sum(_first_feasible(client, job["id"], limit, n_initial) for job in before)
        screened = sum(_first_feasible(client, job["id"], limit, n_initial) for job in after)
        factory = client.app.state.session_factory  # type: ignore[attr-defined]
        prior = latency_predictor_for(factory, "nb201-cifar10", DEVICE)
    assert all(job["status"] == "succeeded" for job in before + after)
    assert all("4 uniform proposals screened with latency predictor v1" in job["message"]
               for job in after)  # fmt: skip
    assert warmed["message"].startswith("warm start: ") and "screened" not in warmed["message"]
    assert "latency predictor" not in (unscreened["message"] or "")
    assert unscreened["latency_prior"] is False and after[0]["latency_prior"] is True
    assert proposed[1] == proposed[0] != proposed[2]
    assert not any("latency predictor" in (job["message"] or "") for job in before)
    # 12 initial proposals each way: uniform ones are feasible ~15 % of the time (~2 of 12)
    assert plain <= 5, plain
    assert screened >= 10, screened
    # The plan hands the predictor to strategies that take a prior, and only to those.
    assert prior is not None
    assert build_plan(_spec(limit, 1), 0, prior).strategy._prior
    assert not hasattr(build_plan({**_spec(limit, 1), "strategy": "nsga2"}, 0, prior).strategy,
                       "_prior")  # fmt: skip


def test_only_a_predictor_that_cross_validates_well_steers_a_search() -> None:
    supernet = get_supernet("nb201-cifar10")
    encoder = ArchEncoder.from_supernet(supernet)
    archs = [supernet.decode(k) for k in sorted(supernet.rows)[:30]]
    fitted = fit_latency_predictor(encoder, archs, [1.0 + i for i in range(30)])

    def bound(metrics: dict[str, float]) -> PredictedLatency:
        predictor = replace(fitted, metrics={**fitted.metrics, **metrics})
        return PredictedLatency("nb201-cifar10", DEVICE, 1, predictor, encoder)

    assert bound({"spearman": 0.9, "within_10pct": 0.8}).trustworthy
    assert not bound({"spearman": 0.3, "within_10pct": 0.8}).trustworthy  # ranks badly
    assert not bound({"spearman": 0.9, "within_10pct": 0.1}).trustworthy  # scales badly


def test_a_job_says_why_the_stored_predictor_did_not_steer_it(tmp_path: Path) -> None:
    supernet = get_supernet("nb201-cifar10")
    encoder = ArchEncoder.from_supernet(supernet)
    archs = [supernet.decode(k) for k in sorted(supernet.rows)[:30]]
    noise = np.random.default_rng(0).uniform(1.0, 2.0, size=30)  # latencies unrelated to archs
    fitted = fit_latency_predictor(encoder, archs, list(noise))
    assert not trusted_as_prior(fitted.metrics)
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=DEVICE))) as client:
        factory = client.app.state.session_factory  # type: ignore[attr-defined]
        with transaction(factory) as session:
            add_predictor(session, supernet="nb201-cifar10", device=DEVICE,
                          payload=fitted.to_payload(), measurements={"subnets": []}, seed=0,
                          seconds=1.0)  # fmt: skip
        job = wait_for(client, client.post("/v1/jobs", json=_spec(1.0, 1)).json()["id"])
    assert job["status"] == "succeeded"
    assert "latency predictor v1 not used: cross-validated" in job["message"]


def test_a_poor_calibration_stored_later_leaves_the_good_one_steering(tmp_path: Path) -> None:
    """Searches took the newest version only: one quick or mistaken calibration (5 samples,
    Spearman -0.9) turned the screening off for every later job while a good one was stored."""
    supernet = get_supernet("nb201-cifar10")
    encoder = ArchEncoder.from_supernet(supernet)
    keys = sorted(supernet.rows)[:60]
    archs = [supernet.decode(k) for k in keys]
    good = fit_latency_predictor(encoder, archs, [supernet.rows[k][COLUMN] for k in keys])
    noise = np.random.default_rng(0).uniform(1.0, 2.0, size=60)
    poor = fit_latency_predictor(encoder, archs, list(noise))
    assert trusted_as_prior(good.metrics) and not trusted_as_prior(poor.metrics)
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=DEVICE))) as client:
        factory = client.app.state.session_factory  # type: ignore[attr-defined]
        for fitted in (good, poor, poor):
            with transaction(factory) as session:
                add_predictor(session, supernet="nb201-cifar10", device=DEVICE,
                              payload=fitted.to_payload(), measurements={"subnets": []},
                              seed=0, seconds=1.0)  # fmt: skip
        prior = latency_predictor_for(factory, "nb201-cifar10", DEVICE)
        assert prior is not None and (prior.version, prior.passed_over) == (1, (3, 2))
        listed = client.get(f"/v1/devices/{DEVICE}/calibrations").json()["data"]
        assert [(c["version"], c["steers_searches"]) for c in listed] == [
            (3, False), (2, False), (1, True),
        ]  # fmt: skip
        job = wait_for(client, client.post("/v1/jobs", json=_spec(1.0, 1)).json()["id"])
    assert job["status"] == "succeeded"
    assert "newer latency predictor v3, v2 not used: cross-validated below" in job["message"]
    assert "screened with latency predictor v1" in job["message"]


class _Coded(NB201Supernet):
    """nb201-cifar10 as a plugin whose code is at version 2."""

    version = "2"


def test_only_a_predictor_that_timed_the_supernet_s_code_as_it_is_steers_a_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin's calibration recorded no code: a version that timed the code before an
    edit of its ``extract`` kept screening the new code's searches (review 29b)."""
    monkeypatch.setitem(registry._FACTORIES, "nb201-cifar10", lambda: _Coded(dataset="cifar10"))
    monkeypatch.delitem(registry._INSTANCES, "nb201-cifar10", raising=False)
    monkeypatch.delitem(registry._CLASSES, "nb201-cifar10", raising=False)
    with TestClient(create_app(embedded_settings(tmp_path, embedded_devices=""))) as client:
        calibrate = {"supernet": "nb201-cifar10", "n_samples": 50, "seed": 0}
        first = client.post(f"/v1/devices/{DEVICE}/calibrations", json=calibrate).json()
        assert wait_for(client, first["id"])["status"] == "succeeded"
        factory = client.app.state.session_factory  # type: ignore[attr-defined]
        prior = latency_predictor_for(factory, "nb201-cifar10", DEVICE)
        assert prior is not None and prior.version == 1 and prior.trustworthy
        monkeypatch.setattr(_Coded, "version", "3")  # the code edited: a server started since
        models_base._CODE_VERSIONS.pop(_Coded, None)
        registry._INSTANCES.pop("nb201-cifar10")
        with pytest.raises(InvalidInput, match="calibrated with other code of it than it has"):
            latency_predictor_for(factory, "nb201-cifar10", DEVICE)
        listed = client.get(f"/v1/devices/{DEVICE}/calibrations").json()["data"]
        assert [(c["measured_code"], c["steers_searches"]) for c in listed] == [
            ("version 2", False)
        ]
        job = wait_for(client, client.post("/v1/jobs", json=_spec(1.0, 1)).json()["id"])
    assert job["status"] == "succeeded"
    assert "stored latency predictor not used: every latency predictor stored" in job["message"]
