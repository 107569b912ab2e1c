"""The sub-networks a search job measures before any other: its supernet's anchors
(``Supernet.anchors``: by default the smallest and the largest network), screened against
the job's budget and constraints."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from models.base import Supernet
from models.metrics import QUALITY_DIRECTIONS
from search import Bound, SearchSpace, is_feasible
from search.space import Arch

log = logging.getLogger(__name__)


#: The most of a job's budget its anchors may take: a job of fewer than 10 evaluations
#: does not spend two of them on the two ends of the front.
ANCHOR_SHARE = 0.2
#: Said of a job's anchors as its run begins (each one that fails is said after); worded to
#: stay true once they are measured, as the note stays in the job's message (vision audit
#: L6: "to measure first" read as still pending on a finished job).
ANCHORS_SAID = "ahead of the search's proposals (Supernet.anchors)"


def job_anchors(
    supernet: Supernet,
    space: SearchSpace,
    counted: Callable[[Arch], dict[str, float]],
    constraints: dict[str, Bound],
    budget: int,
    latency: Callable[[Sequence[Arch]], NDArray[np.float64]] | None = None,
    quality: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Arch]:
    """The anchors a job of ``budget`` evaluations measures first. Each is left out when
    what is known of it before measuring (``counted``: MACs, params, model size; the
    ``latency`` predictor's estimate, where the job has one; ``quality``: metrics such as
    accuracy that other devices' jobs measured, by sub-network id) breaks a constraint,
    and when a constraint it cannot be checked on bounds it from its own end (an upper
    bound on latency: the costliest; a floor on accuracy: the cheapest; :func:`_at_risk`).
    None when those left would take over ``ANCHOR_SHARE`` of the budget, or when the
    supernet's code fails on them (logged: a head start is no reason to fail the job)."""
    try:
        anchors: dict[str, Arch] = {}
        for arch in supernet.anchors():
            normal = space.normalize(arch)
            anchors.setdefault(space.key(normal), normal)
        known = {
            key: {**_known(supernet, arch, counted, latency), **(quality or {}).get(key, {})}
            for key, arch in anchors.items()
        }
    except Exception as exc:  # any fault of a plugin's code
        log.warning("%s: anchors not used, searching without them: %r", supernet.name, exc)
        return []
    kept = [
        key
        for key, metrics in known.items()
        if is_feasible(metrics, {n: b for n, b in constraints.items() if n in metrics})
    ]
    unchecked = {n: b for n, b in constraints.items() if any(n not in m for m in known.values())}
    at_risk = _at_risk(supernet, known, unchecked)  # the ends of all of them, kept or not
    chosen = [anchors[key] for key in kept if key not in at_risk]
    return chosen if len(chosen) <= budget * ANCHOR_SHARE else []


def _known(
    supernet: Supernet,
    arch: Arch,
    counted: Callable[[Arch], dict[str, float]],
    latency: Callable[[Sequence[Arch]], NDArray[np.float64]] | None,
) -> dict[str, float]:
    """What is known of ``arch`` before measuring it."""
    known = {} if supernet.recorded else dict(counted(arch))
    if latency is not None:
        known["latency_ms"] = float(latency([arch])[0])
    return known


def _grows_with_cost(supernet: Supernet, metric: str) -> bool:
    """Whether ``metric`` is higher on a costlier network: latency is; a quality metric is
    where higher is better (accuracy), not where lower is (loss, error)."""
    if metric in supernet.metrics:
        return QUALITY_DIRECTIONS.get(metric, "max") == "max"
    return True


def _at_risk(
    supernet: Supernet, known: dict[str, dict[str, float]], unchecked: dict[str, Bound]
) -> set[str]:
    """The anchors a constraint that cannot be checked before measuring bounds from their
    own end: the costliest (by MACs) under an upper bound on a metric that grows with cost,
    the cheapest under a lower one (the other way round for a metric that falls with cost),
    unless that metric of it is known (it was checked then). Without MACs to order them by,
    every anchor whose metric is not known."""
    if not unchecked or not known:
        return set()
    if any("macs" not in metrics for metrics in known.values()):
        return {key for key, metrics in known.items() if any(n not in metrics for n in unchecked)}
    by_cost = sorted(known, key=lambda key: known[key]["macs"])  # equal MACs: in given order
    cheapest, costliest = by_cost[0], by_cost[-1]
    out: set[str] = set()
    for name, bound in unchecked.items():
        grows = _grows_with_cost(supernet, name)
        ends = []
        if bound.max is not None:
            ends.append(costliest if grows else cheapest)
        if bound.min is not None:
            ends.append(cheapest if grows else costliest)
        out.update(end for end in ends if name not in known[end])
    return out


def recorded_archs(
    supernet: Supernet, space: SearchSpace, keys: Sequence[str], what: str = "anchor"
) -> list[Arch]:
    """The architectures a job recorded by id in its spec (its anchors, its failed
    measurements), for a resumed run; one that no longer decodes into the space (the plugin
    changed meanwhile) is skipped (logged)."""
    out: list[Arch] = []
    for key in keys:
        try:
            arch = space.normalize(supernet.decode(key))
        except Exception as exc:  # any fault of a plugin's code
            log.warning("%s: recorded %s %s skipped: %r", supernet.name, what, key, exc)
            continue
        out.append(arch)
    return out


def out_of_reach(
    measured: Sequence[Mapping[str, float]], constraints: Mapping[str, Bound]
) -> str | None:
    """A note where every anchor the job measured breaks one side of one constraint (by
    default they are its cheapest and its costliest sub-networks: ``latency_ms <= 5`` met
    by neither is likely met by none), or None. The search goes on: it spent the rest of its
    budget on networks larger still, with nothing said until it ended (audit 30)."""
    for name, bound in constraints.items():
        values = [metrics[name] for metrics in measured if name in metrics]
        if not values or len(values) < len(measured):
            continue
        if bound.max is not None and min(values) > bound.max:
            broken, best = f"{name} <= {bound.max:g}", min(values)
        elif bound.min is not None and max(values) < bound.min:
            broken, best = f"{name} >= {bound.min:g}", max(values)
        else:
            continue
        return (
            f"none of its anchors meets {broken} (the nearest: {best:.4g}): likely no "
            "sub-network does; the search went on after them (while it runs, cancel it to "
            "keep its budget; or loosen the constraint)"
        )
    return None
