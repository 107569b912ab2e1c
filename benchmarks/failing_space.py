"""Jobs on a device where part of the space cannot be measured: what the failure rules cost.

    .venv/bin/python benchmarks/failing_space.py [--fractions 0.1 0.3 0.5] [--budgets 60]
        [--seeds 10] [--devices ...] [--strategies random nsga2 tpe linas] [--jobs 2]

A sub-network out of a small device's memory raises when it is measured; a job skips it
(``Strategy.tell_failed``) and goes on, until its failures pass ``budget.failures`` (left to
its default here: half the evaluations, at least 3), or, with no result yet, its first
``FAILING_FROM_THE_START`` fail, or its last ``FAILING_IN_A_ROW`` fail
(``workers.failures.Failures``, the rules the job runner applies; ``--from-the-start`` and
``--in-a-row`` try other numbers). Here a ``--fraction`` of
NAS-Bench-201's cells fails, chosen by ``--model``: ``uniform`` (a hash of the cell's id and
the device, fixed across strategies and seeds) or ``costliest`` (the cells of the highest
latency on the device: out of memory is a large network's failure, and the accurate end of
the front is where they are); each strategy runs its job loop with that rule. Reported per
fraction, strategy and budget: the share of jobs the rules would fail, the failed
measurements per job (the time a job wastes), the longest run of failures after a result,
and the HV ratio of what the job measured
against the true front of the cells that can be measured, reference the worst corner of
those cells (lowest accuracy, highest latency among them).
"""

from __future__ import annotations

import argparse
import hashlib
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
from search import create_strategy, hypervolume  # noqa: E402
from workers import failures as failures_module  # noqa: E402
from workers.evaluator import SubnetEvaluator  # noqa: E402
from workers.failures import Failures  # noqa: E402


@dataclass(frozen=True)
class Run:
    device: str
    model: str
    fraction: float
    strategy: str
    budget: int
    seed: int
    failed_job: bool  # a rule ended it
    from_the_start: bool  # ... because its first measurements all failed
    in_a_row: bool  # ... because its last ones did
    failures: int  # failed measurements it made
    longest: int  # the longest run of failed measurements after a result
    hv_ratio: float  # worst reference, against the measurable cells' front


def _fails(key: str, device: str, fraction: float) -> bool:
    """Whether the cell ``key`` cannot be measured on ``device``: a hash, the same for
    every strategy and seed, another draw on each device."""
    digest = hashlib.blake2b(f"{device}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def _failing(table: Table, device: str, model: str, fraction: float) -> set[str]:
    """The ids of the cells that cannot be measured."""
    keys = list(table.supernet.rows)  # in the order of the table's columns
    if model == "uniform":
        return {key for key in keys if _fails(key, device, fraction)}
    latency = table.latency[device]
    cut = np.quantile(latency, 1.0 - fraction) if fraction > 0 else np.inf
    return {key for key, value in zip(keys, latency, strict=True) if value > cut}


def run_one(table: Table, device: str, model: str, fraction: float, strategy: str,
            budget: int, seed: int, start: int, row: int) -> Run:  # fmt: skip
    space = supernet_space(table.supernet)
    failing = _failing(table, device, model, fraction)
    ok = np.array([key not in failing for key in table.supernet.rows])
    latency = table.latency[device]
    truth = np.column_stack([table.accuracy[ok], latency[ok]])
    reference = np.array([truth[:, 0].min(), truth[:, 1].max()])  # the measurable cells'
    evaluator = SubnetEvaluator(table.supernet, get_profile(profile_id(device)))
    searcher = create_strategy(
        strategy, space=space, objectives=OBJECTIVES, seed=seed, budget=budget
    )
    failures = Failures.of({"budget": {"evaluations": budget}})
    failures.start, failures.row = start, row
    found: list[tuple[float, float]] = []
    failed_job, from_the_start, in_a_row, longest = False, False, False, 0
    while proposals := searcher.ask(1):
        arch = proposals[0]
        if space.key(arch) in failing:
            if found:
                longest = max(longest, failures.in_a_row + 1)
            if ended := failures.ends_the_job(len(found)):
                failed_job = True
                from_the_start, in_a_row = "none succeeded" in ended, "in all" in ended
                break
            searcher.tell_failed(arch)
            failures.failed()
            continue
        metrics = evaluator.measure(arch).metrics
        searcher.tell(arch, {name: metrics[name] for name in OBJECTIVES})
        failures.measured()
        found.append((metrics["accuracy"], metrics["latency_ms"]))
    ratio = 0.0
    if found:
        ratio = hypervolume(np.array(found), SENSES, reference) / hypervolume(
            truth, SENSES, reference
        )
    return Run(device, model, fraction, strategy, budget, seed, failed_job, from_the_start,
               in_a_row, failures.counted + failed_job, longest, ratio)  # fmt: skip


def run_all(args: argparse.Namespace) -> list[Run]:
    tasks = [
        (device, model, fraction, strategy, budget, seed, args.from_the_start, args.in_a_row)
        for device in args.devices
        for model in args.models
        for fraction in args.fractions
        for strategy in args.strategies
        for budget in args.budgets
        for seed in range(args.seeds)
        if fraction > 0 or model == args.models[0]  # nothing fails: one model is enough
    ]
    return list(on_table(args, run_one, tasks))


def report(runs: list[Run], args: argparse.Namespace, elapsed: float) -> str:
    lines = [
        f"Dataset `{args.dataset}`, devices {', '.join(args.devices)}; failing: "
        f"{', '.join(args.models)}, fractions "
        f"{', '.join(f'{f:g}' for f in args.fractions)}; {args.seeds} seeds; {len(runs)} "
        f"runs in {elapsed:.0f} s on {_machine()}; a job with no result fails at its failure "
        f"number {args.from_the_start}, any job at its failure number {args.in_a_row} in a "
        "row.",
        "",
        "| failing | fraction | strategy | budget | jobs failed by the rules (from the start, "
        "in a row) | failed measurements per job (mean, max) | longest run of failures after "
        "a result (mean, max) | HV ratio worst (mean ± std) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    cells = [(m, f, s, b) for m in args.models for f in args.fractions
             for s in args.strategies for b in args.budgets]  # fmt: skip
    for model, fraction, strategy, budget in cells:
        if model != args.models[0] and fraction == 0:
            continue  # nothing fails: the same runs as the first model's
        cell = (model, fraction, strategy, budget)
        group = [r for r in runs if (r.model, r.fraction, r.strategy, r.budget) == cell]
        failed = np.array([r.failures for r in group])
        ratio = np.array([r.hv_ratio for r in group])
        jobs_failed = sum(r.failed_job for r in group)
        at_start = sum(r.from_the_start for r in group)
        in_a_row = sum(r.in_a_row for r in group)
        longest = np.array([r.longest for r in group])
        lines.append(
            f"| {model} | {fraction:g} | {strategy} | {budget} | {jobs_failed} of "
            f"{len(group)} ({at_start}, {in_a_row}) | "
            f"{failed.mean():.1f}, {failed.max()} | {longest.mean():.1f}, {longest.max()} | "
            f"{ratio.mean():.4f} ± {ratio.std():.4f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol_arguments(parser)
    parser.set_defaults(budgets=[60])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.0, 0.1, 0.3, 0.5])
    parser.add_argument(
        "--models", nargs="+", choices=["uniform", "costliest"], default=["uniform", "costliest"]
    )
    parser.add_argument("--strategies", nargs="+", default=["random", "nsga2", "tpe", "linas"])
    parser.add_argument(
        "--from-the-start",
        type=int,
        default=failures_module.FAILING_FROM_THE_START,
        help="failures with no result that end a job (default: the service's, "
        "workers.failures.FAILING_FROM_THE_START)",
    )
    parser.add_argument(
        "--in-a-row",
        type=int,
        default=failures_module.FAILING_IN_A_ROW,
        help="failures in a row that end a job (default: the service's, "
        "workers.failures.FAILING_IN_A_ROW)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    run_and_report(parse_args(argv), run_all, report)


if __name__ == "__main__":
    main()
