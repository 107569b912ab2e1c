"""Where the tight-reference hypervolume is lost on NAS-Bench-201, and how much a better
accuracy predictor could win back (issue 4's diagnosis; prints Markdown tables).

    python benchmarks/nb201_ceiling.py [--data CSV] [--seeds 3] [--budget 100]

1. Per device: the tight box (accuracy above the 90th percentile, latency below the median:
   the tight reference of ``search_quality.py``), how many cells it holds, how many of them
   are on the true front, and how many of a ``linas`` run's measurements land in the box.
2. Kendall tau of accuracy predictions among the top 10 % of cells (where the tight front
   lives): ridge on the features ``linas`` uses (one-hot genes + gene pairs) and on
   "sub-term" features of each cell's computation (every sub-expression of the cell written
   as sums and compositions of its operations, a Weisfeiler-Lehman-like bag), fitted on 100
   random cells and on all 15,625; against a ceiling for any predictor that sees only the
   architecture: isomorphic cells (here: cells whose ``computation`` is the same expression)
   compute the same function but were trained separately, so predicting a cell by the mean
   of its isomorphs (leave-one-out) shows how far the architecture determines the accuracy.
3. What ``linas``'s proposals would reach with better predictors: the tight and worst-corner
   hypervolume ratios of runs whose predictions of accuracy and/or latency are replaced by
   the table's values, exact or with a fixed Gaussian error per cell (a predictor that is
   wrong by the same amount on every ask). An error of 0.13 points of accuracy is about
   the spread between isomorphs, i.e. roughly the best an architecture-only predictor can
   do (part 2); 0.3 points is about the spread of the top 10 % itself.
4. How additive each device's latency is: the mean relative error, among cells within 30 %
   below the median latency (where the tight front lies), of a least-squares fit of latency
   on one-hot genes (a per-edge cost of each operation) fitted on all 15,625 cells.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau
from sklearn.linear_model import RidgeCV

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.search_quality import (  # noqa: E402
    DEFAULT_DATA,
    DEFAULT_DEVICES,
    OBJECTIVES,
    load_table,
    references,
    supernet_space,
)
from models.recorded import NB201_EDGES, NB201_OPS  # noqa: E402
from search import create_strategy, hypervolume, non_dominated  # noqa: E402
from search.linas import LinasStrategy  # noqa: E402

# Edge e<i> = NB201_EDGES[i] = (input node, cell node - 1); node 0 is the cell's input.
_EDGES = [(source, node + 1) for source, node in NB201_EDGES]


def computation(cell: dict[str, str]) -> str | None:
    """The cell's output as an expression of its input ``x`` (None: constant zero).

    ``none`` drops a term, ``skip_connect`` is the identity, other operations wrap their
    input; sums are flattened and sorted. Isomorphic cells give the same string.
    """
    nodes: list[str | None] = ["x", None, None, None]
    for target in (1, 2, 3):
        terms: list[str] = []
        for i, (source, node) in enumerate(_EDGES):
            op, value = cell[f"e{i}"], nodes[source]
            if node != target or op == "none" or value is None:
                continue
            if op != "skip_connect":
                terms.append(f"{op}({value})")
            elif value.startswith("+["):
                terms += _top_level_terms(value)  # an identity edge carries a sum: flatten
            else:
                terms.append(value)
        if terms:
            nodes[target] = terms[0] if len(terms) == 1 else "+[" + "|".join(sorted(terms)) + "]"
    return nodes[3]


def _top_level_terms(total: str) -> list[str]:
    """The terms of a ``+[a|b|...]`` sum, nested brackets kept whole."""
    terms, depth, part = [], 0, ""
    for char in total[2:-1] + "|":
        depth += char in "(["
        depth -= char in ")]"
        if char == "|" and depth == 0:
            terms.append(part)
            part = ""
        else:
            part += char
    return terms


def subterms(expression: str | None) -> set[str]:
    """Every sub-expression of ``computation``'s string (itself included)."""
    if expression is None:
        return set()
    found = {expression}
    if expression.startswith("+["):
        for term in _top_level_terms(expression):
            found |= subterms(term)
    elif "(" in expression:
        found |= subterms(expression[expression.index("(") + 1 : -1])
    return found


def box_table(table, space, devices: list[str], seeds: int, budget: int) -> list[str]:
    rows = list(table.supernet.rows)
    position = {key: i for i, key in enumerate(rows)}
    lines = [
        f"| device | cells in the tight box | of them on the front | linas's {budget} "
        "measurements in the box (per seed) | front cells found |",
        "|---|---|---|---|---|",
    ]
    for device in devices:
        accuracy, latency = table.accuracy, table.latency[device]
        tight = references(accuracy, latency)["tight"]
        box = (accuracy > tight[0]) & (latency < tight[1])
        inside = np.flatnonzero(box)
        front = set(inside[non_dominated(np.c_[accuracy[inside], latency[inside]], ["max", "min"])])
        hits, found = [], []
        for seed in range(seeds):
            strategy = create_strategy(
                "linas", space=space, objectives=OBJECTIVES, seed=seed, budget=budget
            )
            measured = []
            while proposals := strategy.ask(1):
                i = position[table.supernet.encode(proposals[0])]
                strategy.tell(proposals[0], {"accuracy": accuracy[i], "latency_ms": latency[i]})
                measured.append(i)
            hits.append(int(box[measured].sum()))
            found.append(len(front & set(measured)))
        lines.append(
            f"| {device} | {box.sum()} | {len(front)} | {', '.join(map(str, hits))} "
            f"| {', '.join(map(str, found))} |"
        )
    return lines


def predictor_table(table) -> list[str]:
    cells = [table.supernet.decode(key) for key in table.supernet.rows]
    accuracy = table.accuracy
    top = np.flatnonzero(accuracy > np.percentile(accuracy, 90))
    classes: dict[str | None, list[int]] = defaultdict(list)
    expressions = [computation(cell) for cell in cells]
    for i, expression in enumerate(expressions):
        classes[expression].append(i)
    truth, loo = [], []
    for i in top:
        others = [j for j in classes[expressions[i]] if j != i]
        if others:
            truth.append(accuracy[i])
            loo.append(accuracy[others].mean())
    onehot = np.array(
        [
            [float(cell[f"e{e}"] == op) for e in range(len(_EDGES)) for op in NB201_OPS]
            for cell in cells
        ]
    )
    pairs = [
        (a, b)
        for a in range(onehot.shape[1])
        for b in range(a + 1, onehot.shape[1])
        if a // len(NB201_OPS) != b // len(NB201_OPS)
    ]
    linas_like = np.c_[onehot, np.stack([onehot[:, a] * onehot[:, b] for a, b in pairs], 1)]
    vocabulary: dict[str, int] = {}
    bags = [subterms(e) for e in expressions]
    for bag in bags:
        for term in sorted(bag):
            vocabulary.setdefault(term, len(vocabulary))
    bag_features = np.zeros((len(cells), len(vocabulary)))
    for i, bag in enumerate(bags):
        bag_features[i, [vocabulary[t] for t in bag]] = 1.0
    lines = [
        f"{len(classes)} classes of cells computing the same expression among {len(cells)} "
        f"cells; {len(top)} cells in the top 10 %, {len(truth)} of them with an isomorph.",
        "",
        "| accuracy predictor | Kendall tau in the top 10 %, fitted on 100 random cells "
        "(5 draws) | fitted on all cells |",
        "|---|---|---|",
        f"| mean of the cell's isomorphs (leave-one-out; ceiling) | - | "
        f"{kendalltau(loo, truth)[0]:.3f} (cells with an isomorph) |",
    ]
    rng = np.random.default_rng(0)
    for name, features in (
        ("ridge, one-hot genes + gene pairs (linas's features)", linas_like),
        (f"ridge, {len(vocabulary)} sub-term indicators", bag_features),
    ):
        small = []
        for _ in range(5):
            train = rng.choice(len(cells), 100, replace=False)
            model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(features[train], accuracy[train])
            small.append(kendalltau(model.predict(features[top]), accuracy[top])[0])
        full = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(features, accuracy)
        lines.append(
            f"| {name} | {np.mean(small):.3f} ({min(small):.3f} to {max(small):.3f}) "
            f"| {kendalltau(full.predict(features[top]), accuracy[top])[0]:.3f} |"
        )
    return lines


class _Known:
    """Stands in for a fitted predictor: fixed values for every row of the enumerated pool."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.report: dict[str, float] = {}
        self.loo_tau = float("nan")

    def fit(self, *args: object, **kwargs: object) -> None:
        pass

    def predict(self, active: object, extra: object = None) -> np.ndarray:
        return self.values


class _InformedLinas(LinasStrategy):
    """``linas`` whose predictions of some metrics are the truth plus a fixed error per cell.

    ``truth``: metric -> (value per enumerated pool row, error standard deviation). Accuracy
    is always the primary objective, so that a known metric does not change which one is:
    ``linas`` itself takes the metric whose predictor has the lower leave-one-out tau, which
    on pixel3 and raspi4 (latency not additive) is latency for 5-10 % of its asks (research
    audit 31): the row without truth is this variant, not shipped ``linas``.
    """

    def __init__(self, *, truth: dict[str, tuple[np.ndarray, float]], **options: Any) -> None:
        super().__init__(**options)
        noise = np.random.default_rng(10_000 + self.seed)
        self._known = {
            name: _Known(values + noise.normal(0.0, error, len(values)))
            for name, (values, error) in truth.items()
        }

    def _fit(self) -> None:
        super()._fit()
        self._models.update(self._known)  # type: ignore[arg-type]

    def _primary(self) -> str:
        return "accuracy"


def informed_table(table, space, devices: list[str], seeds: int, budget: int) -> list[str]:
    position = {key: i for i, key in enumerate(table.supernet.rows)}
    cards = [len(space.choices(name)) for name in space.names]
    grids = np.meshgrid(*[np.arange(c) for c in cards], indexing="ij")  # linas's pool order
    pool = np.column_stack([g.ravel() for g in grids])
    rows = np.array([position[space.key(space.from_indices(row.tolist()))] for row in pool])
    variants: list[tuple[str, dict[str, float]]] = [
        ("linas, accuracy always primary (both predictors fitted)", {}),
        ("accuracy exact", {"accuracy": 0.0}),
        ("accuracy + 0.13 points error", {"accuracy": 0.0013}),
        ("accuracy + 0.3 points error", {"accuracy": 0.003}),
        ("latency exact", {"latency_ms": 0.0}),
        ("latency exact, accuracy + 0.3 points error", {"latency_ms": 0.0, "accuracy": 0.003}),
        ("both exact", {"latency_ms": 0.0, "accuracy": 0.0}),
    ]
    lines = [
        f"| linas's predictions at {budget} evaluations | HV ratio tight (mean, min) "
        f"| HV ratio worst (mean) | {' | '.join(devices)} |",
        "|---|---|---|" + "---|" * len(devices),
    ]
    for label, errors in variants:
        tight: dict[str, list[float]] = {device: [] for device in devices}
        worst: list[float] = []
        for device in devices:
            accuracy, latency = table.accuracy, table.latency[device]
            values = {"accuracy": accuracy[rows], "latency_ms": latency[rows]}
            truth = {name: (values[name], error) for name, error in errors.items()}
            refs = references(accuracy, latency)
            everything = np.c_[accuracy, latency]
            for seed in range(seeds):
                strategy = _InformedLinas(
                    truth=truth, space=space, objectives=OBJECTIVES, seed=seed, budget=budget
                )
                points = []
                while proposals := strategy.ask(1):
                    i = position[table.supernet.encode(proposals[0])]
                    strategy.tell(proposals[0], {"accuracy": accuracy[i], "latency_ms": latency[i]})
                    points.append((accuracy[i], latency[i]))
                found = np.array(points)
                ratio = {
                    name: hypervolume(found, ("max", "min"), ref)
                    / hypervolume(everything, ("max", "min"), ref)
                    for name, ref in refs.items()
                }
                tight[device].append(ratio["tight"])
                worst.append(ratio["worst"])
        every = [value for values in tight.values() for value in values]
        lines.append(
            f"| {label} | {np.mean(every):.3f} ({min(every):.3f}) | {np.mean(worst):.4f} | "
            + " | ".join(f"{np.mean(tight[device]):.3f}" for device in devices)
            + " |"
        )
    return lines


def additivity_table(table, devices: list[str]) -> list[str]:
    cells = [table.supernet.decode(key) for key in table.supernet.rows]
    onehot = np.array(
        [[float(cell[f"e{e}"] == op) for e in range(len(_EDGES)) for op in NB201_OPS] + [1.0]
         for cell in cells]
    )  # fmt: skip
    lines = ["| device | additive latency fit on all cells: mean relative error near the median |",
             "|---|---|"]  # fmt: skip
    for device in devices:
        latency = table.latency[device]
        weights = np.linalg.lstsq(onehot, latency, rcond=None)[0]
        ratio = latency / np.median(latency)
        band = (ratio > 0.7) & (ratio <= 1.0)
        error = np.abs(onehot[band] @ weights / latency[band] - 1.0).mean()
        lines.append(f"| {device} | {100 * error:.1f} % |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument(
        "--informed-seeds", type=int, default=5, help="seeds per device in the third table"
    )
    args = parser.parse_args()
    devices = list(DEFAULT_DEVICES)
    table = load_table(args.data, "cifar10", devices)
    space = supernet_space(table.supernet)
    print("\n".join(box_table(table, space, devices, args.seeds, args.budget)))
    print()
    print("\n".join(predictor_table(table)))
    print()
    print("\n".join(informed_table(table, space, devices, args.informed_seeds, args.budget)))
    print()
    print("\n".join(additivity_table(table, devices)))


if __name__ == "__main__":
    main()
