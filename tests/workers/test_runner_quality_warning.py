"""A job whose supernet's accuracy means nothing (random weights) says so, as its files do."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app

from ..api.helpers import job_spec, wait_for
from ..conftest import embedded_settings

TEXT = "text-transformer-synth"  # no weights shipped: seeded random ones
WARNING = "random weights: accuracy is meaningless until trained weights are given"


def test_a_job_and_its_export_say_the_accuracy_of_random_weights_is_meaningless(
    tmp_path: Path,
) -> None:
    """Only the catalog said it: a job on an OFA supernet without a checkpoint reported
    "best by accuracy 0.0000" and exported a file whose card said nothing (audit 30)."""
    searched = job_spec(supernet=TEXT, strategy="random", budget={"evaluations": 2},
                        constraints={})  # fmt: skip
    timed = {**searched, "objectives": {"latency_ms": "min"}}
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        job = wait_for(client, client.post("/v1/jobs", json=searched).json()["id"])
        latency_only = wait_for(client, client.post("/v1/jobs", json=timed).json()["id"])
        [point, *_] = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
        url = f"/v1/jobs/{job['id']}/subnets/{point['subnet_id']}/export?format=state_dict"
        exported = client.get(url)
    assert job["status"] == "succeeded" and f"{TEXT}: {WARNING}" in job["message"]
    assert WARNING not in (latency_only["message"] or "")  # it measures no accuracy
    assert exported.status_code == 200
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        card = json.loads(archive.read("architecture.json"))
    assert card["warning"] == WARNING
