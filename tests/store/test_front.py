"""The normalised hypervolume a job reports as progress (``store.front``)."""

from __future__ import annotations

import numpy as np
import pytest

from search import Bound, hypervolume
from store import front
from store.front import REFERENCE, front_of_metrics

BOTH = {"accuracy": "max", "latency_ms": "min"}


def _hv(metrics: list[dict[str, float]], constraints: dict[str, Bound] | None = None) -> float:
    _, hv = front_of_metrics(metrics, BOTH, constraints or {})
    assert hv is not None
    return hv


def test_a_single_evaluation_has_the_whole_volume() -> None:
    """Research audit 31 L4: one evaluation's front had 0.0 (a maximised objective that
    every evaluation shared was scaled to the worst end)."""
    assert _hv([{"accuracy": 0.9, "latency_ms": 2.0}]) == pytest.approx(1.0)


@pytest.mark.parametrize("count", range(1, 8))
def test_one_point_best_in_everything_is_1_not_past_it(count: int) -> None:
    """Multi-objective audit 33: 1.0000000000000002 from 4 objectives (the volume and the
    reference's, computed apart, differed in the last bit)."""
    objectives = {f"m{k}": "max" if k % 2 else "min" for k in range(count)}
    _, hv = front_of_metrics([dict.fromkeys(objectives, 1.0)], objectives, {})
    assert hv == 1.0


def test_two_extremes_count_through_the_margin_beyond_the_worst_corner() -> None:
    """Two points, each the best in one objective, had 0.0 with the reference at the
    corner itself."""
    both = [{"accuracy": 0.9, "latency_ms": 4.0}, {"accuracy": 0.8, "latency_ms": 1.0}]
    margin = REFERENCE - 1.0
    expected = (2 * REFERENCE * margin - margin**2) / REFERENCE**2
    assert _hv(both) == pytest.approx(expected)
    assert 0.0 < _hv(both) < 1.0


def test_a_dominating_point_alone_on_the_front_has_the_whole_volume() -> None:
    rows = [{"accuracy": 0.9, "latency_ms": 1.0}, {"accuracy": 0.5, "latency_ms": 3.0}]
    assert _hv(rows) == pytest.approx(1.0)


def test_a_middle_point_adds_its_own_rectangle() -> None:
    rows = [
        {"accuracy": 0.9, "latency_ms": 4.0},
        {"accuracy": 0.8, "latency_ms": 1.0},
        {"accuracy": 0.85, "latency_ms": 2.5},
    ]
    corners = _hv(rows[:2])
    assert _hv(rows) == pytest.approx(corners + 0.5 * 0.5 / REFERENCE**2)


def test_nothing_feasible_is_zero_and_nothing_measured_is_none() -> None:
    rows = [{"accuracy": 0.9, "latency_ms": 4.0}]
    assert _hv(rows, {"latency_ms": Bound(max=1.0)}) == 0.0
    assert front_of_metrics([], BOTH, {}) == ([], None)


def test_a_large_front_in_many_objectives_is_estimated_close_to_the_exact_volume() -> None:
    """Search review 32: the exact computation took 16 s for 200 points in 5 objectives,
    after each evaluation; past ``EXACT_COST`` it is estimated on fixed samples."""
    rng = np.random.default_rng(1)
    points = np.abs(rng.normal(size=(60, 5)))
    points /= np.linalg.norm(points, axis=1, keepdims=True)  # none dominates another
    reference = np.full(5, REFERENCE)
    assert 60**4 * np.log2(60) > front.EXACT_COST  # estimated
    estimated = front._volume(points, reference)
    exact = hypervolume(points, ["min"] * 5, reference)
    assert estimated == pytest.approx(exact, abs=0.01 * REFERENCE**5)
    assert front._volume(points, reference) == estimated  # the same samples each time
    small = points[:10]  # exact
    assert front._volume(small, reference) == hypervolume(small, ["min"] * 5, reference)
