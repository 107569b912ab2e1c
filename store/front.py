"""The Pareto front of a job's measured evaluations, and what to tell a user about it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search import (
    Bound,
    exact_hypervolume_cost,
    feasible_front,
    hypervolume,
    sampled_hypervolume,
    validate_objectives,
    violation,
)

from .tables import Evaluation


def constraints_of(spec: dict[str, Any]) -> dict[str, Bound]:
    """The constraints of a stored job spec as search bounds."""
    return {
        name: Bound(min=b.get("min"), max=b.get("max"))
        for name, b in spec.get("constraints", {}).items()
    }


@dataclass(frozen=True)
class FrontSummary:
    front: list[Evaluation]
    hypervolume: float | None
    message: str | None


def summarise_front(
    evaluations: Sequence[Evaluation], objectives: dict[str, str], constraints: dict[str, Bound]
) -> FrontSummary:
    """Feasible non-dominated evaluations, their normalised hypervolume, and a message.

    The hypervolume is computed in the box the evaluations so far span (each objective
    scaled to [0, 1], 0 the best; one that every evaluation shares is 0), with the
    reference a tenth of the box beyond its worst corner (``REFERENCE``), divided by the
    reference's own volume: 1 for a point best in every objective. A progress signal, not
    comparable across jobs, and not monotone within one: an evaluation that widens the box
    (a new extreme, feasible or not) rescales the others and can lower it.
    """
    indices, hypervolume_ = front_of_metrics(
        [e.metrics for e in evaluations], objectives, constraints
    )
    if evaluations and not indices:
        return FrontSummary([], 0.0, _no_feasible_message(evaluations, constraints))
    return FrontSummary([evaluations[i] for i in indices], hypervolume_, None)


def front_of_metrics(
    metrics: Sequence[dict[str, float]], objectives: dict[str, str], constraints: dict[str, Bound]
) -> tuple[list[int], float | None]:
    """``summarise_front`` on the metrics alone: the front's indices and the normalised
    hypervolume (None without evaluations, 0.0 when none is feasible)."""
    if not metrics:
        return [], None
    rows = list(metrics)
    indices = feasible_front(rows, validate_objectives(objectives), constraints)
    if not indices:
        return [], 0.0
    return indices, _normalised_hv(rows, indices, objectives)


def _normalised_hv(
    metrics: list[dict[str, float]], indices: list[int], objectives: dict[str, str]
) -> float:
    names = list(objectives)
    values = np.array([[m[n] for n in names] for m in metrics], dtype=float)
    # Every objective turned into minimisation, then scaled to [0, 1] (0 the best); one
    # that all share stays 0 for either sense (a maximised one was 1, the worst: a
    # single evaluation's front had no volume, research audit 31 L4).
    for j, name in enumerate(names):
        if objectives[name] == "max":
            values[:, j] = -values[:, j]
    low, high = values.min(0), values.max(0)
    scaled = (values - low) / np.where(high > low, high - low, 1.0)
    reference = np.full(len(names), REFERENCE)
    # at most 1 (a point best in everything): the volume and REFERENCE ** m, computed
    # apart, differ in the last bit from 4 objectives (1.0000000000000002: audit 33)
    return min(1.0, float(_volume(scaled[indices], reference) / REFERENCE ** len(names)))


def _volume(points: np.ndarray, reference: np.ndarray) -> float:
    """The hypervolume of ``points`` (minimised) below ``reference``: exact where that is
    cheap, else estimated on ``SAMPLES`` fixed samples (search review 32: the exact one
    took 16 s for 200 points in 5 objectives, after each evaluation)."""
    count, objectives = points.shape
    senses = ["min"] * objectives
    if objectives <= 2 or exact_hypervolume_cost(count, objectives) <= EXACT_COST:
        return hypervolume(points, senses, reference)
    return sampled_hypervolume(points, senses, reference, samples=SAMPLES)


#: Most ``search.exact_hypervolume_cost`` computed exactly (about 0.3 s): a front of about
#: 700 points in 3 objectives, 90 in 4, 30 in 5; a larger one is estimated.
EXACT_COST = 5e6
#: Points an estimated hypervolume is counted on (the same ones each time): within about
#: 0.01 of the exact one (three standard errors of the box beyond the front's best corner).
SAMPLES = 20_000


#: Where the normalised hypervolume's reference lies in each scaled objective: a tenth of
#: the box beyond its worst corner, so that a front's extreme points count (at the corner
#: itself, a front of two, each the best in one of two objectives, had none).
REFERENCE = 1.1


def _no_feasible_message(evaluations: Sequence[Evaluation], constraints: dict[str, Bound]) -> str:
    closest = min(evaluations, key=lambda e: violation(e.metrics, constraints))
    never_met = [
        name
        for name, bound in constraints.items()
        if not any(_within(e.metrics[name], bound) for e in evaluations)
    ]
    values = ", ".join(f"{n}={closest.metrics[n]:.4g}" for n in constraints)
    unmet = (
        ", ".join(f"{n} {_describe(constraints[n])}" for n in never_met)
        or "all constraints together"
    )
    return f"no measured sub-network met {unmet}; closest: {closest.subnet_id} ({values})"


def _within(value: float, bound: Bound) -> bool:
    return (bound.min is None or value >= bound.min) and (bound.max is None or value <= bound.max)


def _describe(bound: Bound) -> str:
    parts = []
    if bound.min is not None:
        parts.append(f">= {bound.min:g}")
    if bound.max is not None:
        parts.append(f"<= {bound.max:g}")
    return " and ".join(parts)
