"""A job's proposals whose counted MACs, params or model size break its constraints are
passed over unmeasured (multi-objective audit 33)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.schemas import JobCreate
from workers.runner import build_plan

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


def test_a_count_that_raises_leaves_the_proposal_to_its_measurement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review 33b: a plugin's complexity() that raised in the screen failed the whole job;
    before the screen, it failed that measurement only (counted in budget.failures)."""
    spec = JobCreate(
        supernet="text-transformer-synth", device="cpu-1t",
        objectives={"accuracy": "max", "latency_ms": "min"},
        constraints={"params": {"max": 10**9}}, budget={"evaluations": 3}, strategy="random",
    ).model_dump(mode="json")  # fmt: skip
    plan = build_plan(spec)

    def counting_fails(arch: dict) -> None:
        raise MemoryError("counting this one")

    monkeypatch.setattr(plan.evaluator.supernet, "complexity", counting_fails)
    assert len(plan.strategy.ask(3)) == 3 and plan.strategy.n_screened == 0
