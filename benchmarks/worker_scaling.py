"""Jobs per hour with 1, 2 and 4 Celery worker processes (distributed mode, real services).

    python benchmarks/worker_scaling.py [--workers 1 2 4] [--jobs 8] [--evaluations 20]
        [--delay-ms 50] [--strategy nsga2]

Every evaluation is a NAS-Bench-201 lookup on a recorded profile that pauses ``--delay-ms``
(a stand-in for a remote device), so the figure measures the system's own overhead (API,
queue, database writes, the search's ask/tell), not this 2-core CPU. Needs PostgreSQL and
Redis on 127.0.0.1 (scripts/start_services.sh). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import scratch_postgres, scratch_redis  # noqa: E402
from store.db import upgrade  # noqa: E402

PROFILE = """id: bench-remote
name: recorded pixel3 behind a {delay} ms link (benchmark stand-in)
kind: recorded
source: nb201
recorded_column: lat_ms_pixel3
simulated_delay_ms: {delay}
"""


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("API did not start")


def wait_workers(broker_url: str, n_workers: int, timeout_s: float = 120) -> None:
    """Until every worker answers a broadcast ping (started and consuming), so the timed
    part starts with all of them ready (a fixed sleep left one still booting at times)."""
    from workers.celery_app import make_celery

    app = make_celery(broker_url)
    try:
        deadline = time.monotonic() + timeout_s
        while len(app.control.ping(timeout=1.0) or []) < n_workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n_workers} workers did not all answer a ping")
    finally:
        app.close()
    time.sleep(1)  # let the start-up burst (imports, first queries) settle on the 2 cores


def run_once(n_workers: int, args: argparse.Namespace, tmp: Path) -> float:
    """Seconds from the first job's creation until every job has succeeded."""
    with scratch_postgres() as database_url:
        upgrade(database_url)
        profiles = tmp / "profiles"
        profiles.mkdir(exist_ok=True)
        (profiles / "bench-remote.yaml").write_text(PROFILE.format(delay=args.delay_ms))
        env = {
            **os.environ,
            "HWNAS_DATABASE_URL": database_url,
            "HWNAS_BROKER_URL": scratch_redis(),
            "HWNAS_AUTO_MIGRATE": "false",
            "HWNAS_PROFILE_DIRS": str(profiles),
            "HWNAS_API_KEYS": "",  # its clients send no key (keys cost ~1 us a request)
            "HWNAS_DATA_DIR": str(tmp / "data"),
        }
        port = 8765
        processes = [start(["serve", "--port", str(port)], env, tmp / "api.log")]
        processes += [
            start(
                [
                    "worker",
                    "--devices",
                    "bench-remote",
                    "--loglevel",
                    "warning",
                    "--name",
                    f"w{i}@%h",
                ],
                env,
                tmp / f"w{i}.log",
            )
            for i in range(n_workers)
        ]
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url)
            wait_workers(env["HWNAS_BROKER_URL"], n_workers)
            spec = {
                "supernet": "nb201-cifar10",
                "device": "bench-remote",
                "budget": {"evaluations": args.evaluations},
                "strategy": args.strategy,
                # every job measures its full budget: the figure is the system's throughput
                "warm_start": False,
            }
            # one keep-alive client: httpx.post/get build a client (and its TLS context,
            # ~40 ms of CPU) per call, which made the poller itself a CPU hog on 2 cores
            with httpx.Client(base_url=url) as client:
                ids = [
                    client.post("/v1/jobs", json=dict(spec, seed=i)).json()["id"]
                    for i in range(args.jobs)
                ]
                while True:
                    jobs = [client.get(f"/v1/jobs/{i}").json() for i in ids]
                    if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
                        break
                    time.sleep(0.1)
            assert all(j["status"] == "succeeded" for j in jobs), jobs
            # the service's own clock: first job stored -> last job finished (the poller's
            # 0.1 s granularity is not the system's)
            created = min(datetime.fromisoformat(j["created_at"]) for j in jobs)
            finished = max(datetime.fromisoformat(j["finished_at"]) for j in jobs)
            return (finished - created).total_seconds()
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--evaluations", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--strategy", default="nsga2")
    args = parser.parse_args()
    ideal = args.jobs * args.evaluations * args.delay_ms / 1000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            elapsed = run_once(n, args, Path(tmp))
            rows.append((n, elapsed))
            print(f"{n} worker(s): {elapsed:.1f} s", file=sys.stderr)
    base = rows[0][1]
    print(
        f"{args.jobs} jobs x {args.evaluations} evaluations x {args.delay_ms:g} ms, strategy "
        f"{args.strategy}; pure delay on one worker = {ideal:.1f} s"
    )
    print("| workers | wall s | jobs/hour | speed-up vs 1 | delay share of wall (per worker) |")
    print("|---|---|---|---|---|")
    for n, elapsed in rows:
        print(
            f"| {n} | {elapsed:.1f} | {3600 * args.jobs / elapsed:.0f} | {base / elapsed:.2f}x "
            f"| {ideal / n / elapsed:.0%} |"
        )


if __name__ == "__main__":
    main()
