"""Search quality against the true Pareto front of NAS-Bench-201 (accuracy vs device latency).

For every (device, strategy, budget, seed) the strategy runs its ask/tell loop against a table
lookup; the hypervolume of what it measured is divided by the hypervolume of the true front
(all 15,625 architectures) for two reference points:

- ``worst``: (min accuracy, max latency), the corner of the whole table;
- ``tight``: (90th-percentile accuracy, median latency), which only credits the accurate and
  fast region and so separates strategies far better.

Overhead is wall time minus the time spent inside the lookups, per evaluation. Every run
asserts that no architecture was measured twice. Pure numpy + the search library (no torch)::

    .venv/bin/python benchmarks/search_quality.py --seeds 10 --out BENCHMARKS.search.md
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from search import SearchSpace, Strategy, create_strategy, hypervolume  # noqa: E402
from search.base import register_strategy  # noqa: E402
from search.space import Arch  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "bench-data" / "nb201" / "nb201_acc_latency_merged.csv"
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
# GPU, CPU, phones, edge board, FPGA, ASIC.
DEFAULT_DEVICES = (
    "1080ti_1",
    "gold_6226",
    "pixel3",
    "samsung_a50",
    "raspi4",
    "fpga",
    "eyeriss",
)
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = tuple(f"e{i}" for i in range(6))
OBJECTIVES = {"accuracy": "max", "latency_ms": "min"}
SENSES = ("max", "min")


@dataclass(frozen=True)
class Table:
    """Every NB201 architecture as op indices (N, 6), its accuracy and its latency per device."""

    ops: np.ndarray
    accuracy: np.ndarray
    latency: dict[str, np.ndarray]


def parse_arch_str(arch_str: str) -> tuple[int, ...]:
    """``|op~0|+|op~0|op~1|+...`` -> op indices of edges e0..e5 in string order."""
    tokens = [t for t in arch_str.replace("+", "|").split("|") if t]
    return tuple(OPS.index(token.split("~")[0]) for token in tokens)


def load_table(path: Path, dataset: str, devices: Sequence[str]) -> Table:
    """Read the merged CSV (the one place that knows its layout; swap it for a recorded one)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [d for d in devices if f"lat_ms_{d}" not in rows[0]]
    if missing:
        raise SystemExit(f"unknown device(s) {missing}; columns: {list(rows[0])}")
    return Table(
        ops=np.array([parse_arch_str(r["arch_str"]) for r in rows], dtype=int),
        accuracy=np.array([float(r[f"acc_{dataset}_test"]) for r in rows]),
        latency={d: np.array([float(r[f"lat_ms_{d}"]) for r in rows]) for d in devices},
    )


def nb201_space() -> SearchSpace:
    return SearchSpace({edge: list(OPS) for edge in EDGES})


def references(accuracy: np.ndarray, latency: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "worst": np.array([accuracy.min(), latency.max()]),
        "tight": np.array([np.percentile(accuracy, 90), np.median(latency)]),
    }


@dataclass(frozen=True)
class Run:
    device: str
    strategy: str
    budget: int
    seed: int
    hv: dict[str, float]  # reference name -> found / true hypervolume
    overhead_ms: float  # per evaluation
    duplicates: int


def run_one(table: Table, device: str, strategy: str, budget: int, seed: int, batch: int) -> Run:
    """One ask/tell loop against the table; only the lookups count as evaluation time."""
    space = nb201_space()
    row_of = {tuple(int(i) for i in ops): row for row, ops in enumerate(table.ops)}
    latency = table.latency[device]
    spent = 0.0

    def evaluate(arch: dict) -> dict[str, float]:
        nonlocal spent
        start = time.perf_counter()
        row = row_of[space.to_indices(arch)]
        metrics = {"accuracy": float(table.accuracy[row]), "latency_ms": float(latency[row])}
        spent += time.perf_counter() - start
        return metrics

    keys, found, wall = _search(space, strategy, budget, seed, batch, evaluate)
    duplicates = len(keys) - len(set(keys))
    assert duplicates == 0, f"{strategy} measured {duplicates} architectures twice"
    overhead_ms = 1000 * (wall - spent) / len(keys)
    hv = {
        name: hypervolume(found, SENSES, ref) / hypervolume(_front(table, device), SENSES, ref)
        for name, ref in references(table.accuracy, latency).items()
    }
    return Run(device, strategy, budget, seed, hv, overhead_ms, duplicates)


def _search(
    space: SearchSpace,
    strategy: str,
    budget: int,
    seed: int,
    batch: int,
    evaluate: Callable[[dict], dict[str, float]],
) -> tuple[list[str], np.ndarray, float]:
    """Keys and (accuracy, latency) points in measurement order, and the loop's wall time."""
    start = time.perf_counter()
    searcher = create_strategy(
        strategy, space=space, objectives=OBJECTIVES, seed=seed, budget=budget
    )
    keys: list[str] = []
    points: list[tuple[float, float]] = []
    while proposals := searcher.ask(batch):
        for arch in proposals:
            metrics = evaluate(arch)
            searcher.tell(arch, metrics)
            keys.append(space.key(arch))
            points.append((metrics["accuracy"], metrics["latency_ms"]))
    return keys, np.array(points), time.perf_counter() - start


_FRONTS: dict[tuple[int, str], np.ndarray] = {}


def _front(table: Table, device: str) -> np.ndarray:
    """All points of the table (the 2-D sweep ignores the dominated ones), cached."""
    key = (id(table), device)
    if key not in _FRONTS:
        _FRONTS[key] = np.column_stack([table.accuracy, table.latency[device]])
    return _FRONTS[key]


# ---- DyNAS-T's LINAS, re-implemented as a baseline (benchmark only, not a product strategy) --


@register_strategy("dynast-linas")
class DynastLinas(Strategy):
    """DyNAS-T 1.6.0's LINAS loop, rebuilt from its description and defaults for comparison.

    Measure a population of 50 (the first one uniform); fit, per objective, a Ridge and an
    RBF-SVR on one-hot features, keeping the one with the better 5-fold CV mean absolute
    percentage error (labels scaled by a power of ten, as DyNAS-T does); run NSGA-II with
    population 50 for 5,000 predictor evaluations (100 generations, DyNAS-T's smallest inner
    budget) from a random start (DyNAS-T's warm-start branch never triggers); the final
    NSGA-II population is the next one to measure.
    Differences, all in DyNAS-T's favour or neutral: hyperparameter grids of 10 values
    (DyNAS-T: 100 each, much slower for the same ranges); uniform crossover and random-reset
    mutation instead of SBX / polynomial mutation on integer-coded categories; architectures
    already measured are replaced by uniform unseen ones (DyNAS-T would measure them again).
    """

    population = 50
    generations = 100

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._queue: list[Arch] = []
        self._cards = np.array([len(self.space.choices(n)) for n in self.space.names])

    def _propose(self, n: int) -> list[Arch]:
        taken: set[str] = set()
        out: list[Arch] = []
        while len(out) < n:
            if not self._queue:
                self._queue = self._next_population(taken)
                if not self._queue:
                    break
            arch = self._queue.pop(0)
            key = self.space.key(arch)
            if not (self._is_seen(key) or key in taken):
                taken.add(key)
                out.append(arch)
        return out

    def _next_population(self, taken: set[str]) -> list[Arch]:
        taken = set(taken)  # a copy: the caller still has to accept what is queued here
        if self.n_told < self.population:
            return self._sample_unseen(self.population - self.n_told - len(self._pending), taken)
        predictors = [self._fit(name) for name in OBJECTIVES]
        final = self._nsga2(predictors)
        archs = [self.space.from_indices(row.tolist()) for row in final]
        fresh = [a for a in archs if not self._is_seen(self.space.key(a))]
        return fresh + self._sample_unseen(self.population - len(fresh), taken)

    def _one_hot(self, indices: np.ndarray) -> np.ndarray:
        offsets = np.concatenate([[0], np.cumsum(self._cards)[:-1]])
        out = np.zeros((len(indices), int(self._cards.sum())))
        np.put_along_axis(out, indices + offsets, 1.0, axis=1)
        return out

    def _fit(self, name: str) -> Callable[[np.ndarray], np.ndarray]:
        from sklearn.linear_model import Ridge
        from sklearn.model_selection import GridSearchCV
        from sklearn.svm import SVR

        x = self._one_hot(np.array([self.space.to_indices(a) for a, _ in self._history]))
        y = np.array([m[name] for _, m in self._history])
        scale = 10 ** (np.floor(np.log10(np.abs(y).max())) - 1.0) if np.abs(y).max() > 0 else 1.0
        searches = [
            GridSearchCV(Ridge(), {"alpha": np.geomspace(0.1, 10, 10)}, cv=5, scoring=_MAPE),
            GridSearchCV(
                SVR(kernel="rbf", gamma="auto", epsilon=0.0),
                {"C": np.geomspace(1, 100, 10)},
                cv=5,
                scoring=_MAPE,
            ),
        ]
        best = max((s.fit(x, y / scale) for s in searches), key=lambda s: s.best_score_)
        return lambda indices: np.asarray(best.predict(self._one_hot(indices)) * scale)

    def _nsga2(self, predictors: list[Callable[[np.ndarray], np.ndarray]]) -> np.ndarray:
        signs = np.array([-1.0 if sense == "max" else 1.0 for sense in OBJECTIVES.values()])
        rng = self._rng
        population = rng.integers(self._cards, size=(self.population, len(self._cards)))
        for _ in range(self.generations):
            # Binary tournaments on survival order (fronts first, then crowding distance).
            pairs = rng.integers(len(population), size=(self.population, 2, 2))
            parents = population[pairs.min(axis=2)]
            mask = rng.random(parents[:, 0].shape) < 0.5
            children = np.where(mask, parents[:, 0], parents[:, 1])
            mutate = rng.random(children.shape) < 1.0 / len(self._cards)
            children = np.where(mutate, rng.integers(self._cards, size=children.shape), children)
            merged = np.unique(np.vstack([population, children]), axis=0)
            scores = np.column_stack([p(merged) for p in predictors]) * signs
            population = merged[_nsga2_survivors(scores, self.population)]
        return population


_MAPE = "neg_mean_absolute_percentage_error"


def _nsga2_survivors(scores: np.ndarray, size: int) -> np.ndarray:
    """Indices of the best ``size`` rows: non-dominated fronts, then crowding distance."""
    remaining = np.arange(len(scores))
    chosen: list[int] = []
    while len(chosen) < size and len(remaining):
        sub = scores[remaining]
        dominated = np.array(
            [np.any(np.all(sub <= p, axis=1) & np.any(sub < p, axis=1)) for p in sub]
        )
        front = remaining[~dominated]
        if len(chosen) + len(front) > size:
            front = front[np.argsort(-_crowding(scores[front]))][: size - len(chosen)]
        chosen += front.tolist()
        remaining = remaining[dominated]
    return np.array(chosen)


def _crowding(points: np.ndarray) -> np.ndarray:
    distance = np.zeros(len(points))
    for column in points.T:
        order = np.argsort(column)
        span = column[order[-1]] - column[order[0]] or 1.0
        distance[order[[0, -1]]] = np.inf
        distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return distance


# ---- driver ------------------------------------------------------------------------------

_TABLE: Table | None = None


def _init_worker(path: Path, dataset: str, devices: Sequence[str]) -> None:
    global _TABLE
    _TABLE = load_table(path, dataset, devices)


def _run_task(task: tuple[str, str, int, int, int]) -> Run:
    assert _TABLE is not None
    return run_one(_TABLE, *task)


def run_all(args: argparse.Namespace) -> list[Run]:
    tasks = [
        (device, strategy, budget, seed, args.batch)
        for device in args.devices
        for strategy in args.strategies
        for budget in args.budgets
        for seed in range(args.seeds)
    ]
    init = (args.data, args.dataset, args.devices)
    if args.jobs == 1:
        _init_worker(*init)
        return [_progress(i, len(tasks), _run_task(t)) for i, t in enumerate(tasks)]
    with ProcessPoolExecutor(args.jobs, initializer=_init_worker, initargs=init) as pool:
        results = pool.map(_run_task, tasks, chunksize=4)
        return [_progress(i, len(tasks), r) for i, r in enumerate(results)]


def _progress(i: int, total: int, run: Run) -> Run:
    if (i + 1) % 50 == 0 or i + 1 == total:
        print(f"{i + 1}/{total} runs", file=sys.stderr, flush=True)
    return run


def report(runs: list[Run], args: argparse.Namespace, elapsed: float) -> str:
    lines = [
        f"Dataset `{args.dataset}`, devices {', '.join(args.devices)}; "
        f"{args.seeds} seeds, ask batch {args.batch}; {len(runs)} runs in {elapsed:.0f} s "
        f"on {_machine()}.",
        "",
        "| strategy | budget | HV ratio tight (mean ± std) | tight min | "
        "HV ratio worst (mean ± std) | overhead ms/eval | duplicates |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for strategy in args.strategies:
        for budget in args.budgets:
            group = [r for r in runs if r.strategy == strategy and r.budget == budget]
            tight = np.array([r.hv["tight"] for r in group])
            worst = np.array([r.hv["worst"] for r in group])
            overhead = np.mean([r.overhead_ms for r in group])
            dups = sum(r.duplicates for r in group)
            lines.append(
                f"| {strategy} | {budget} | {tight.mean():.3f} ± {tight.std():.3f} | "
                f"{tight.min():.3f} | {worst.mean():.4f} ± {worst.std():.4f} | "
                f"{overhead:.1f} | {dups} |"
            )
    lines += ["", *_per_device(runs, args)]
    return "\n".join(lines) + "\n"


def _per_device(runs: list[Run], args: argparse.Namespace) -> list[str]:
    budget = 100 if 100 in args.budgets else args.budgets[0]
    lines = [
        f"Tight-reference HV ratio per device at budget {budget} (mean over seeds):",
        "",
        "| strategy | " + " | ".join(args.devices) + " |",
        "|---|" + "---:|" * len(args.devices),
    ]
    for strategy in args.strategies:
        cells = []
        for device in args.devices:
            group = [
                r.hv["tight"]
                for r in runs
                if (r.strategy, r.budget, r.device) == (strategy, budget, device)
            ]
            cells.append(f"{np.mean(group):.3f}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({model})"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--dataset", choices=DATASETS, default="cifar10")
    parser.add_argument("--devices", nargs="+", default=list(DEFAULT_DEVICES))
    parser.add_argument("--budgets", nargs="+", type=int, default=[50, 100, 200])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--strategies", nargs="+", default=["random", "nsga2", "tpe", "linas", "dynast-linas"]
    )
    parser.add_argument(
        "--batch", type=int, default=1, help="proposals per ask (the job runner asks 1)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    runs = run_all(args)
    text = report(runs, args, time.perf_counter() - start)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
