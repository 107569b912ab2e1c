"""The time of a job's progress hypervolume (``store.front``), exact and estimated.

A job recomputes its front's normalised hypervolume after each evaluation. The exact
computation (``search.hypervolume``) grows as points^(objectives-1); past
``store.front.EXACT_COST`` the job estimates it (``search.sampled_hypervolume``, 20,000 fixed
samples). For fronts where no point dominates another (points on the unit sphere's positive
part: the worst case), this prints, per (objectives, points): the exact time, the estimate's
time, their ratio, the two values (normalised by the reference's volume) and which one a job
uses. Single process; the times include whatever else the machine was doing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/front_hypervolume.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from search import exact_hypervolume_cost, hypervolume, sampled_hypervolume
from store.front import EXACT_COST, REFERENCE, SAMPLES

CASES = [(3, 200), (3, 800), (4, 100), (4, 200), (5, 30), (5, 100), (5, 200), (6, 50)]


def _front(objectives: int, points: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    front = np.abs(rng.normal(size=(points, objectives)))
    return front / np.linalg.norm(front, axis=1, keepdims=True)


def _timed(call: object) -> tuple[float, float]:
    started = time.perf_counter()
    value = call()  # type: ignore[operator]
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    heads = ["objectives", "points", "exact s", "estimated s", "ratio", "exact", "estimated"]
    print("| " + " | ".join([*heads, "a job uses"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for objectives, points in CASES:
        front = _front(objectives, points, args.seed)
        senses, reference = ["min"] * objectives, np.full(objectives, REFERENCE)
        box = REFERENCE**objectives
        exact_s, exact = _timed(lambda: hypervolume(front, senses, reference))  # noqa: B023
        sampled_s, sampled = _timed(
            lambda: sampled_hypervolume(front, senses, reference, samples=SAMPLES)  # noqa: B023
        )
        used = "exact" if exact_hypervolume_cost(points, objectives) <= EXACT_COST else "estimate"
        print(
            f"| {objectives} | {points} | {exact_s:.3f} | {sampled_s:.3f} | "
            f"{exact_s / sampled_s:.1f} | {exact / box:.4f} | {sampled / box:.4f} | {used} |"
        )


if __name__ == "__main__":
    main()
