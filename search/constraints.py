"""Objectives (metric -> sense) and constraints (metric -> bound) on measured metrics."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.errors import InvalidInput

Sense = Literal["min", "max"]
Objectives = dict[str, Sense]
SENSES: tuple[Sense, ...] = ("min", "max")

__all__ = [
    "SENSES",
    "Bound",
    "Constraints",
    "Objectives",
    "Sense",
    "check_int",
    "constraint_values",
    "is_feasible",
    "validate_constraints",
    "validate_metrics",
    "validate_objectives",
    "violation",
]


def is_finite_number(value: object) -> bool:
    """A finite real number, numpy's included (``np.float32``, ``np.int64``: search review
    32), not a bool."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float's range (10**400: review 32a)
        return False


def check_int(value: object, field: str, minimum: int) -> int:
    """``value`` as an int, any integer type (numpy's from ``np.arange``: research audit
    31) but a bool."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        number = value.__index__()
        if number >= minimum:
            return number
    raise InvalidInput(f"{field} must be an int >= {minimum}, got {value!r}", field=field)


def _check_limit(value: float | None, field: str) -> None:
    if value is None:
        return
    if not is_finite_number(value):
        raise InvalidInput(f"bound {field} must be a finite number, got {value!r}", field=field)


@dataclass(frozen=True)
class Bound:
    """Allowed closed interval ``[min, max]`` of one metric; ``None`` leaves that side open."""

    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        _check_limit(self.min, "min")
        _check_limit(self.max, "max")
        for side in ("min", "max"):  # numpy's numbers as Python's (they are checked above)
            if (value := getattr(self, side)) is not None:
                object.__setattr__(self, side, float(value))
        if self.min is None and self.max is None:
            raise InvalidInput("a bound needs min, max or both", field="min")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise InvalidInput(f"bound min {self.min} exceeds max {self.max}", field="min")

    def slacks(self, value: float) -> dict[str, float]:
        """Signed relative slack per side: ``<= 0`` when that side holds.

        Relative to ``|limit|`` (or 1 when the limit is 0) so that constraints on metrics of
        different units (milliseconds, megabytes) add up to a meaningful total violation.
        """
        out: dict[str, float] = {}
        if self.min is not None:
            out["min"] = (self.min - value) / (abs(self.min) or 1.0)
        if self.max is not None:
            out["max"] = (value - self.max) / (abs(self.max) or 1.0)
        return out


Constraints = dict[str, Bound]


def validate_objectives(objectives: object) -> Objectives:
    """Return ``objectives`` as a dict, or raise :class:`InvalidInput` on field ``objectives``."""
    if not isinstance(objectives, Mapping) or not objectives:
        raise InvalidInput(
            "objectives must be a non-empty mapping of metric -> sense", field="objectives"
        )
    for name, sense in objectives.items():
        if not isinstance(name, str) or not name:
            raise InvalidInput(
                f"objectives: name {name!r} is not a non-empty str", field="objectives"
            )
        if sense not in SENSES:
            raise InvalidInput(
                f"objectives: {name!r} has sense {sense!r}, not one of {list(SENSES)}",
                field="objectives",
            )
    return dict(objectives)


def validate_constraints(constraints: object) -> Constraints:
    """Return ``constraints`` as a dict (``None`` -> empty), or raise on field ``constraints``."""
    if constraints is None:
        return {}
    if not isinstance(constraints, Mapping):
        raise InvalidInput("constraints must be a mapping of metric -> Bound", field="constraints")
    for name, bound in constraints.items():
        if not isinstance(name, str) or not name:
            raise InvalidInput(
                f"constraints: name {name!r} is not a non-empty str", field="constraints"
            )
        if not isinstance(bound, Bound):
            raise InvalidInput(
                f"constraints: {name!r} maps to {bound!r}, not a Bound", field="constraints"
            )
    return dict(constraints)


def validate_metrics(metrics: object, required: list[str]) -> dict[str, float]:
    """Return ``metrics`` with float values; every ``required`` name present and finite."""
    if not isinstance(metrics, Mapping):
        raise InvalidInput(f"metrics must be a mapping, got {metrics!r}", field="metrics")
    out = dict(metrics)
    for name in required:
        if name not in out:
            raise InvalidInput(
                f"metric {name!r} is missing; got {sorted(map(str, out))}", field="metrics"
            )
        value = out[name]
        if not is_finite_number(value):
            raise InvalidInput(
                f"metric {name!r} must be a finite number, got {value!r}", field="metrics"
            )
        out[name] = float(value)
    return out


def constraint_values(metrics: Mapping[str, float], constraints: Constraints) -> dict[str, float]:
    """Signed relative slack per bound side, keyed ``"<metric>:<min|max>"``; > 0 is violated.

    Raises :class:`InvalidInput` naming a constrained metric absent from ``metrics``: a missing
    measurement is a caller's bug, not an infeasible point.
    """
    out: dict[str, float] = {}
    for name, bound in constraints.items():
        if name not in metrics:
            raise InvalidInput(
                f"constrained metric {name!r} is missing from metrics {sorted(metrics)}",
                field="metrics",
            )
        for side, slack in bound.slacks(float(metrics[name])).items():
            out[f"{name}:{side}"] = slack
    return out


def violation(metrics: Mapping[str, float], constraints: Constraints) -> float:
    """0 when feasible, else the sum of relative violations over every bound side."""
    return sum(max(0.0, v) for v in constraint_values(metrics, constraints).values())


def is_feasible(metrics: Mapping[str, float], constraints: Constraints) -> bool:
    """Whether every bound holds."""
    return violation(metrics, constraints) == 0.0
