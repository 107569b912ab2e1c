"""Test helpers: job specs and polling."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

FINISHED = {"succeeded", "failed", "cancelled"}


def job_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "supernet": "fmnist-ofa-cnn",
        "device": "cpu-1t",
        "objectives": {"accuracy": "max", "latency_ms": "min"},
        "constraints": {"latency_ms": {"max": 50.0}},
        "budget": {"evaluations": 6},
        "strategy": "nsga2",
        "seed": 0,
    }
    spec.update(overrides)
    return spec


def wait_for(
    client: TestClient,
    job_id: str,
    *,
    until: set[str] = FINISHED,
    min_evaluations: int = 0,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until and job["progress"]["evaluations_done"] >= min_evaluations:
            return job
        if job["status"] in FINISHED and job["status"] not in until:
            raise AssertionError(f"job ended {job['status']}: {job}")
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {job['status']} after {timeout_s} s: {job}")
        time.sleep(0.2)
