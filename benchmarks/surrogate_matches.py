"""The gene matches of ``linas``' surrogate from scratch (``PairwiseRidge._matches``): how
many genes and gene pairs every two told results share, the first fit's cost after a
warm start brings a couple of thousand results (scale audit 33: 5.6 s of a 21 s start).

The built-in supernet's feature map (``fmnist-ofa-cnn``: its genes and every gene pair),
``--rows`` uniform architectures; the comparison column by column as it was before
session 33, against the sparse product now, side by side (and checked equal), each the
median of ``--repeats``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/surrogate_matches.py --rows 500 1000 2500
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.registry import get_supernet  # noqa: E402
from search.surrogate import FeatureMap, PairwiseRidge  # noqa: E402
from workers.runner import job_space  # noqa: E402


def column_by_column(active: np.ndarray, genes: int) -> tuple[np.ndarray, np.ndarray]:
    """The matches as ``_matches`` counted them before session 33."""
    n = len(active)
    counts = (np.zeros((n, n)), np.zeros((n, n)))
    for k in range(active.shape[1]):
        column = active[:, k]
        counts[0 if k < genes else 1][:] += column[:, None] == column[None, :]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 1000, 2500])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    space = job_space(get_supernet("fmnist-ofa-cnn"))
    features = FeatureMap([len(space.choices(name)) for name in space.names])
    print(f"fmnist-ofa-cnn: {features.n_genes} genes, {features.n_active} active features a row")
    print(f"{'rows':>6} {'before s':>9} {'now s':>7} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for rows in args.rows:
        indices = np.array([space.to_indices(space.sample(rng)) for _ in range(rows)])
        active = features.active(indices)
        model = PairwiseRidge(features)
        before, now = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            old = column_by_column(active, features.n_genes)
            before.append(time.perf_counter() - started)
            started = time.perf_counter()
            new = model._matches(active)
            now.append(time.perf_counter() - started)
        assert all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
        b, n = statistics.median(before), statistics.median(now)
        print(f"{rows:>6} {b:>9.3f} {n:>7.3f} {b / n:>5.1f}x")


if __name__ == "__main__":
    main()
