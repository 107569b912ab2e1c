"""Search quality against the true Pareto front of NAS-Bench-201 (accuracy vs device latency).

For every (device, strategy, budget, seed) the strategy runs its ask/tell loop through the
protocol a user's job uses: the recorded supernet ``nb201-<dataset>`` (models/recorded.py), its
search space (``SearchSpace(supernet.space(), canonical=..., encode=...)`` as in
workers/runner.py), the recorded device profile ``nb201-<device>`` and
``workers.evaluator.SubnetEvaluator`` for every measurement. The hypervolume of what it
measured is divided by the hypervolume of the true front (all 15,625 rows of the supernet's
table, read only to score) for two reference points:

- ``worst``: (min accuracy, max latency), the corner of the whole table;
- ``tight``: (90th-percentile accuracy, median latency), which only credits the accurate and
  fast region and so separates strategies far better.

Overhead is wall time minus the time spent inside the lookups, per evaluation. Every run
asserts that no architecture was measured twice::

    .venv/bin/python benchmarks/search_quality.py --seeds 10 --out BENCHMARKS.search.md
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from hardware_profiles import get_profile  # noqa: E402
from models.recorded import NB201Supernet  # noqa: E402
from search import SearchSpace, Strategy, create_strategy, hypervolume  # noqa: E402
from search.base import register_strategy  # noqa: E402
from search.linas import LinasStrategy  # noqa: E402
from search.space import Arch  # noqa: E402
from workers.evaluator import SubnetEvaluator  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "bench-data" / "nb201" / "nb201_acc_latency_merged.csv"
DATASETS = ("cifar10", "cifar100", "imagenet16-120")
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
OBJECTIVES = {"accuracy": "max", "latency_ms": "min"}
SENSES = ("max", "min")


@dataclass(frozen=True)
class Table:
    """The recorded supernet, and every row's accuracy and latency per device (to score)."""

    supernet: NB201Supernet
    accuracy: np.ndarray
    latency: dict[str, np.ndarray]


def profile_id(device: str) -> str:
    """Table column suffix (``1080ti_1``) -> recorded profile id (``nb201-1080ti-1``)."""
    return "nb201-" + device.replace("_", "-")


def load_table(path: Path, dataset: str, devices: Sequence[str]) -> Table:
    """The recorded supernet on ``path`` (``.csv`` or ``.csv.gz``) and its scoring columns."""
    supernet = NB201Supernet(dataset=dataset, table=_gzipped(path))
    rows = list(supernet.rows.values())
    columns = {d: get_profile(profile_id(d)).recorded_column for d in devices}
    missing = [d for d, c in columns.items() if c not in rows[0]]
    if missing:
        raise SystemExit(f"no latency column for device(s) {missing}")
    return Table(
        supernet=supernet,
        accuracy=np.array([r[supernet.accuracy_column] for r in rows]),
        latency={d: np.array([r[str(c)] for r in rows]) for d, c in columns.items()},
    )


def _gzipped(path: Path) -> Path:
    """The recorded supernet reads gzipped tables: compress a plain CSV into a temp file."""
    if path.suffix == ".gz":
        return path
    stat = path.stat()
    target = Path(tempfile.gettempdir()) / f"hwnas-{path.stem}-{stat.st_size}-{stat.st_mtime_ns}.gz"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.part")
        with open(path, "rb") as source, gzip.open(partial, "wb", compresslevel=1) as sink:
            shutil.copyfileobj(source, sink)
        partial.replace(target)  # atomic: parallel workers never read a half-written file
    return target


def supernet_space(supernet: NB201Supernet) -> SearchSpace:
    """The space a job on this supernet searches (as workers/runner.py builds it)."""
    return SearchSpace(supernet.space(), canonical=supernet.canonical, encode=supernet.encode)


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
    # metric -> last hyperparameter selection of a predictor-guided strategy (LOO RMSE, tau)
    predictor: dict[str, dict[str, float]]


def run_one(
    table: Table,
    device: str,
    strategy: str,
    budget: int,
    seed: int,
    batch: int,
    hints: Sequence[tuple[dict, dict[str, float]]] = (),
) -> Run:
    """One ask/tell loop; only the evaluator's calls count as evaluation time. ``hints``:
    (arch, metrics) given to ``Strategy.hint`` before the first ask (as a job is given other
    devices' measurements)."""
    space = supernet_space(table.supernet)
    evaluator = SubnetEvaluator(table.supernet, get_profile(profile_id(device)))
    latency = table.latency[device]
    spent = 0.0

    def evaluate(arch: dict) -> dict[str, float]:
        nonlocal spent
        start = time.perf_counter()
        metrics = evaluator.measure(arch).metrics
        spent += time.perf_counter() - start
        return {name: metrics[name] for name in OBJECTIVES}

    keys, found, wall, predictor = _search(space, strategy, budget, seed, batch, evaluate, hints)
    duplicates = len(keys) - len(set(keys))
    assert duplicates == 0, f"{strategy} measured {duplicates} architectures twice"
    overhead_ms = 1000 * (wall - spent) / len(keys)
    hv = {
        name: hypervolume(found, SENSES, ref) / hypervolume(_front(table, device), SENSES, ref)
        for name, ref in references(table.accuracy, latency).items()
    }
    return Run(device, strategy, budget, seed, hv, overhead_ms, duplicates, predictor)


def _search(
    space: SearchSpace,
    strategy: str,
    budget: int,
    seed: int,
    batch: int,
    evaluate: Callable[[dict], dict[str, float]],
    hints: Sequence[tuple[dict, dict[str, float]]] = (),
) -> tuple[list[str], np.ndarray, float, dict[str, dict[str, float]]]:
    """Keys and (accuracy, latency) points in measurement order, the loop's wall time, and
    the strategy's last predictor selection per metric (empty for unguided strategies)."""
    start = time.perf_counter()
    searcher = create_strategy(
        strategy, space=space, objectives=OBJECTIVES, seed=seed, budget=budget
    )
    for arch, metrics in hints:
        searcher.hint(arch, metrics)
    keys: list[str] = []
    points: list[tuple[float, float]] = []
    while proposals := searcher.ask(batch):
        for arch in proposals:
            metrics = evaluate(arch)
            searcher.tell(arch, metrics)
            keys.append(space.key(arch))
            points.append((metrics["accuracy"], metrics["latency_ms"]))
    wall = time.perf_counter() - start
    predictor = {
        entry["metric"]: entry for entry in getattr(searcher, "predictor_report", [])
    }  # the last selection per metric wins
    return keys, np.array(points), wall, predictor


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


@register_strategy("linas-uniform")
class LinasUniform(LinasStrategy):
    """``linas`` with ``level_power=1``: epsilon levels uniform over the front (comparison)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs, level_power=1.0)  # type: ignore[arg-type]


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
R = TypeVar("R")


def _init_worker(path: Path, dataset: str, devices: Sequence[str]) -> None:
    global _TABLE
    _TABLE = load_table(path, dataset, devices)


def _apply(item: tuple[Callable[..., R], tuple[Any, ...]]) -> R:
    assert _TABLE is not None
    run, task = item
    return run(_TABLE, *task)


def on_table(
    args: argparse.Namespace, run: Callable[..., R], tasks: Sequence[tuple[Any, ...]]
) -> Iterator[R]:
    """``run(table, *task)`` for each task, in order, on the table of ``args`` (``--data``,
    ``--dataset``, ``--devices``), in ``args.jobs`` processes (``run``: a module's own
    function, so that it pickles)."""
    init = (args.data, args.dataset, args.devices)
    items = [(run, tuple(task)) for task in tasks]
    if args.jobs == 1:
        _init_worker(*init)
        yield from map(_apply, items)
        return
    with ProcessPoolExecutor(args.jobs, initializer=_init_worker, initargs=init) as pool:
        yield from pool.map(_apply, items, chunksize=4)


def run_all(args: argparse.Namespace) -> list[Run]:
    tasks = [
        (device, strategy, budget, seed, args.batch)
        for device in args.devices
        for strategy in args.strategies
        for budget in args.budgets
        for seed in range(args.seeds)
    ]
    runs = on_table(args, run_one, tasks)
    return [_progress(i, len(tasks), run) for i, run in enumerate(runs)]


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
    lines += ["", *_per_device(runs, args), "", *_predictors(runs, args)]
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


def _predictors(runs: list[Run], args: argparse.Namespace) -> list[str]:
    """Leave-one-out error of the last predictor selection of each guided run, averaged."""
    lines = [
        "Predictor validation (last hyperparameter selection of each run; leave-one-out on the "
        "told results; RMSE on the predictor's transformed scale, unitless):",
        "",
        "| strategy | budget | metric | results | LOO Kendall tau | LOO RMSE | transform |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for strategy in args.strategies:
        for budget in args.budgets:
            group = [r for r in runs if (r.strategy, r.budget) == (strategy, budget)]
            for metric in OBJECTIVES:
                entries = [r.predictor[metric] for r in group if metric in r.predictor]
                if not entries:
                    continue
                transforms = sorted({str(e["transform"]) for e in entries})
                lines.append(
                    f"| {strategy} | {budget} | {metric} | "
                    f"{np.mean([e['n_train'] for e in entries]):.0f} | "
                    f"{np.mean([e['loo_kendall_tau'] for e in entries]):.3f} | "
                    f"{np.mean([e['loo_rmse'] for e in entries]):.3f} | {', '.join(transforms)} |"
                )
    return lines if len(lines) > 4 else []


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({model})"


def protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The protocol's options (table, dataset, devices, budgets, seeds), shared by the
    benchmarks that score on it."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--dataset", type=str.lower, choices=DATASETS, default="cifar10")
    parser.add_argument("--devices", nargs="+", default=list(DEFAULT_DEVICES))
    parser.add_argument("--budgets", nargs="+", type=int, default=[50, 100, 200])
    parser.add_argument("--seeds", type=int, default=10)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol_arguments(parser)
    parser.add_argument(
        "--strategies", nargs="+", default=["random", "nsga2", "tpe", "linas", "dynast-linas"]
    )
    parser.add_argument(
        "--batch", type=int, default=1, help="proposals per ask (the job runner asks 1)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    return parser.parse_args(argv)


def run_and_report(
    args: argparse.Namespace,
    run_all: Callable[[argparse.Namespace], list[R]],
    report: Callable[[list[R], argparse.Namespace, float], str],
) -> None:
    """Run a benchmark's tasks, print its Markdown report, and write it to ``--out`` too
    (its folder made first: a missing one failed the write after a 21-minute run, and a
    missing ``--data`` file failed with a bare path: research audit 31)."""
    data = getattr(args, "data", None)
    if isinstance(data, Path) and not data.is_file():
        raise SystemExit(
            f"--data {data}: no such file; pass --data with the path of "
            "nb201_acc_latency_merged.csv (shared/bench-data/nb201/, see its README)"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    text = report(run_all(args), args, time.perf_counter() - start)
    print(text)
    if args.out:
        args.out.write_text(text)


def main(argv: Sequence[str] | None = None) -> None:
    run_and_report(parse_args(argv), run_all, report)


if __name__ == "__main__":
    main()
