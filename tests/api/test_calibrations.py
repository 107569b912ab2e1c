"""Device calibrations through the service: fit, store versions, list them, reuse the latest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import get_settings
from models.registry import get_supernet
from workers.calibration import latency_predictor_for

from ..conftest import embedded_settings

RECORDED = "/v1/devices/nb201-1080ti-1/calibrations"
METRICS = {"n", "within_10pct", "spearman", "mape", "method"}


def test_a_recorded_device_is_calibrated_versioned_and_reused(client: TestClient) -> None:
    body = {"supernet": "nb201-cifar10", "n_samples": 30, "seed": 1}
    first = client.post(RECORDED, json=body)
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["version"] == 1 and created["n_measurements"] == 30
    assert created["latency_source"] == "recorded" and created["kind"] == "scaled-lut"
    assert set(created["metrics"]) == METRICS and created["metrics"]["n"] == 30
    second = client.post(RECORDED, json={**body, "n_samples": 40, "kind": "ridge"}).json()
    assert second["version"] == 2 and second["kind"] == "ridge"

    listed = client.get(RECORDED, params={"supernet": "nb201-cifar10"}).json()
    assert listed["count"] == 2 and [c["version"] for c in listed["data"]] == [2, 1]
    assert client.get(RECORDED, params={"supernet": "fmnist-ofa-cnn"}).json()["count"] == 0

    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    predicted = latency_predictor_for(factory, "nb201-cifar10", "nb201-1080ti-1")
    assert predicted is not None and predicted.version == 2
    assert predicted.provenance["provenance"] == "predicted"
    supernet = get_supernet("nb201-cifar10")
    archs = [supernet.decode(key) for key in sorted(supernet.rows)[:5]]
    latency = predicted(archs)
    assert isinstance(latency, np.ndarray) and latency.shape == (5,) and np.all(latency > 0)
    assert latency_predictor_for(factory, "nb201-cifar10", "nb201-pixel3") is None


def test_bad_calibration_requests_say_what_is_wrong(client: TestClient) -> None:
    body = {"supernet": "nb201-cifar10", "n_samples": 10}
    unknown = client.post("/v1/devices/no-such-device/calibrations", json=body)
    assert unknown.status_code == 404 and "no-such-device" in unknown.json()["detail"]
    too_many = client.post(RECORDED, json={**body, "n_samples": 500})
    assert too_many.status_code == 422 and "n_samples" in too_many.json()["message"]
    no_supernet = client.post(RECORDED, json={**body, "supernet": "nope"})
    assert no_supernet.status_code == 422 and no_supernet.json()["field"] == "supernet"
    mixed = client.post(RECORDED, json={**body, "supernet": "fmnist-ofa-cnn"})
    assert mixed.status_code == 422 and "recorded" in mixed.json()["detail"]
    kind = client.post(RECORDED, json={**body, "kind": "oracle"})
    assert kind.status_code == 422 and kind.json()["field"] == "kind"
    # This server serves cpu-1t only (conftest): it cannot measure cpu-ort for a calibration.
    elsewhere = client.post("/v1/devices/cpu-ort/calibrations", json={"supernet": "fmnist-ofa-cnn"})
    assert elsewhere.status_code == 409 and "cpu-1t" in elsewhere.json()["detail"]


def test_a_live_device_is_calibrated_with_real_measurements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A one-thread CPU profile with a short protocol: this test checks the path, not timings.
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "cpu-quick.yaml").write_text(
        "id: cpu-quick\nname: quick CPU\nkind: cpu\nruntime: torch_eager\nthreads: 1\n"
        "protocol: {warmup: 1, min_repeats: 3, max_repeats: 10, target_rel_ci: 0.5, "
        "time_cap_s: 0.05, min_sample_ms: 0.05}\n"
    )
    monkeypatch.setenv("HWNAS_PROFILE_DIRS", str(profiles))
    get_settings.cache_clear()
    try:
        settings = embedded_settings(tmp_path, embedded_devices="cpu-quick")
        with TestClient(create_app(settings)) as client:
            body = {"supernet": "fmnist-ofa-cnn", "n_samples": 5, "seed": 3}
            response = client.post("/v1/devices/cpu-quick/calibrations", json=body)
            assert response.status_code == 201, response.text
            created = response.json()
            assert created["latency_source"] == "measured" and created["n_measurements"] == 5
            assert created["metrics"]["method"] == "leave-one-out"
            listed = client.get("/v1/devices/cpu-quick/calibrations").json()
            assert [c["id"] for c in listed["data"]] == [created["id"]]
    finally:
        get_settings.cache_clear()
