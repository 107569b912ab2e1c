"""Search quality under a latency constraint, every strategy, on NAS-Bench-201.

    .venv/bin/python benchmarks/constrained_quality.py [--quantiles 0.1 0.3] [--budgets 50 100]
        [--seeds 10] [--devices ...] [--strategies random nsga2 tpe linas] [--jobs 2]

A job that says ``latency_ms <= x`` wants the best front *under* x, not a front that is good
elsewhere. Per device, the constraint is put at a ``--quantile`` of the device's recorded
latencies (0.1: one cell in ten meets it). Each strategy runs its ask/tell loop with that
constraint, through the protocol a user's job uses (``benchmarks/search_quality.py``: the
recorded supernet, its space, the recorded device profile, ``SubnetEvaluator``), and is scored
on what it measured:

- feasible HV ratio: hypervolume of the feasible points measured over that of every feasible
  cell of the table, reference (the table's lowest accuracy, the limit): the constrained
  front's quality, 1.0 when it found the true feasible front;
- regret: the table's best feasible accuracy minus the best feasible accuracy measured (a
  run that measured nothing feasible counts the gap to the worst feasible cell);
- feasible share: the fraction of its evaluations that met the limit (what it spent inside
  the region the user asked for);
- duplicates: architectures measured twice (summed over the runs).

No prior (a calibrated latency predictor) is given: ``benchmarks/latency_prior.py`` measures
what one adds to ``linas``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.search_quality import (  # noqa: E402
    OBJECTIVES,
    SENSES,
    Table,
    _machine,
    on_table,
    profile_id,
    protocol_arguments,
    run_and_report,
    supernet_space,
)
from hardware_profiles import get_profile  # noqa: E402
from search import Bound, create_strategy, hypervolume  # noqa: E402
from workers.evaluator import SubnetEvaluator  # noqa: E402


@dataclass(frozen=True)
class Run:
    device: str
    quantile: float
    strategy: str
    budget: int
    seed: int
    hv_ratio: float
    regret: float
    feasible_share: float
    duplicates: int


def run_one(table: Table, device: str, quantile: float, strategy: str, budget: int,
            seed: int) -> Run:  # fmt: skip
    latency = table.latency[device]
    limit = float(np.quantile(latency, quantile))
    inside = latency <= limit
    truth = np.column_stack([table.accuracy[inside], latency[inside]])
    reference = np.array([table.accuracy.min(), limit])
    evaluator = SubnetEvaluator(table.supernet, get_profile(profile_id(device)))
    searcher = create_strategy(
        strategy,
        space=supernet_space(table.supernet),
        objectives=OBJECTIVES,
        constraints={"latency_ms": Bound(max=limit)},
        seed=seed,
        budget=budget,
    )
    found: list[tuple[float, float]] = []
    keys: list[str] = []
    while proposals := searcher.ask(1):
        arch = proposals[0]
        metrics = evaluator.measure(arch).metrics
        searcher.tell(arch, {name: metrics[name] for name in OBJECTIVES})
        keys.append(searcher.space.key(arch))
        if metrics["latency_ms"] <= limit:
            found.append((metrics["accuracy"], metrics["latency_ms"]))
    best = max((a for a, _ in found), default=float(truth[:, 0].min()))
    ratio = 0.0
    if found:
        ratio = hypervolume(np.array(found), SENSES, reference) / hypervolume(
            truth, SENSES, reference
        )
    return Run(device, quantile, strategy, budget, seed, ratio, float(truth[:, 0].max()) - best,
               len(found) / len(keys), len(keys) - len(set(keys)))  # fmt: skip


def run_all(args: argparse.Namespace) -> list[Run]:
    tasks = [
        (device, quantile, strategy, budget, seed)
        for device in args.devices
        for quantile in args.quantiles
        for strategy in args.strategies
        for budget in args.budgets
        for seed in range(args.seeds)
    ]
    return list(on_table(args, run_one, tasks))


def report(runs: list[Run], args: argparse.Namespace, elapsed: float) -> str:
    lines = [
        f"Dataset `{args.dataset}`, devices {', '.join(args.devices)}; latency limit at the "
        f"{', '.join(f'{q:g}' for q in args.quantiles)} quantile of each device's latencies; "
        f"{args.seeds} seeds; {len(runs)} runs in {elapsed:.0f} s on {_machine()}.",
        "",
        "| limit quantile | strategy | budget | feasible HV ratio (mean ± std) | "
        "regret of best feasible accuracy (mean, max) | feasible share | duplicates |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for quantile in args.quantiles:
        for strategy in args.strategies:
            for budget in args.budgets:
                cell = (quantile, strategy, budget)
                group = [r for r in runs if (r.quantile, r.strategy, r.budget) == cell]
                ratio = np.array([r.hv_ratio for r in group])
                regret = np.array([r.regret for r in group])
                share = np.mean([r.feasible_share for r in group])
                duplicates = sum(r.duplicates for r in group)
                lines.append(
                    f"| {quantile:g} | {strategy} | {budget} | {ratio.mean():.3f} ± "
                    f"{ratio.std():.3f} | {regret.mean():.4f}, {regret.max():.4f} | "
                    f"{share:.0%} | {duplicates} |"
                )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol_arguments(parser)
    parser.set_defaults(budgets=[50, 100])
    parser.add_argument("--quantiles", nargs="+", type=float, default=[0.1, 0.3])
    parser.add_argument("--strategies", nargs="+", default=["random", "nsga2", "tpe", "linas"])
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    run_and_report(parse_args(argv), run_all, report)


if __name__ == "__main__":
    main()
