"""What a downloaded file's card says of the job's constraints."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from fastapi.testclient import TestClient

from api.app import create_app
from tests.conftest import embedded_settings

from .helpers import job_spec, wait_for


def _card(client: TestClient, job_id: str, subnet_id: str) -> dict:
    answer = client.get(f"/v1/jobs/{job_id}/subnets/{subnet_id}/export", params={"format": "onnx"})
    assert answer.status_code == 200, answer.text
    props = onnx.load_from_string(answer.content).metadata_props
    return json.loads(next(p.value for p in props if p.key == "hwnas.card"))


def test_the_card_says_the_bounds_and_whether_the_sub_network_kept_them(tmp_path: Path) -> None:
    """Vision audit L9: an infeasible sub-network's file did not say it broke the job's
    bounds (a deployer reading the card alone took it for a front point)."""
    bounds = {"accuracy": {"min": 0.0}, "params": {"max": 1.0}}  # no sub-network has <= 1
    spec = job_spec(
        supernet="text-transformer-synth",
        objectives={"accuracy": "max", "latency_ms": "min"},
        constraints=bounds,
        strategy="random",
        budget={"evaluations": 2},
    )
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "succeeded", job
        measured = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
        assert measured and not any(e["feasible"] for e in measured)
        card = _card(client, job["id"], measured[0]["subnet_id"])
        assert card["constraints"] == job["constraints"] and card["feasible"] is False
        assert card["constraints"]["params"] == {"min": None, "max": 1.0}  # as the job says

        loose = wait_for(
            client, client.post("/v1/jobs", json=dict(spec, constraints={}, seed=1)).json()["id"]
        )
        kept = client.get(f"/v1/jobs/{loose['id']}/evaluations").json()["data"]
        fresh = [e for e in kept if "reused_from" not in e["details"]]
        assert fresh and fresh[0]["feasible"]
        card = _card(client, loose["id"], fresh[0]["subnet_id"])
        assert card["constraints"] == {} and card["feasible"] is True
