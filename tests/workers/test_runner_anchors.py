"""A job measures its supernet's anchors (``Supernet.anchors``: the smallest and the largest
sub-network) before anything else, unless they would take over a fifth of its budget or are
known to break one of its constraints before measuring."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from models.fmnist_cnn import FmnistOFACNN, largest_arch, smallest_arch
from models.registry import get_supernet
from workers.calibration import PredictedLatency
from workers.runner import ANCHORS_SAID, build_plan

from ..api.helpers import wait_for
from ..conftest import embedded_settings

SPEC: dict[str, Any] = {
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "objectives": {"accuracy": "max", "macs": "min"},
    "budget": {"evaluations": 10},
    "strategy": "random",
    "seed": 3,
}
SMALL, LARGE = (get_supernet("fmnist-ofa-cnn").encode(a) for a in (smallest_arch(), largest_arch()))


def _anchored(**changes: Any) -> list[str]:
    plan = build_plan({**SPEC, **changes})
    return [plan.strategy.space.key(a) for a in plan.strategy.initial_left]


def test_a_plan_proposes_the_smallest_and_the_largest_network_first() -> None:
    for strategy in ("random", "nsga2", "tpe", "linas"):
        assert _anchored(strategy=strategy) == [SMALL, LARGE]
    assert _anchored(budget={"evaluations": 9}) == []  # two would be over a fifth of it
    assert _anchored(supernet="nb201-cifar10", device="nb201-pixel3") == []  # no ends


def test_anchors_known_to_break_a_constraint_are_left_out() -> None:
    supernet = get_supernet("fmnist-ofa-cnn")
    small, large = (supernet.complexity(a) for a in (smallest_arch(), largest_arch()))
    between = {"max": (small.macs + large.macs) / 2}
    assert _anchored(constraints={"macs": between}) == [SMALL]
    assert _anchored(constraints={"params": {"min": large.params + 1}}) == []
    # quality is not known before measuring: both kept
    assert _anchored(constraints={"accuracy": {"min": 0.99}}) == [SMALL, LARGE]
    # latency: by the stored predictor's estimate, when the job has one
    estimate = cast(PredictedLatency, lambda archs: [1.0 if a == smallest_arch() else 9.0
                                                    for a in archs])  # fmt: skip
    spec = {**SPEC, "constraints": {"latency_ms": {"max": 4.0}}}
    plan = build_plan(spec, 0, estimate)
    assert [plan.strategy.space.key(a) for a in plan.strategy.initial_left] == [SMALL]
    assert _anchored(constraints={"latency_ms": {"max": 4.0}}) == [SMALL, LARGE]  # no prior


def test_a_job_measures_its_anchors_first_and_says_so(tmp_path: Path) -> None:
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        job = wait_for(client, client.post("/v1/jobs", json=SPEC).json()["id"])
        evaluations = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
        front = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
    assert job["status"] == "succeeded", job["message"]
    assert f"2 anchors of fmnist-ofa-cnn {ANCHORS_SAID}" in job["message"]
    keys = [e["subnet_id"] for e in evaluations]
    assert keys[:2] == [SMALL, LARGE] and len(set(keys)) == len(keys) == 10
    assert SMALL in {point["subnet_id"] for point in front}  # the fewest MACs there are


class _BadAnchors(FmnistOFACNN):
    def __init__(self, anchors: Any) -> None:
        super().__init__()
        self._anchors = anchors

    def anchors(self) -> list[dict[str, Any]]:
        if isinstance(self._anchors, Exception):
            raise self._anchors
        return list(self._anchors)


def test_a_plugin_whose_anchors_fail_is_searched_without_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for anchors in (RuntimeError("no ends here"), [{"r": 99}], [smallest_arch(), "small"]):
        plan = build_plan(SPEC, supernet=_BadAnchors(anchors))
        assert plan.strategy.initial_left == []
    assert "no ends here" in caplog.text and "searching without them" in caplog.text
