"""`GET /v1/jobs`'s query (``store.jobs.list_jobs``) as jobs accumulate, with and without the
index on ``jobs.created_at`` (revision 0007).

A fresh SQLite database at the newest revision, filled with ``--jobs`` finished jobs (one
row each, no evaluations: the listing reads the jobs table only), then the first, middle and
last page of 50, the middle and last page again by ``after`` (the cursor of the job before
them: keyset pagination, session 26) and a ``status`` filter, each the median of
``--repeats`` calls; then the index is dropped and the same calls are timed again, in the
same process.

    .venv/bin/python benchmarks/job_listing.py --jobs 20000 200000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, text  # noqa: E402

from store.db import make_engine, make_session_factory, transaction, upgrade  # noqa: E402
from store.jobs import list_jobs, listing_cursor  # noqa: E402
from store.tables import Job, JobStatus, utcnow  # noqa: E402

PAGE = 50


def fill(url: str, count: int) -> None:
    engine = make_engine(url)
    start = utcnow() - timedelta(days=30)
    spec = {"supernet": "nb201-cifar10", "device": "nb201-pixel3", "budget": {"evaluations": 5}}
    with engine.begin() as connection:
        for first in range(0, count, 10_000):
            rows = [
                {
                    "id": uuid.uuid4().hex,
                    "spec": spec,
                    "supernet": "nb201-cifar10",
                    "device": "nb201-pixel3",
                    "strategy": "random",
                    "seed": 0,
                    "budget": 5,
                    "status": JobStatus.succeeded if k % 10 else JobStatus.failed,
                    "created_at": start + timedelta(seconds=k),
                    "finished_at": start + timedelta(seconds=k + 1),
                }
                for k in range(first, min(first + 10_000, count))
            ]
            connection.execute(insert(Job), rows)
    engine.dispose()


def timings(url: str, count: int, repeats: int) -> dict[str, float]:
    factory = make_session_factory(make_engine(url))
    pages = {"first page": 0, "middle page": count // 2, "last page": count - PAGE}
    with transaction(factory) as session:  # the cursors of the jobs before those pages
        cursors = {
            f"{name} by after": listing_cursor(list_jobs(session, offset=at - 1, limit=1)[0][0])
            for name, at in pages.items() if at > 0
        }  # fmt: skip
    results = {}
    for name, where in [*pages.items(), *cursors.items(), ("status=failed, first page", -1)]:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            with transaction(factory) as session:
                if isinstance(where, str):
                    rows, _ = list_jobs(session, offset=0, limit=PAGE, after=where)
                elif where < 0:
                    rows, _ = list_jobs(session, offset=0, limit=PAGE, status=JobStatus.failed)
                else:
                    rows, _ = list_jobs(session, offset=where, limit=PAGE)
            samples.append(time.perf_counter() - started)
            assert len(rows) == PAGE
        results[name] = 1000 * statistics.median(samples)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print("| jobs | query | with the index (ms) | without (ms) |")
    print("|---:|---|---:|---:|")
    for count in args.jobs:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/jobs.db"
            upgrade(url)
            fill(url, count)
            indexed = timings(url, count, args.repeats)
            engine = make_engine(url)
            with engine.begin() as connection:
                connection.execute(text("DROP INDEX IF EXISTS ix_jobs_created_at"))
            engine.dispose()
            bare = timings(url, count, args.repeats)
        for name in indexed:
            print(f"| {count:,} | {name} | {indexed[name]:.1f} | {bare[name]:.1f} |")


if __name__ == "__main__":
    main()
