"""What ``hwnas db-backup`` costs on a large SQLite database, and what it costs a server
writing meanwhile.

A fresh database holds ``--evaluations`` evaluations (in jobs of 100, rows shaped as a
search's); a writer thread commits one evaluation at a time, as a job's worker does, first
alone for 3 s, then while ``store.backup.backup_sqlite`` copies the database, one backup
after another for at least 3 s; the table gives a backup's median time (and how many were
taken), the rows the last one holds, and the writer's commit latency (median, 99th
percentile, worst) in both phases:

    .venv/bin/python benchmarks/db_backup.py --evaluations 200000 1000000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from store import jobs as q  # noqa: E402
from store.backup import backup_sqlite  # noqa: E402
from store.db import make_engine, make_session_factory, transaction, upgrade  # noqa: E402
from store.tables import Evaluation, utcnow  # noqa: E402

SPEC: dict[str, Any] = {
    "supernet": "fmnist-ofa-cnn", "device": "cpu-1t",
    "objectives": {"accuracy": "max", "latency_ms": "min"}, "constraints": {},
    "budget": {"evaluations": 100}, "strategy": "linas", "seed": 0,
}  # fmt: skip
#: What a measured evaluation's row carries (a latency's details, an architecture).
ARCH = {"r": 28, "d": [3, 3, 3], "k": [7] * 9, "e": [6] * 9}
DETAILS = {"latency": {"median_ms": 1.0, "iqr_ms": 0.01, "p10_ms": 0.99, "p90_ms": 1.02,
                       "mean_ms": 1.0, "repeats": 200, "calls_per_sample": 1,
                       "rel_ci": 0.004, "stopped_by": "target"}}  # fmt: skip


def fill(factory: Any, evaluations: int) -> None:
    jobs = max(1, evaluations // 100)
    with transaction(factory) as session:
        rows = q.create_jobs(session, [({**SPEC, "seed": i}, None) for i in range(jobs)])
        ids = [row.id for row in rows]
    now = utcnow()
    for start in range(0, jobs, 100):  # a transaction per 100 jobs
        with transaction(factory) as session:
            for n, job_id in enumerate(ids[start : start + 100], start):
                session.add_all(
                    Evaluation(
                        job_id=job_id, seq=k, subnet_id=f"s{n}-{k}", arch=ARCH,
                        metrics={"accuracy": 0.9, "latency_ms": 1.0, "macs": 1e6,
                                 "params": 1e5, "model_size_mb": 0.4},
                        details=DETAILS, feasible=True, on_front=False, seconds=0.5,
                        created_at=now,
                    )
                    for k in range(100)
                )  # fmt: skip


def commits(
    factory: Any, job_id: str, stop: threading.Event, seconds: list[float], seq: int
) -> None:
    """One evaluation a commit (numbered from ``seq``), until ``stop``; each commit's time
    in ``seconds``."""
    while not stop.is_set():
        started = time.perf_counter()
        with transaction(factory) as session:
            session.add(
                Evaluation(
                    job_id=job_id,
                    seq=seq,
                    subnet_id=f"w{seq}",
                    arch=ARCH,
                    metrics={"accuracy": 0.9, "latency_ms": 1.0},
                    details=DETAILS,
                    feasible=True,
                    on_front=False,
                    seconds=0.5,
                    created_at=utcnow(),
                )
            )
        seconds.append(time.perf_counter() - started)
        seq += 1
        time.sleep(0.005)  # a worker measures between its commits


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"{statistics.median(ordered) * 1000:.1f} / {p99 * 1000:.1f} / "
        f"{ordered[-1] * 1000:.1f} ({len(ordered)})"
    )


def run(evaluations: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/hwnas.db"
        upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        fill(factory, evaluations)
        with transaction(factory) as session:
            writer_job = q.create_jobs(session, [(SPEC, None)])[0].id
        size = Path(folder, "hwnas.db").stat().st_size / 2**20
        phases: dict[str, list[float]] = {"alone": [], "during": []}
        stop = threading.Event()
        thread = threading.Thread(
            target=commits, args=(factory, writer_job, stop, phases["alone"], 0)
        )
        thread.start()
        time.sleep(3.0)
        stop.set()
        thread.join()
        stop = threading.Event()
        thread = threading.Thread(
            target=commits, args=(factory, writer_job, stop, phases["during"], 1_000_000)
        )
        thread.start()
        took: list[float] = []
        began = time.perf_counter()
        while not took or time.perf_counter() - began < 3.0:  # backups one after another
            copy = Path(folder) / f"backup{len(took)}.db"
            started = time.perf_counter()
            made = backup_sqlite(url, copy)
            took.append(time.perf_counter() - started)
            copy.unlink()
        stop.set()
        thread.join()
        engine.dispose()
        return (
            f"| {evaluations:,} | {size:.0f} MiB | {statistics.median(took):.2f} s "
            f"({len(took)}) | {made.evaluations:,} | {summary(phases['alone'])} | "
            f"{summary(phases['during'])} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluations", type=int, nargs="+", default=[200_000])
    args = parser.parse_args()
    print(
        "| evaluations | database | a backup took (backups) | rows in the last | writer's "
        "commit ms alone: median / p99 / worst (commits) | during the backup |"
    )
    print("|---:|---:|---:|---:|---|---|")
    for evaluations in args.evaluations:
        print(run(evaluations), flush=True)


if __name__ == "__main__":
    main()
