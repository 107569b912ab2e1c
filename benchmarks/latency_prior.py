"""A stored latency predictor as linas's prior: initial proposals screened for feasibility.

    python benchmarks/latency_prior.py [--seeds 10] [--budgets 20 50] [--quantile 0.1]
        [--devices 1080ti_1 titan_rtx_1 silver_4210r fpga pixel3]

NAS-Bench-201 (cifar10) with recorded latencies: per device, a predictor (the default kind) is
fitted on 50 random cells, as a calibration job would, and a latency constraint is put at the
``--quantile`` of the device's latencies (0.1: one cell in ten is feasible). Then ``linas`` runs
each budget with the predictor as its prior and without, same seeds, and we compare how many of
its initial proposals were feasible, how many evaluations in all were, and the regret of the
best feasible accuracy found (true best feasible accuracy in the table minus the best found;
a run that found nothing feasible counts the gap to the worst feasible cell). The predictor
column also gives its own cross-validated error and whether the service would use it as a prior
(``workers.calibration``: CV Spearman >= 0.8 and >= 50 % within 10 %).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import numpy as np

from hardware_profiles.latency_predictor import (
    ArchEncoder,
    fit_latency_predictor,
    validation_metrics,
)
from models.registry import get_supernet
from search import Bound, LinasStrategy, SearchSpace
from workers.calibration import trusted_as_prior

SUPERNET = "nb201-cifar10"
CALIBRATION = 50
DEVICES = ["1080ti_1", "titan_rtx_1", "silver_4210r", "fpga", "pixel3"]


def one_run(supernet: Any, column: str, limit: float, budget: int, seed: int,
            prior: Any) -> dict[str, float]:  # fmt: skip
    space = SearchSpace(supernet.space(), canonical=supernet.canonical, encode=supernet.encode)
    strategy = LinasStrategy(
        space=space,
        objectives={"accuracy": "max", "latency_ms": "min"},
        constraints={"latency_ms": Bound(max=limit)},
        seed=seed,
        budget=budget,
        prior=None if prior is None else {"latency_ms": prior},
    )
    feasible: list[bool] = []
    best = -np.inf
    while proposals := strategy.ask(1):
        arch = proposals[0]
        row = supernet.rows[supernet.encode(arch)]
        metrics = {"accuracy": row["acc_cifar10_test"], "latency_ms": row[f"lat_ms_{column}"]}
        strategy.tell(arch, metrics)
        feasible.append(metrics["latency_ms"] <= limit)
        if feasible[-1]:
            best = max(best, metrics["accuracy"])
    return {
        "initial": float(np.mean(feasible[: strategy.n_initial])),
        "all": float(np.mean(feasible)),
        "best": best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--quantile", type=float, default=0.1)
    parser.add_argument("--devices", nargs="+", default=DEVICES)
    args = parser.parse_args()
    supernet = get_supernet(SUPERNET)
    encoder = ArchEncoder.from_supernet(supernet)
    keys = sorted(supernet.rows)
    started = time.perf_counter()
    print(f"{SUPERNET}, constraint at the {args.quantile:.0%} latency quantile, "
          f"{args.seeds} seeds, predictor fitted on {CALIBRATION} random cells\n")  # fmt: skip
    print(
        "| device | predictor held-out within 10 % / Spearman | budget | prior | feasible "
        "initial proposals | feasible evaluations | regret of best feasible accuracy |"
    )
    print("|---|---|---:|---|---:|---:|---:|")
    for column in args.devices:
        latency = np.array([supernet.rows[k][f"lat_ms_{column}"] for k in keys])
        limit = float(np.quantile(latency, args.quantile))
        accuracy = np.array([supernet.rows[k]["acc_cifar10_test"] for k in keys])
        ok = latency <= limit
        best_true, worst_true = float(accuracy[ok].max()), float(accuracy[ok].min())
        sample = random.Random(0).sample(keys, CALIBRATION + 500)
        archs = [supernet.decode(k) for k in sample]
        truth = [supernet.rows[k][f"lat_ms_{column}"] for k in sample]
        predictor = fit_latency_predictor(encoder, archs[:CALIBRATION], truth[:CALIBRATION])
        held = validation_metrics(predictor.predict(encoder, archs[CALIBRATION:]),
                                  truth[CALIBRATION:])  # fmt: skip
        cv = predictor.metrics
        used = trusted_as_prior(cv)
        quality = (f"{held['within_10pct']:.0%} / {held['spearman']:.3f} (CV "
                   f"{cv['within_10pct']:.0%} / {cv['spearman']:.3f}: service "
                   f"{'uses it' if used else 'would not use it'})")  # fmt: skip
        bound = predictor.bind(encoder)
        for budget in args.budgets:
            for label, prior in (("none", None), ("predictor", bound)):
                runs = [one_run(supernet, column, limit, budget, 1000 + s, prior)
                        for s in range(args.seeds)]  # fmt: skip
                regret = [best_true - (r["best"] if np.isfinite(r["best"]) else worst_true)
                          for r in runs]  # fmt: skip
                print(f"| {column} | {quality} | {budget} | {label} | "
                      f"{statistics.mean(r['initial'] for r in runs):.0%} | "
                      f"{statistics.mean(r['all'] for r in runs):.0%} | "
                      f"{statistics.mean(regret):.4f} |", flush=True)  # fmt: skip
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
