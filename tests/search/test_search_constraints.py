"""Bounds, violations and objective validation."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from search import (
    Bound,
    constraint_values,
    is_feasible,
    validate_constraints,
    validate_objectives,
    violation,
)
from search.constraints import validate_metrics


def test_bound_validation_names_the_side() -> None:
    with pytest.raises(ValueError, match="min"):
        Bound()
    with pytest.raises(ValueError, match="exceeds") as excinfo:
        Bound(min=2, max=1)
    assert excinfo.value.field == "min"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="max"):
        Bound(max=float("inf"))
    with pytest.raises(ValueError, match="max"):
        Bound(max=True)  # type: ignore[arg-type]


def test_bound_is_frozen() -> None:
    bound = Bound(max=1.0)
    with pytest.raises(AttributeError):
        bound.max = 2.0  # type: ignore[misc]


def test_feasible_point_has_zero_violation() -> None:
    constraints = {"lat": Bound(max=20), "acc": Bound(min=0.5, max=1.0)}
    metrics = {"lat": 20.0, "acc": 0.5}
    assert violation(metrics, constraints) == 0.0
    assert is_feasible(metrics, constraints)


def test_violation_is_sum_of_relative_violations() -> None:
    constraints = {"lat": Bound(max=20), "mem": Bound(min=10)}
    metrics = {"lat": 30.0, "mem": 5.0}
    assert violation(metrics, constraints) == pytest.approx(10 / 20 + 5 / 10)
    assert not is_feasible(metrics, constraints)


def test_zero_limit_uses_absolute_violation() -> None:
    assert violation({"x": 0.25}, {"x": Bound(max=0)}) == pytest.approx(0.25)


def test_constraint_values_are_signed_per_side() -> None:
    values = constraint_values({"acc": 0.6}, {"acc": Bound(min=0.5, max=0.8)})
    assert values == pytest.approx({"acc:min": -0.2, "acc:max": -0.25})


def test_missing_metric_raises_naming_it() -> None:
    with pytest.raises(InvalidInput, match="'lat'") as excinfo:
        violation({"acc": 1.0}, {"lat": Bound(max=1)})
    assert excinfo.value.field == "metrics"


def test_no_constraints_is_feasible() -> None:
    assert is_feasible({}, {})


def test_validate_objectives() -> None:
    assert validate_objectives({"acc": "max", "lat": "min"}) == {"acc": "max", "lat": "min"}
    for bad in ({}, {"acc": "maximize"}, {"": "min"}, ["acc"]):
        with pytest.raises(InvalidInput, match="objectives"):
            validate_objectives(bad)


def test_validate_constraints() -> None:
    assert validate_constraints(None) == {}
    with pytest.raises(InvalidInput, match="constraints"):
        validate_constraints({"lat": (0, 1)})


def test_numpy_numbers_are_numbers_and_bools_are_not() -> None:
    """Search review 32: np.float32 and np.int64 metrics and bounds were refused as "not a
    finite number" (np.float64 alone passed, a subclass of float)."""
    bound = Bound(min=np.int64(1), max=np.float32(3.0))
    assert (bound.min, bound.max) == (1.0, 3.0) and type(bound.max) is float
    metrics = validate_metrics({"acc": np.float32(0.5), "lat": np.int64(2)}, ["acc", "lat"])
    assert metrics == {"acc": 0.5, "lat": 2.0} and all(type(v) is float for v in metrics.values())
    for odd in (True, np.bool_(True), np.float32("nan"), 10**400):
        with pytest.raises(InvalidInput, match="finite number"):
            validate_metrics({"acc": odd}, ["acc"])
        with pytest.raises(InvalidInput, match="finite number"):
            Bound(max=odd)  # type: ignore[arg-type]
