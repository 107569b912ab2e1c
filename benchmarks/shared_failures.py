"""Jobs in a row on one pair, sharing their failed measurements: what re-trying one in 10 of
them, and those of jobs ``SHARED_JOBS`` or more jobs old, costs and recovers.

A warm start takes the sub-networks whose measurement failed in earlier jobs of the pair
(``store.prior.prior_failures``): never measured again, unless the job re-tries them
(``workers.failures.RETRY_ONE_IN``, session 26; ``SHARED_JOBS``, session 27). Here
``--jobs`` ``linas`` jobs of ``--budget`` new measurements each run one after another
through ``JobRunner.run`` on ``nb201-cifar10`` / ``nb201-pixel3`` (a recorded table: no
time in measurement), in a fresh SQLite database per configuration, with failures
injected into ``SubnetEvaluator.measure``:

- lasting: the costliest ``--lasting`` share of the cells by latency (out of the device's
  memory), in every job;
- passing: in the first job only, each other measurement fails with chance ``--passing`` (a
  device busy, a timing process killed), by a hash of the seed and the cell.

Per configuration (re-tries off as before session 26; one in 10 as in session 26; and one in
10 with those ``--shared-jobs`` or more jobs old) and seed: the failures the jobs
measured (lasting and passing), what the last job's warm start took from earlier jobs (how
many of them were passing failures, that is sub-networks it could have measured), the
re-tries the jobs made, and how many of them were of lasting failures (failed again).

    .venv/bin/python benchmarks/shared_failures.py --seeds 0 1 2 --jobs 12 --budget 30
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.schemas import JobCreate  # noqa: E402
from core.settings import Settings  # noqa: E402
from hardware_profiles.configured import device_profile  # noqa: E402
from models.registry import get_supernet  # noqa: E402
from store import evaluations as eq  # noqa: E402
from store import job_keys  # noqa: E402
from store import jobs as q  # noqa: E402
from store.db import make_engine, make_session_factory, transaction, upgrade  # noqa: E402
from store.tables import JobStatus  # noqa: E402
from workers import failures  # noqa: E402
from workers.evaluator import SubnetEvaluator  # noqa: E402
from workers.runner import JobRunner  # noqa: E402

SUPERNET, DEVICE = "nb201-cifar10", "nb201-pixel3"


@dataclass
class Tally:
    lasting: int = 0  # lasting failures measured
    passing: int = 0  # passing failures measured
    retried: int = 0  # re-tries made (measured again after failing in an earlier job)
    retried_lasting: int = 0  # ... of a lasting failure: failed again
    taken: int = 0  # the last job's failures taken from earlier jobs
    taken_passing: int = 0  # ... that were passing ones
    ended: int = 0  # jobs that failed


def _chance(*parts: object) -> float:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@contextmanager
def injected(lasting: set[str], passing: float, seed: int, phase: list[int]) -> Iterator[None]:
    """``SubnetEvaluator.measure`` failing for ``lasting`` cells always, and for others with
    chance ``passing`` while ``phase[0]`` is 0 (the first job)."""
    real = SubnetEvaluator.measure

    def measure(self: SubnetEvaluator, arch: Any, known: Any = None) -> Any:
        key = self.supernet.encode(arch)
        if key in lasting:
            raise MemoryError("out of device memory")
        if phase[0] == 0 and _chance(seed, key) < passing:
            raise RuntimeError("timing process killed")
        return real(self, arch, known)

    SubnetEvaluator.measure = measure  # type: ignore[method-assign]
    try:
        yield
    finally:
        SubnetEvaluator.measure = real  # type: ignore[method-assign]


#: The configurations compared: re-tries by hash on or off, and ``SHARED_JOBS`` (None: none
#: aged, as before session 27; ``--shared-jobs`` otherwise).
MODES = {"none": (False, None), "one in 10": (True, None), "one in 10, aged": (True, 0)}


def one(args: argparse.Namespace, seed: int, mode: str, lasting: set[str]) -> Tally:
    tally = Tally()
    phase = [0]
    real_retried, real_jobs = failures.retried, failures.SHARED_JOBS
    retry, aged = MODES[mode]
    if not retry:
        failures.retried = lambda job_id, subnet_id: False  # type: ignore[assignment]
    failures.SHARED_JOBS = args.shared_jobs if aged is not None else 10**9
    with tempfile.TemporaryDirectory() as scratch, injected(lasting, args.passing, seed, phase):
        settings = Settings(database_url=f"sqlite:///{scratch}/hwnas.db", data_dir=Path(scratch),
                            broker_url="", embedded_devices="none", api_keys="")  # fmt: skip
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        factory = make_session_factory(engine)
        runner = JobRunner(factory, settings, "bench-worker")
        try:
            for k in range(args.jobs):
                phase[0] = k
                body = JobCreate(
                    supernet=SUPERNET, device=DEVICE, strategy="linas", seed=1000 * seed + k,
                    budget={"evaluations": args.budget},
                ).model_dump(mode="json")  # fmt: skip
                with transaction(factory) as session:
                    job_id = q.create_jobs(session, [(body, None)])[0].id
                tally.ended += runner.run(job_id) != JobStatus.succeeded
                with transaction(factory) as session:
                    spec = q.get_job(session, job_id).spec
                for entry in spec.get(job_keys.FAILED, []):
                    if entry.get(job_keys.REUSED_FROM):
                        continue
                    if entry.get(job_keys.RETRIED_FROM):
                        tally.retried += 1
                        tally.retried_lasting += 1
                    elif entry["subnet_id"] in lasting:
                        tally.lasting += 1
                    else:
                        tally.passing += 1
                with transaction(factory) as session:  # re-tries that were measured
                    measured = {e.subnet_id for e in eq.list_evaluations(session, job_id)[0]}
                tally.retried += len(measured & set(spec.get(job_keys.RETRYING, {})))
                if k == args.jobs - 1:
                    taken = [e["subnet_id"] for e in spec.get(job_keys.FAILED, [])
                             if e.get(job_keys.REUSED_FROM)]  # fmt: skip
                    tally.taken = len(taken)
                    tally.taken_passing = sum(key not in lasting for key in taken)
        finally:
            engine.dispose()
            failures.retried = real_retried  # type: ignore[assignment]
            failures.SHARED_JOBS = real_jobs
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--lasting", type=float, default=0.1)
    parser.add_argument("--passing", type=float, default=0.2)
    parser.add_argument("--shared-jobs", type=int, default=failures.SHARED_JOBS)
    args = parser.parse_args()
    logging.getLogger("workers").setLevel(logging.ERROR)  # each skipped failure's traceback
    supernet = get_supernet(SUPERNET)
    column = device_profile(DEVICE).recorded_column
    keys = list(supernet.rows)
    latency = np.array([supernet.rows[key][column] for key in keys])
    cut = np.quantile(latency, 1.0 - args.lasting)
    lasting = {
        supernet.encode(supernet.decode(key))
        for key, value in zip(keys, latency, strict=True)
        if value > cut
    }
    print(f"{args.jobs} linas jobs of {args.budget} in a row on {SUPERNET} / {DEVICE}; "
          f"lasting failures: the costliest {args.lasting:.0%} ({len(lasting)} cells); "
          f"passing: {args.passing:.0%} of the first job's other measurements; aged: "
          f"{args.shared_jobs} jobs")  # fmt: skip
    print(
        "| re-tries | seed | lasting failures measured | passing failures measured | "
        "re-tries measured (of lasting failures) | last job's failures taken (passing "
        "among them) | jobs failed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for seed in args.seeds:
        for mode in MODES:
            t = one(args, seed, mode, lasting)
            print(f"| {mode} | {seed} | {t.lasting} | {t.passing} | "
                  f"{t.retried} ({t.retried_lasting}) | {t.taken} ({t.taken_passing}) | "
                  f"{t.ended} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
