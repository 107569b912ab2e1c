"""The evaluations table's slow reads at scale on PostgreSQL, each as it was before session
33 and as it is now, side by side in one run (scale audit 33).

A throw-away PostgreSQL database at the newest revision is filled by SQL: an "old" pair
(supernet on device ``old-device``: ``--old-jobs`` jobs of 200 measurements, the first
written), then a busy pair (``--busy-jobs`` jobs of 200 measurements, written after) and
one job of ``--big`` measurements. Then, each the median of ``--repeats`` runs:

- a warm start's read of the old pair (``store.prior.prior_evaluations``, limit 2,000):
  the one query over all the pair's jobs, newest row first (before), against reading the
  jobs 100 at a time (now);
- ``prior_failures``' look-up of 100 sub-networks among the pair's originals, without
  and with ``ix_evaluations_subnet_original`` (dropped in a transaction rolled back);
- marking the big job's front of 12 (``set_front``): every row written (before) against
  the rows whose flag changes (now), each in a transaction rolled back;
- the last page of 100 of the big job: OFFSET (before) against ``seq >=`` (now);
- the big job's stored front, without and with ``ix_evaluations_job_front``;
- the big job's current front as a poll of it running computes it after one more
  evaluation: from every row (before), against the front so far and the new row
  (``store.current_front``, session 34).

    .venv/bin/python benchmarks/evaluations_at_scale.py --old-jobs 300 --busy-jobs 4000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Connection, false, select, text, update  # noqa: E402

from benchmarks.common import scratch_postgres  # noqa: E402
from search import feasible_front  # noqa: E402
from store import evaluations as eq  # noqa: E402
from store import prior as pq  # noqa: E402
from store.current_front import CurrentFronts  # noqa: E402
from store.db import make_engine, make_session_factory, upgrade  # noqa: E402
from store.tables import Evaluation, JobStatus, utcnow  # noqa: E402

SUPERNET = "nb201-cifar10"
PER_JOB = 200

_JOBS = """
INSERT INTO jobs (id, kind, supernet, device, strategy, seed, budget, spec, status,
  evaluations_done, evaluations_reused, front_size, cancel_requested, attempts, created_at,
  finished_at, eval_seconds, run_seconds, submitted_by)
SELECT CAST(:prefix AS text) || g, 'search', CAST(:supernet AS text),
  CAST(:device AS text), 'random', g, CAST(:per_job AS integer),
  json_build_object('supernet', CAST(:supernet AS text), 'device', CAST(:device AS text),
                    'strategy', 'random', 'seed', g,
                    'budget', json_build_object('evaluations', CAST(:per_job AS integer))),
  'succeeded', CAST(:per_job AS integer), 0, 0, false, 1,
  now() - interval '300 days' + CAST(:day AS integer) * interval '1 day' + g * interval '1 s',
  now() - interval '300 days' + CAST(:day AS integer) * interval '1 day' + g * interval '1 s',
  0, 0, ''
FROM generate_series(1, CAST(:jobs AS integer)) AS g
"""
_EVALUATIONS = """
INSERT INTO evaluations (job_id, seq, subnet_id, arch, metrics, details, feasible, on_front,
  reused, seconds, created_at)
SELECT CAST(:prefix AS text) || j, s, 's' || ((j * 7919 + CAST(s AS bigint) * 104729) % 15625)
  || CASE WHEN s >= 15625 THEN '-' || (s / 15625) ELSE '' END,
  json_build_object('cells', j * 1000 + s), json_build_object('accuracy', random(),
  'latency_ms', random()), json_build_object('latency', json_build_object('median_ms',
  random(), 'repeats', 30), 'worker', 'bench'), true, false, false, 0.1, now()
FROM generate_series(1, CAST(:jobs AS integer)) AS j,
  generate_series(0, CAST(:per_job AS integer) - 1) AS s
"""


def fill(
    connection: Connection, prefix: str, device: str, jobs: int, per_job: int, day: int
) -> None:
    values = {"prefix": prefix, "device": device, "jobs": jobs, "per_job": per_job,
              "supernet": SUPERNET, "day": day}  # fmt: skip
    connection.execute(text(_JOBS), values)
    connection.execute(text(_EVALUATIONS), values)


def timed(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def warm_start_before(session: Any, job_ids: list[str], limit: int) -> int:
    """The query of ``prior_evaluations`` before session 33."""
    query = (
        select(Evaluation)
        .where(Evaluation.reused.is_(False), Evaluation.job_id.in_(job_ids))
        .order_by(Evaluation.id.desc())
        .execution_options(yield_per=500)
    )
    found: dict[str, Evaluation] = {}
    read = session.scalars(query)
    for evaluation in read:
        found.setdefault(evaluation.subnet_id, evaluation)
        if len(found) >= limit:
            read.close()
            break
    return len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-jobs", type=int, default=300)
    parser.add_argument("--busy-jobs", type=int, default=4000)
    parser.add_argument("--big", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="leave the planner's statistics as autovacuum left them (as after a bulk load)",
    )
    args = parser.parse_args()
    with scratch_postgres() as url:
        upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        started = time.perf_counter()
        with engine.begin() as connection:
            fill(connection, "old", "old-device", args.old_jobs, PER_JOB, 0)
            fill(connection, "busy", "busy-device", args.busy_jobs, PER_JOB, 100)
            fill(connection, "big", "big-device", 1, args.big, 200)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE" if args.analyze else "VACUUM"))
            rows = connection.execute(text("SELECT count(*) FROM evaluations")).scalar_one()
        print(f"{rows:,} evaluations in {time.perf_counter() - started:.0f} s "
              f"(old pair {args.old_jobs} jobs, busy pair {args.busy_jobs}, big job "
              f"{args.big:,})\n")  # fmt: skip
        old_jobs = [f"old{g}" for g in range(args.old_jobs, 0, -1)]  # newest first
        results: list[tuple[str, float, float]] = []

        def now_warm() -> int:
            with factory() as session:
                return len(pq.prior_evaluations(
                    session, supernet=SUPERNET, device="old-device", validation_data=None,
                    exclude_job="none", limit=2000,
                ))  # fmt: skip

        def before_warm() -> int:
            with factory() as session:
                return warm_start_before(session, old_jobs, 2000)

        assert now_warm() == before_warm() == 2000
        before, now = timed(before_warm, args.repeats), timed(now_warm, args.repeats)
        results.append(("warm start of the old pair (2,000)", before, now))

        subnets = [f"s{k * 151 % 15625}" for k in range(100)]
        failures = (
            select(Evaluation.subnet_id, Evaluation.metrics, Evaluation.details)
            .where(Evaluation.reused.is_(False), Evaluation.subnet_id.in_(subnets))
            .where(Evaluation.job_id.in_(old_jobs))
        )

        def lookup(drop: bool) -> float:
            with engine.connect() as connection:
                if drop:
                    connection.execute(text("DROP INDEX ix_evaluations_subnet_original"))
                took = timed(lambda: connection.execute(failures).all(), args.repeats)
                connection.rollback()
            return took

        results.append(("prior_failures' look-up (100 sub-networks)", lookup(True), lookup(False)))

        big = "big1"
        with factory() as session:
            ids = [e.id for e in eq.list_evaluations(session, big, limit=12)[0]]

        def front(guarded: bool) -> float:
            def run() -> None:
                with factory() as session:
                    if guarded:
                        eq.set_front(session, big, ids)
                    else:
                        on_front = Evaluation.id.in_(ids) if ids else false()
                        session.execute(
                            update(Evaluation).where(Evaluation.job_id == big)
                            .values(on_front=on_front)
                        )  # fmt: skip
                    session.rollback()

            return timed(run, args.repeats)

        results.append(
            (f"set_front of a {args.big:,}-row job (12 on it)", front(False), front(True))
        )

        last = args.big - 100

        def page(seek: bool) -> float:
            query = select(Evaluation).where(Evaluation.job_id == big)
            if seek:
                query = query.where(Evaluation.seq >= last).order_by(Evaluation.seq).limit(100)
            else:
                query = query.order_by(Evaluation.seq).offset(last).limit(100)

            def run() -> None:
                with factory() as session:
                    assert len(list(session.scalars(query))) == 100

            return timed(run, args.repeats)

        results.append((f"last page of 100 of {args.big:,}", page(False), page(True)))

        with factory() as session:
            eq.set_front(session, big, ids)
            session.commit()

        def stored_front(drop: bool) -> float:
            query = (
                select(Evaluation)
                .where(Evaluation.job_id == big, Evaluation.on_front.is_(True))
                .order_by(Evaluation.seq)
            )
            with factory() as session:
                if drop:
                    session.execute(text("DROP INDEX ix_evaluations_job_front"))
                took = timed(lambda: list(session.scalars(query)), args.repeats)
                session.rollback()
            return took

        results.append((f"stored front of the {args.big:,}-row job", stored_front(True),
                        stored_front(False)))  # fmt: skip

        # a running job's /pareto after each new evaluation: its front from every row
        # (before) against the front so far and the rows since (store.current_front)
        running = SimpleNamespace(
            id=big, status=JobStatus.running, evaluations_reused=0, evaluations_done=args.big,
            spec={"objectives": {"accuracy": "max", "latency_ms": "min"}},
        )  # fmt: skip
        fronts = CurrentFronts()

        def poll(incremental: bool) -> float:
            def run() -> None:
                with factory.begin() as session:
                    seq = running.evaluations_done
                    metrics = {"accuracy": random.random(), "latency_ms": random.random()}
                    session.add(Evaluation(
                        job_id=big, seq=seq, subnet_id=f"x{seq}", arch={}, metrics=metrics,
                        details={}, feasible=True, on_front=False, seconds=0.1, created_at=utcnow(),
                    ))  # fmt: skip
                    session.flush()
                    running.evaluations_done += 1
                    if incremental:
                        fronts.ids(session, running)
                    else:
                        rows = eq.evaluation_metrics(session, big)
                        feasible_front([m for _, _, m in rows], running.spec["objectives"], {})

            return timed(run, args.repeats)

        with factory() as session:
            fronts.ids(session, running)  # the polls before
        results.append((f"running {args.big:,}-row job's front, one more row", poll(False),
                        poll(True)))  # fmt: skip
        engine.dispose()
    print(f"{'read':<48} {'before ms':>10} {'now ms':>10} {'ratio':>8}")
    for name, before, now in results:
        print(f"{name:<48} {before:>10.1f} {now:>10.2f} {before / now:>7.0f}x")


if __name__ == "__main__":
    main()
