"""The Pareto front of a job's measured evaluations, and what to tell a user about it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search import Bound, feasible_front, hypervolume, validate_objectives, violation

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
    return float(_volume(scaled[indices], reference) / REFERENCE ** len(names))


def _volume(points: np.ndarray, reference: np.ndarray) -> float:
    """The hypervolume of ``points`` (minimised) below ``reference``: exact where that is
    cheap, else estimated (``SAMPLES``). The exact one grows as points^(objectives-1):
    16 s for 200 points in 5 objectives on this 2-core machine, after each evaluation
    (search review 32)."""
    count, objectives = points.shape
    if objectives <= 2 or count ** (objectives - 1) * math.log2(max(count, 2)) <= EXACT_COST:
        return hypervolume(points, ["min"] * objectives, reference)
    left = np.random.default_rng(0).uniform(0.0, reference, size=(SAMPLES, objectives))
    for chunk in np.array_split(points, math.ceil(count / 64)):  # a sample dominated once
        hit = np.any(np.all(chunk[None, :, :] <= left[:, None, :], axis=2), axis=1)
        left = left[~hit]
    return float((1.0 - len(left) / SAMPLES) * np.prod(reference))


#: Most points^(objectives-1) x log2(points) computed exactly (about 0.3 s): a front of
#: about 700 points in 3 objectives, 120 in 4, 35 in 5; a larger one is estimated.
EXACT_COST = 5e6
#: Points an estimated hypervolume is counted on (the same ones each time): within about
#: 0.01 of the exact one (three standard errors).
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
