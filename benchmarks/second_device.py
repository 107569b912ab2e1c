"""A search on a second device: what taking the accuracy measured on the first one saves.

Per seed, in a fresh SQLite database: a `linas` job of ``--first`` evaluations of
``fmnist-ofa-cnn`` on ``cpu-1t`` (real measurements: accuracy on the shipped validation
data, latency timed here). Then, on two copies of that database, the same `linas` job of
``--second`` evaluations on ``--device``, warm-started (so hinted with the first job's
accuracies) both times:

- ``evaluated``: every accuracy evaluated again on the validation data (as before session
  21: ``SubnetEvaluator`` given no ``KnownQuality``);
- ``taken``: the accuracy of a sub-network the first job measured taken from it, the
  latency timed alone (``details.quality_from``).

The two run in turn, which first alternating with the seed. Reports each job's run
seconds, how many of its measurements took their accuracy, and the
median seconds of a measurement of each kind::

    .venv/bin/python benchmarks/second_device.py --seeds 0 1 2 3 --first 30 --second 20
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.schemas import JobCreate  # noqa: E402
from core.settings import Settings  # noqa: E402
from store import evaluations as eq  # noqa: E402
from store import job_keys  # noqa: E402
from store import jobs as q  # noqa: E402
from store.db import make_engine, make_session_factory, transaction, upgrade  # noqa: E402
from store.tables import JobStatus  # noqa: E402
from workers.evaluator import SubnetEvaluator  # noqa: E402
from workers.runner import JobRunner  # noqa: E402

SPEC = {"supernet": "fmnist-ofa-cnn", "objectives": {"accuracy": "max", "latency_ms": "min"},
        "strategy": "linas"}  # fmt: skip


def run_job(folder: Path, **spec: Any) -> dict[str, Any]:
    settings = Settings(database_url=f"sqlite:///{folder / 'hwnas.db'}", data_dir=folder,
                        broker_url="", embedded_devices="none", api_keys="")  # fmt: skip
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    body = JobCreate(**{**SPEC, **spec}).model_dump(mode="json")
    with transaction(factory) as session:
        job_id = q.create_jobs(session, [(body, None)])[0].id
    started = time.perf_counter()
    assert JobRunner(factory, settings, "bench").run(job_id) == JobStatus.succeeded
    seconds = time.perf_counter() - started
    with transaction(factory) as session:
        rows = [e for e in eq.list_evaluations(session, job_id)[0] if not e.reused]
        return {
            "seconds": seconds,
            "measured": len(rows),
            "taken": [e.seconds for e in rows if job_keys.QUALITY_FROM in e.details],
            "evaluated": [e.seconds for e in rows if job_keys.QUALITY_FROM not in e.details],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--first", type=int, default=30, help="evaluations on cpu-1t")
    parser.add_argument("--second", type=int, default=20, help="evaluations on --device")
    parser.add_argument("--device", default="cpu-ort")
    args = parser.parse_args()
    print("| seed | second job | run seconds | measurements | accuracy taken | "
          "median s (taken) | median s (evaluated) |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|")
    taking = SubnetEvaluator._taken
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as scratch:
            first = Path(scratch, "first")
            first.mkdir()
            run_job(first, device="cpu-1t", seed=seed, budget={"evaluations": args.first})
            modes = ("evaluated", "taken") if seed % 2 == 0 else ("taken", "evaluated")
            for mode in modes:  # alternated: one-time costs (a first ORT session) fall on both
                folder = Path(scratch, mode)
                shutil.copytree(first, folder)
                SubnetEvaluator._taken = (  # type: ignore[method-assign]
                    taking if mode == "taken" else lambda self, known: None
                )
                row = run_job(folder, device=args.device, seed=seed,
                              budget={"evaluations": args.second})  # fmt: skip
                taken, evaluated = row["taken"], row["evaluated"]
                print(
                    f"| {seed} | {mode} | {row['seconds']:.1f} | {row['measured']} | "
                    f"{len(taken)} | {_median(taken)} | {_median(evaluated)} |",
                    flush=True,
                )
        SubnetEvaluator._taken = taking  # type: ignore[method-assign]


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


if __name__ == "__main__":
    main()
