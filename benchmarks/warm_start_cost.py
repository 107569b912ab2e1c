"""What a warm start costs a job: seconds per job against the rows stored for its pair.

Per configuration, in a fresh SQLite database: one `random` job (warm start off) stores
`--rows` measurements of nb201-cifar10 on nb201-pixel3, and optionally one stores `--hints`
on nb201-fpga (accuracy hints for `linas`); then `--jobs` jobs of `--budget` new
measurements run one after another through `JobRunner.run`, as a worker runs them, each
warm-started from everything stored before it (copies included: a backlog of jobs on one
pair). Reports the median seconds per job, and the median of the last tenth of the jobs (the
last job when there are fewer than 20), and the evaluations table's size at
the end. Several checkouts can be compared side by side (`--repos`, each run in its own
process with its own code; the recorded supernet's evaluations take no time, so this is the
search's and the store's cost alone):

    .venv/bin/python benchmarks/warm_start_cost.py --repos /tmp/old . --rows 400 1600
    .venv/bin/python benchmarks/warm_start_cost.py --strategies random --rows 400 --jobs 40
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PAIR = {"supernet": "nb201-cifar10", "device": "nb201-pixel3",
        "objectives": {"accuracy": "max", "latency_ms": "min"}}  # fmt: skip


def one(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, in this process, with the code of ``args.code``."""
    sys.path.insert(0, str(Path(args.code).resolve()))
    from sqlalchemy import func, select

    from api.schemas import JobCreate
    from core.settings import Settings
    from store import jobs as q
    from store.db import make_engine, make_session_factory, transaction, upgrade
    from store.tables import Evaluation, JobStatus
    from workers.runner import JobRunner

    scratch = Path(args.db)
    settings = Settings(database_url=f"sqlite:///{scratch / 'hwnas.db'}", data_dir=scratch,
                        broker_url="", embedded_devices="none", api_keys="")  # fmt: skip
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    runner = JobRunner(factory, settings, "bench-worker")

    def run(**spec: Any) -> float:
        body = JobCreate(**{**PAIR, **spec}).model_dump(mode="json")
        with transaction(factory) as session:
            job_id = q.create_jobs(session, [(body, None)])[0].id
        started = time.perf_counter()
        assert runner.run(job_id) == JobStatus.succeeded
        return time.perf_counter() - started

    seeding = {"strategy": "random", "warm_start": False}
    if args.hints:
        run(**seeding, device="nb201-fpga", seed=7, budget={"evaluations": args.hints})
    if args.rows:
        run(**seeding, seed=1, budget={"evaluations": args.rows})
    times = [run(strategy=args.strategy, seed=100 + k, budget={"evaluations": args.budget})
             for k in range(args.jobs)]  # fmt: skip
    with transaction(factory) as session:
        stored = session.scalar(select(func.count()).select_from(Evaluation))
    tail = times[-max(1, len(times) // 10) :]  # one job is too noisy a sample on a busy VM
    return {"median_s": median(times), "last_s": median(tail), "stored": stored}


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", nargs="+", default=["."], help="checkouts to compare")
    parser.add_argument("--strategies", nargs="+", default=["linas"])
    parser.add_argument("--rows", nargs="+", type=int, default=[0, 400, 1600])
    parser.add_argument("--hints", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=3, help="jobs in a row per configuration")
    parser.add_argument("--budget", type=int, default=4, help="new measurements per job")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", default=".", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--rows-one", type=int, dest="rows_one", help=argparse.SUPPRESS)
    parser.add_argument("--hints-one", type=int, dest="hints_one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.rows, args.hints = args.rows_one, args.hints_one
        print(json.dumps(one(args)))
        return
    print(f"{args.jobs} jobs of {args.budget} new measurements in a row per configuration")
    print("| strategy | stored rows | hint rows | checkout | median s per job | last tenth's "
          "median s |"
          " evaluations stored at the end |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for strategy in args.strategies:
        for rows in args.rows:
            for hints in args.hints:
                for repo in args.repos:
                    print(row(repo, strategy, rows, hints, args), flush=True)


def row(repo: str, strategy: str, rows: int, hints: int, args: argparse.Namespace) -> str:
    """One configuration in a process of its own, with ``repo``'s code."""
    cells = f"| {strategy} | {rows} | {hints} | {repo} |"
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, __file__, "--one", "--code", repo, "--db", scratch,
                   "--strategy", strategy, "--rows-one", str(rows), "--hints-one", str(hints),
                   "--jobs", str(args.jobs), "--budget", str(args.budget)]  # fmt: skip
        done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    if done.returncode:
        return f"{cells} failed: {done.stderr.strip().splitlines()[-1]} | | |"
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return f"{cells} {got['median_s']:.2f} | {got['last_s']:.2f} | {got['stored']} |"


if __name__ == "__main__":
    main()
