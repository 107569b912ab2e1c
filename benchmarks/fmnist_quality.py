"""Search quality on the built-in supernet: accuracy (weight-shared, measured) vs MACs.

NAS-Bench-201 (``search_quality.py``) has a true front; ``fmnist-ofa-cnn`` (~3e10 gene
vectors) has none, so every strategy is scored against the best front known to this run:
the union of everything any run measured, plus a uniform reference sample. Objectives are
accuracy (max) and MACs (min): both deterministic (the weights, the 2,000 validation images
and the BatchNorm recalibration in a fixed order give a sub-network one accuracy), so the
comparison is free of timing noise; a latency objective would rank by the same cost plus
the machine's noise.

Each strategy runs its ask/tell loop on the space ``workers/runner.py`` builds
(``SearchSpace(supernet.space(), canonical=..., encode=...)``); ``<name>+anchors`` is
``<name>`` given the supernet's anchors as ``initial`` (``Supernet.anchors``: the smallest
and the largest network, proposed first and counted in the budget), as a job of 10 or more
evaluations without constraints gives them; a proposal's accuracy is ``supernet.evaluate``
(what a job's measurement evaluates) and its MACs ``supernet.complexity``. Accuracies are
kept in ``--cache`` (SQLite, keyed by the sub-network's encoding), so a network another run
or an earlier invocation evaluated is not evaluated again; the numbers are the same either
way. A variant defined here:

- ``linas-features``: ``linas`` given log MACs and log params as free features (the
  ``features`` hook; jobs do not pass them).

HV ratio = hypervolume of a run's first ``budget`` points / hypervolume of the best known
front, for two reference points: ``worst`` = (lowest accuracy measured, the largest
network's MACs); ``tight`` = (90th-percentile accuracy, median MACs of the uniform sample)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fmnist_quality.py --seeds 5 --budgets 50 100
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.fmnist_cnn import largest_arch  # noqa: E402
from models.registry import get_supernet  # noqa: E402
from search import SearchSpace, create_strategy, hypervolume  # noqa: E402
from search.space import Arch  # noqa: E402

SUPERNET = "fmnist-ofa-cnn"
OBJECTIVES = {"accuracy": "max", "macs": "min"}
SENSES = ("max", "min")
BASES = ("random", "nsga2", "tpe", "linas")
STRATEGIES = (*BASES, *(f"{name}+anchors" for name in BASES))
ANCHORED = "+anchors"
#: Seed of the uniform reference sample (not one of the runs' seeds).
REFERENCE_SEED = 12_345

Point = tuple[float, float, str]  # accuracy, MACs, encoding


class Measurer:
    """Accuracy (cached by encoding) and MACs of sub-networks of the built-in supernet."""

    def __init__(self, cache: Path) -> None:
        torch.set_num_threads(1)  # two processes on two cores: more threads oversubscribe
        self.supernet = get_supernet(SUPERNET)
        self.space = SearchSpace(
            self.supernet.space(), canonical=self.supernet.canonical, encode=self.supernet.encode
        )
        self.db = sqlite3.connect(cache, timeout=120)
        self.db.execute("create table if not exists accuracy (key text primary key, value real)")
        self.evaluated = 0

    def __call__(self, arch: Arch) -> Point:
        key = self.space.key(arch)
        row = self.db.execute("select value from accuracy where key = ?", (key,)).fetchone()
        if row is None:
            value = self.supernet.evaluate(arch)["accuracy"]
            self.evaluated += 1
            with self.db:
                self.db.execute("insert or replace into accuracy values (?, ?)", (key, value))
        else:
            value = row[0]
        return float(value), float(self.supernet.complexity(arch).macs), key

    def features(self, arch: Arch) -> list[float]:
        c = self.supernet.complexity(arch)
        return [math.log(c.macs), math.log(c.params)]


_MEASURER: Measurer | None = None


def _init(cache: Path) -> None:
    global _MEASURER
    _MEASURER = Measurer(cache)


def run_one(task: tuple[str, int, int]) -> dict[str, Any]:
    """One ask/tell loop of ``budget`` evaluations; every point in order."""
    strategy_name, seed, budget = task
    assert _MEASURER is not None
    measure = _MEASURER
    options: dict[str, Any] = {}
    name = strategy_name.removesuffix(ANCHORED)
    if name != strategy_name:
        options["initial"] = measure.supernet.anchors()
    if name == "linas-features":
        name, options["features"] = "linas", measure.features
    strategy = create_strategy(
        name, space=measure.space, objectives=OBJECTIVES, seed=seed, budget=budget, **options
    )
    points: list[Point] = []
    start = time.perf_counter()
    evaluated_before = measure.evaluated
    while proposals := strategy.ask(1):
        for arch in proposals:
            points.append(measure(arch))
            strategy.tell(arch, dict(zip(OBJECTIVES, points[-1][:2], strict=True)))
    keys = [p[2] for p in points]
    assert len(set(keys)) == len(keys), f"{strategy_name} measured a network twice"
    return {
        "strategy": strategy_name,
        "seed": seed,
        "points": points,
        "seconds": time.perf_counter() - start,
        "evaluated": measure.evaluated - evaluated_before,
    }


def reference_sample(n: int) -> list[Arch]:
    rng = np.random.default_rng(REFERENCE_SEED)
    assert _MEASURER is not None
    space = _MEASURER.space
    return [
        space.from_indices([int(rng.integers(len(space.choices(g)))) for g in space.names])
        for _ in range(n)
    ]


def run_all(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[Point]]:
    _init(args.cache)
    sample = [_MEASURER(arch) for arch in reference_sample(args.reference)]  # type: ignore[misc]
    tasks = [(s, seed, max(args.budgets)) for seed in range(args.seeds) for s in args.strategies]
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(args.cache,)) as pool:
        for i, run in enumerate(pool.map(run_one, tasks), 1):
            print(
                f"[{i}/{len(tasks)}] {run['strategy']} seed {run['seed']}: "
                f"{run['seconds']:.0f} s, {run['evaluated']} evaluated",
                file=sys.stderr,
                flush=True,
            )
            runs.append(run)
    return runs, sample


def report(
    runs: list[dict[str, Any]], sample: list[Point], args: argparse.Namespace, elapsed: float
) -> str:
    every = np.array([p[:2] for run in runs for p in run["points"]] + [p[:2] for p in sample])
    uniform = np.array([p[:2] for p in sample])
    largest = _MEASURER(largest_arch()) if _MEASURER else None  # type: ignore[misc]
    references = {
        "worst": (float(every[:, 0].min()), largest[1] if largest else float(every[:, 1].max())),
        "tight": (float(np.percentile(uniform[:, 0], 90)), float(np.median(uniform[:, 1]))),
    }
    best = {name: hypervolume(every, SENSES, ref) for name, ref in references.items()}
    lines = [
        f"Supernet `{SUPERNET}`, objectives accuracy (max) x MACs (min), {args.seeds} seeds, "
        f"{len(runs)} runs in {elapsed:.0f} s on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}); best known front from "
        f"{len(every)} measured points ({len(sample)} uniform). References: worst = "
        f"({references['worst'][0]:.4f}, {references['worst'][1] / 1e6:.2f} MMACs), tight = "
        f"({references['tight'][0]:.4f}, {references['tight'][1] / 1e6:.2f} MMACs).",
        "",
        "| strategy | budget | HV ratio tight (mean ± std) | tight min | HV ratio worst "
        "(mean ± std) | best accuracy | fewest MMACs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for strategy in args.strategies:
        for budget in args.budgets:
            rows = []
            for run in (r for r in runs if r["strategy"] == strategy):
                found = np.array([p[:2] for p in run["points"][:budget]])
                ratios = [  # in the table's order: tight, then worst
                    hypervolume(found, SENSES, references[n]) / best[n] for n in ("tight", "worst")
                ]
                rows.append([*ratios, found[:, 0].max(), found[:, 1].min() / 1e6])
            table = np.array(rows)
            lines.append(
                f"| {strategy} | {budget} | {table[:, 0].mean():.3f} ± {table[:, 0].std():.3f} | "
                f"{table[:, 0].min():.3f} | {table[:, 1].mean():.3f} ± {table[:, 1].std():.3f} | "
                f"{table[:, 2].mean():.4f} | {table[:, 3].mean():.2f} |"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--reference", type=int, default=200, help="uniform reference sample")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/hwnas-fmnist-accuracy.sqlite"),
        help="accuracy of every sub-network evaluated, by encoding (kept between runs)",
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    runs, sample = run_all(args)
    text = report(runs, sample, args, time.perf_counter() - start)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
