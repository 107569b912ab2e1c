"""A job on a second device, hinted with what a job on another device measured.

Accuracy does not depend on the device, so a job on device B is given the accuracies that an
earlier `linas` job on device A measured (``Strategy.hint``, as the job runner does with other
devices' stored evaluations); latency on B is still measured for every architecture it
proposes, and the budget counts every measurement. For every device B and seed, A is the
next device of the list (the last one's is the first), and A's job uses seed + 1000 and
``--donor-budget`` evaluations. The same protocol as ``search_quality.py`` (recorded
supernet, recorded device profiles, ``SubnetEvaluator``); `linas` on B fresh and hinted, same
seeds, side by side::

    .venv/bin/python benchmarks/cross_device_hints.py --seeds 10 --jobs 2 --donor-budget 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import search_quality as sq  # noqa: E402
from hardware_profiles import get_profile  # noqa: E402
from search import create_strategy  # noqa: E402
from workers.evaluator import SubnetEvaluator  # noqa: E402

_TABLE: sq.Table | None = None


def donor_accuracies(
    table: sq.Table, device: str, budget: int, seed: int
) -> list[tuple[dict, dict[str, float]]]:
    """(arch, {"accuracy": ...}) for every architecture a `linas` job on ``device`` measured."""
    space = sq.supernet_space(table.supernet)
    evaluator = SubnetEvaluator(table.supernet, get_profile(sq.profile_id(device)))
    strategy = create_strategy(
        "linas", space=space, objectives=sq.OBJECTIVES, seed=seed, budget=budget
    )
    while proposals := strategy.ask(1):
        for arch in proposals:
            metrics = evaluator.measure(arch).metrics
            strategy.tell(arch, {name: metrics[name] for name in sq.OBJECTIVES})
    return [(arch, {"accuracy": metrics["accuracy"]}) for arch, metrics in strategy.history]


def _init(path: Path, dataset: str, devices: Sequence[str]) -> None:
    global _TABLE
    _TABLE = sq.load_table(path, dataset, devices)


def _task(task: tuple[str, str, int, int, list[int]]) -> list[tuple[str, int, int, sq.Run, sq.Run]]:
    device, donor, seed, donor_budget, budgets = task
    assert _TABLE is not None
    hints = donor_accuracies(_TABLE, donor, donor_budget, seed + 1000)
    out = []
    for budget in budgets:
        fresh = sq.run_one(_TABLE, device, "linas", budget, seed, 1)
        hinted = sq.run_one(_TABLE, device, "linas", budget, seed, 1, hints)
        out.append((device, seed, budget, fresh, hinted))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sq.protocol_arguments(parser)
    parser.set_defaults(budgets=[50, 100])
    parser.add_argument("--donor-budget", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    devices = list(args.devices)
    tasks = [
        (device, devices[(i + 1) % len(devices)], seed, args.donor_budget, args.budgets)
        for i, device in enumerate(devices)
        for seed in range(args.seeds)
    ]
    start = time.perf_counter()
    init = (args.data, args.dataset, devices)
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=init) as pool:
        rows = [row for result in pool.map(_task, tasks) for row in result]
    elapsed = time.perf_counter() - start
    print(
        f"Dataset `{args.dataset}`, devices {', '.join(devices)} (hints from the next one's "
        f"`linas` job of {args.donor_budget} evaluations); {args.seeds} seeds; {elapsed:.0f} s"
    )
    print()
    print(
        "| budget | tight fresh | tight hinted | paired difference (mean ± s.e.) | hinted wins "
        "| worst fresh | worst hinted | overhead ms/eval fresh / hinted |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for budget in args.budgets:
        chosen = [row for row in rows if row[2] == budget]
        fresh = np.array([row[3].hv["tight"] for row in chosen])
        hinted = np.array([row[4].hv["tight"] for row in chosen])
        diff = hinted - fresh
        worst = [statistics.mean(row[k].hv["worst"] for row in chosen) for k in (3, 4)]
        overhead = [statistics.mean(row[k].overhead_ms for row in chosen) for k in (3, 4)]
        print(
            f"| {budget} | {fresh.mean():.3f} | {hinted.mean():.3f} "
            f"| {diff.mean():+.3f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.3f} "
            f"| {int((diff > 0).sum())} of {len(diff)} ({int((diff < 0).sum())} losses) "
            f"| {worst[0]:.4f} | {worst[1]:.4f} | {overhead[0]:.1f} / {overhead[1]:.1f} |"
        )
    print()
    print("Tight ratio per device, fresh -> hinted (mean over seeds):")
    print()
    print("| budget | " + " | ".join(devices) + " |")
    print("|---:|" + "---:|" * len(devices))
    for budget in args.budgets:
        cells = []
        for device in devices:
            chosen = [row for row in rows if row[2] == budget and row[0] == device]
            before = statistics.mean(row[3].hv["tight"] for row in chosen)
            after = statistics.mean(row[4].hv["tight"] for row in chosen)
            cells.append(f"{before:.2f} -> {after:.2f}")
        print(f"| {budget} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
