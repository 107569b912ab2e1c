"""A job's proposals whose counted MACs, params or model size break its constraints are
passed over unmeasured (multi-objective audit 33)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ..api.helpers import job_spec, wait_for


def test_proposals_breaking_a_bound_on_params_are_not_measured(client: TestClient) -> None:
    spec = job_spec(
        supernet="text-transformer-synth",
        objectives={"accuracy": "max", "latency_ms": "min"},
        constraints={"params": {"max": 150_000}},  # about a quarter of the space meets it
        strategy="random",
        budget={"evaluations": 6},
        warm_start=False,
    )
    job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
    assert job["status"] == "succeeded", job
    measured = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
    assert len(measured) == 6
    assert all(e["metrics"]["params"] <= 150_000 and e["feasible"] for e in measured)
    assert (
        "of the search passed over unmeasured: their MACs, params or model size" in (job["message"])
    )
