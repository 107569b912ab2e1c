"""What a warm start's two store reads cost under the job's row lock, as jobs accumulate.

A warm start reads the other jobs of its pair twice: ``store.prior.prior_evaluations``
(their measurements) and ``prior_failures`` (their specs' failures). Each used to read and
compare every such job's spec; since session 26 the runner reads them once
(``store.prior.measuring_alike``) and gives both that list (``jobs=``). Both ways are timed
here side by side, alternating, in one fresh database holding ``--jobs`` search jobs of one
pair, each with ``--evaluations`` measurements and ``--failures`` failures in its spec:

    .venv/bin/python benchmarks/warm_start_reads.py --jobs 500 2000 --repeats 7
    .venv/bin/python benchmarks/warm_start_reads.py --jobs 2000 --postgres
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import scratch_postgres  # noqa: E402
from store import job_keys  # noqa: E402
from store import jobs as q  # noqa: E402
from store import prior as pq  # noqa: E402
from store.db import make_engine, make_session_factory, transaction, upgrade  # noqa: E402
from store.tables import Evaluation, utcnow  # noqa: E402

SPEC: dict[str, Any] = {
    "supernet": "nb201-cifar10", "device": "nb201-pixel3",
    "objectives": {"accuracy": "max", "latency_ms": "min"}, "constraints": {},
    "budget": {"evaluations": 20}, "strategy": "linas", "seed": 0,
}  # fmt: skip


def fill(factory: Any, jobs: int, evaluations: int, failures: int) -> str:
    """``jobs`` search jobs of the pair, and one more: the job warm-started (its id)."""
    failed = [
        {"subnet_id": f"f{i}", "error": "MemoryError: out", "anchor": False, "after": i}
        for i in range(failures)
    ]
    with transaction(factory) as session:
        rows = q.create_jobs(session, [({**SPEC, "seed": i, job_keys.FAILED: failed}, None)
                                       for i in range(jobs + 1)])  # fmt: skip
        now = utcnow()
        for n, row in enumerate(rows[:-1]):
            q.get_job(session, row.id).evaluations_done = evaluations
            session.add_all(
                Evaluation(
                    job_id=row.id, seq=k, subnet_id=f"s{n}-{k}", arch={},
                    metrics={"accuracy": 0.5, "latency_ms": 1.0}, details={}, feasible=True,
                    on_front=False, seconds=0.0, created_at=now,
                )
                for k in range(evaluations)
            )  # fmt: skip
        return rows[-1].id


def timed(factory: Any, job_id: str, once: bool) -> float:
    alike = {"supernet": SPEC["supernet"], "device": SPEC["device"], "validation_data": None,
             "measured_with": None, "exclude_job": job_id}  # fmt: skip
    with transaction(factory) as session:
        started = time.perf_counter()
        jobs = pq.measuring_alike(session, **alike) if once else None
        pq.prior_evaluations(session, **alike, limit=2000, jobs=jobs)
        pq.prior_failures(session, **alike, limit=50, jobs=jobs)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--evaluations", type=int, default=4)
    parser.add_argument("--failures", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--postgres", action="store_true", help="a scratch PostgreSQL database")
    args = parser.parse_args()
    print("| database | jobs of the pair | specs read twice: median s | once: median s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for jobs in args.jobs:
        with ExitStack() as stack:
            if args.postgres:
                url = stack.enter_context(scratch_postgres())
            else:
                url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/w.db"
            upgrade(url)
            engine = make_engine(url)
            stack.callback(engine.dispose)
            factory = make_session_factory(engine)
            job_id = fill(factory, jobs, args.evaluations, args.failures)
            times: dict[bool, list[float]] = {False: [], True: []}
            timed(factory, job_id, True)  # warm the caches
            for repeat in range(args.repeats):  # which goes first alternates
                for once in (False, True) if repeat % 2 else (True, False):
                    times[once].append(timed(factory, job_id, once))
            twice, once_ = (statistics.median(times[k]) for k in (False, True))
            name = "PostgreSQL" if args.postgres else "SQLite"
            print(f"| {name} | {jobs:,} | {twice:.3f} | {once_:.3f} | {once_ / twice:.2f} |")


if __name__ == "__main__":
    main()
