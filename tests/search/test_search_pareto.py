"""Dominance, fronts and hypervolume on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from search import (
    Bound,
    exact_hypervolume_cost,
    feasible_front,
    hypervolume,
    non_dominated,
    sampled_hypervolume,
)


def test_non_dominated_minimisation() -> None:
    points = [[1, 5], [2, 2], [5, 1], [3, 3], [2, 6]]
    assert non_dominated(points, ["min", "min"]).tolist() == [0, 1, 2]


def test_non_dominated_mixed_senses() -> None:
    # (accuracy max, latency min)
    points = [[0.9, 10], [0.8, 5], [0.85, 12], [0.7, 5], [0.95, 20]]
    assert non_dominated(points, ["max", "min"]).tolist() == [0, 1, 4]


def test_non_dominated_keeps_every_copy_of_an_equal_point() -> None:
    points = [[1, 1], [1, 1], [2, 0], [2, 2], [2, 2]]
    assert non_dominated(points, ["min", "min"]).tolist() == [0, 1, 2]


def test_weak_domination_counts() -> None:
    # Equal on one objective, better on the other: dominated.
    assert non_dominated([[1, 2], [1, 3]], ["min", "min"]).tolist() == [0]


def test_non_dominated_edge_cases() -> None:
    assert non_dominated(np.zeros((0, 2)), ["min", "min"]).tolist() == []
    assert non_dominated([[3.0], [1.0], [1.0]], ["min"]).tolist() == [1, 2]
    with pytest.raises(InvalidInput, match="senses"):
        non_dominated([[1, 2]], ["min"])
    with pytest.raises(InvalidInput, match="NaN"):
        non_dominated([[1, float("nan")]], ["min", "min"])


def _dominated_by_definition(points: np.ndarray, i: int) -> bool:
    """Some other row is no worse everywhere and strictly better somewhere (minimised)."""
    return any(
        bool(np.all(q <= points[i]) and np.any(q < points[i])) for q in np.delete(points, i, 0)
    )


@pytest.mark.parametrize("objectives", [1, 2, 3])
def test_non_dominated_matches_the_definition_with_ties_and_infinities(objectives: int) -> None:
    """Two objectives take a sort-based path, others a blocked pairwise one: both must keep
    exactly the rows the definition keeps (small integer grids make ties and copies)."""
    rng = np.random.default_rng(objectives)
    for n in (1, 2, 3, 7, 40, 300):
        for points in (
            rng.integers(0, 4, (n, objectives)).astype(float),
            rng.random((n, objectives)),
            np.where(
                rng.random((n, objectives)) < 0.1, np.inf, rng.integers(0, 3, (n, objectives))
            ),
        ):
            expected = [i for i in range(n) if not _dominated_by_definition(points, i)]
            assert list(non_dominated(points, ["min"] * objectives)) == expected


def test_hypervolume_2d_hand_computed() -> None:
    points = [[1, 3], [2, 2], [3, 1]]
    # Staircase under reference (4, 4): 3*1 + 2*1 + 1*1.
    assert hypervolume(points, ["min", "min"], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_2d_ignores_dominated_duplicates_and_outside_points() -> None:
    points = [[1, 3], [2, 2], [2, 2], [3, 3], [3, 1], [5, 0], [0, 4]]
    assert hypervolume(points, ["min", "min"], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_2d_mixed_senses() -> None:
    # accuracy (max) 0.9 and 0.8 with latency (min) 10 and 5; reference (0.5, 20).
    points = [[0.9, 10], [0.8, 5]]
    expected = (0.9 - 0.5) * (20 - 10) + (0.8 - 0.5) * (10 - 5)
    assert hypervolume(points, ["max", "min"], [0.5, 20]) == pytest.approx(expected)


def test_hypervolume_3d_hand_computed() -> None:
    # Boxes [0,2]x[1,2]x[0,2] (volume 4) and [1,2]x[0,2]x[1,2] (volume 2) overlap in
    # [1,2]x[1,2]x[1,2] (volume 1): 4 + 2 - 1.
    points = [[0, 1, 0], [1, 0, 1]]
    assert hypervolume(points, ["min", "min", "min"], [2, 2, 2]) == pytest.approx(5.0)


def test_hypervolume_3d_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    points = rng.random((12, 3))
    reference = np.array([1.0, 1.0, 1.0])
    exact = hypervolume(points, ["min", "min", "min"], reference)
    samples = rng.random((200_000, 3))
    dominated = np.zeros(len(samples), dtype=bool)
    for point in points:
        dominated |= np.all(samples >= point, axis=1)
    assert exact == pytest.approx(dominated.mean(), abs=0.01)


def test_hypervolume_4d_mixed_senses_matches_monte_carlo() -> None:
    rng = np.random.default_rng(1)
    points = rng.random((8, 4))
    senses = ["min", "max", "min", "max"]
    reference = [1.0, 0.0, 1.0, 0.0]
    exact = hypervolume(points, senses, reference)
    samples = rng.random((200_000, 4))
    flip = np.array([1, -1, 1, -1])
    dominated = np.zeros(len(samples), dtype=bool)
    for point in points:
        dominated |= np.all(samples * flip >= point * flip, axis=1)
    assert exact == pytest.approx(dominated.mean(), abs=0.01)


def test_hypervolume_empty_is_zero() -> None:
    assert hypervolume(np.zeros((0, 3)), ["min"] * 3, [1, 1, 1]) == 0.0


def test_feasible_front() -> None:
    metrics = [
        {"acc": 0.9, "lat": 30.0},  # infeasible: lat > 20
        {"acc": 0.8, "lat": 10.0},
        {"acc": 0.7, "lat": 12.0},  # dominated
        {"acc": 0.85, "lat": 15.0},
        {"acc": 0.8, "lat": 10.0},  # equal copy: kept
    ]
    front = feasible_front(metrics, {"acc": "max", "lat": "min"}, {"lat": Bound(max=20)})
    assert front == [1, 3, 4]


def test_feasible_front_empty_when_nothing_is_feasible() -> None:
    metrics = [{"acc": 0.9, "lat": 30.0}]
    assert feasible_front(metrics, {"acc": "max"}, {"lat": Bound(max=20)}) == []


def test_a_sampled_hypervolume_is_close_to_the_exact_one_and_repeatable() -> None:
    """Search review 32: the exact one grows as points^(objectives-1)."""
    rng = np.random.default_rng(3)
    for objectives, count in ((3, 40), (4, 30)):
        points = np.abs(rng.normal(size=(count, objectives)))
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        senses, reference = ["min"] * objectives, np.full(objectives, 1.2)
        exact = hypervolume(points, senses, reference)
        sampled = sampled_hypervolume(points, senses, reference, samples=20_000)
        assert sampled == pytest.approx(exact, abs=0.01 * 1.2**objectives)
        assert sampled_hypervolume(points, senses, reference, samples=20_000) == sampled
    maximised = sampled_hypervolume([[0.9, 0.8]], ["max", "max"], [0.0, 0.0], samples=1000)
    assert maximised == pytest.approx(0.72)  # one point: its box, whatever the samples
    assert sampled_hypervolume([[2.0, 2.0]], ["min", "min"], [1.0, 1.0], samples=10) == 0.0
    assert exact_hypervolume_cost(200, 5) > exact_hypervolume_cost(200, 3)
    outside = sampled_hypervolume([[np.inf, 0.5], [0.5, 0.5]], ["min"] * 2, [1.0, 1.0], samples=10)
    assert outside == pytest.approx(0.25)  # a point beyond the reference adds nothing
    for odd in ({"samples": 0}, {"samples": 10, "points": [[-np.inf, 0.5]]}):  # review 32c
        given = {"points": [[0.5, 0.5]], "samples": 10, **odd}
        with pytest.raises(InvalidInput):
            sampled_hypervolume(given["points"], ["min"] * 2, [1.0, 1.0], samples=given["samples"])
