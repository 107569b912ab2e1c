"""Warm start through the service: a second job on the same supernet and device.

    python benchmarks/warm_start.py [--devices pixel3 fpga ...] [--seeds 3] [--prior 100]
                                    [--new 10 25] [--strategy linas]

Everything goes through the real embedded service (HTTP API in-process, SQLite, the job
runner) on the recorded NAS-Bench-201 supernet (cifar10), so the figures include what the
runner does with stored evaluations. Per device and seed, in a fresh database each:
- `cold`: one job of `--prior` new measurements (seed s), and one of each `--new` budget,
  nothing to reuse: what the job gets on its own;
- `warm`: an earlier job of `--prior` measurements (seed s + 1000) by "another user" (scored
  alone too), then the job under test with warm start on and `--new` new measurements
  (seed s).
The score is the hypervolume of the job's evaluations (reused + new) divided by that of the
whole table, with the tight and worst-corner references of benchmarks/search_quality.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from api.app import create_app  # noqa: E402
from benchmarks.search_quality import (  # noqa: E402
    DEFAULT_DATA,
    SENSES,
    _front,
    load_table,
    profile_id,
    references,
)
from core.settings import Settings  # noqa: E402
from search.pareto import hypervolume  # noqa: E402


def run_job(client: TestClient, spec: dict[str, Any]) -> dict[str, Any]:
    job = client.post("/v1/jobs", json=spec).json()
    while job["status"] not in {"succeeded", "failed", "cancelled"}:
        job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    return job


def points(client: TestClient, job_id: str) -> np.ndarray:
    rows, offset = [], 0
    while True:
        page = client.get(
            f"/v1/jobs/{job_id}/evaluations", params={"offset": offset, "limit": 500}
        ).json()
        rows += page["data"]
        offset += len(page["data"])
        if offset >= page["count"]:
            break
    return np.array([(e["metrics"]["accuracy"], e["metrics"]["latency_ms"]) for e in rows])


def service(tmp: Path) -> TestClient:
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'hwnas.db'}",
        data_dir=tmp / "data",
        broker_url="",
        embedded_devices="",
    )
    return TestClient(create_app(settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--devices",
        nargs="+",
        default=["1080ti_1", "gold_6226", "pixel3", "raspi4", "fpga", "eyeriss"],
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--prior", type=int, default=100)
    parser.add_argument("--new", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--strategy", default="linas")
    args = parser.parse_args()
    table = load_table(args.data, "cifar10", args.devices)
    scores: dict[str, list[dict[str, float]]] = {}
    for device in args.devices:
        refs = references(table.accuracy, table.latency[device])
        true = {name: hypervolume(_front(table, device), SENSES, ref) for name, ref in refs.items()}

        def score(found: np.ndarray) -> dict[str, float]:
            return {n: hypervolume(found, SENSES, r) / true[n] for n, r in refs.items()}  # noqa: B023

        for seed in range(args.seeds):
            spec = {
                "supernet": "nb201-cifar10",
                "device": profile_id(device),
                "objectives": {"accuracy": "max", "latency_ms": "min"},
                "strategy": args.strategy,
            }
            with tempfile.TemporaryDirectory() as tmp, service(Path(tmp)) as client:
                cold = run_job(client, dict(spec, seed=seed, budget={"evaluations": args.prior}))
                scores.setdefault(f"cold, {args.prior} new", []).append(
                    score(points(client, cold["id"]))
                )
            for new in args.new:
                with tempfile.TemporaryDirectory() as tmp, service(Path(tmp)) as client:
                    alone = run_job(client, dict(spec, seed=seed, budget={"evaluations": new}))
                    scores.setdefault(f"cold, {new} new", []).append(
                        score(points(client, alone["id"]))
                    )
                with tempfile.TemporaryDirectory() as tmp, service(Path(tmp)) as client:
                    prior_spec = dict(spec, seed=seed + 1000, budget={"evaluations": args.prior})
                    prior = run_job(client, prior_spec)
                    scores.setdefault(f"the earlier job alone, {args.prior} new", []).append(
                        score(points(client, prior["id"]))
                    )
                    warm = run_job(client, dict(spec, seed=seed, budget={"evaluations": new}))
                    assert warm["progress"]["evaluations_reused"] == args.prior, warm
                    assert warm["progress"]["evaluations_done"] == new, warm
                    scores.setdefault(f"warm, {args.prior} reused + {new} new", []).append(
                        score(points(client, warm["id"]))
                    )
            print(f"{device} seed {seed} done", file=sys.stderr)
    print(
        f"strategy {args.strategy}; NB201 cifar10; devices {', '.join(args.devices)}; "
        f"{args.seeds} seeds; mean over devices x seeds"
    )
    print("| job | runs | tight HV ratio | worst-corner HV ratio |")
    print("|---|---|---|---|")
    for name, runs in scores.items():
        tight = statistics.mean(r["tight"] for r in runs)
        worst = statistics.mean(r["worst"] for r in runs)
        print(f"| {name} | {len(runs)} | {tight:.3f} | {worst:.3f} |")


if __name__ == "__main__":
    main()
