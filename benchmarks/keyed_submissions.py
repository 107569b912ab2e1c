"""What an Idempotency-Key costs a submission: keyed POSTs against the batched path.

    python benchmarks/keyed_submissions.py [--mode embedded|distributed] [--connections 50]
                                           [--seconds 5] [--rounds 3]

One `hwnas serve` (embedded: SQLite; distributed: a scratch PostgreSQL database and Redis
db, no worker consuming), jobs for a device it does not serve (no search competes for the
CPU). wrk drives three loads in turn, `--rounds` times (the table shows the median round):
- POST without a key: the group commit of `api.submissions` (a batch per write);
- POST with a new key each: one transaction per request (`store.jobs.create_job_once`);
- POST with one key: after the first, every request is a replay (a read and a compare).
A keyed submission is for a pipeline's retries, not for floods: this says how much of the
batched path's throughput a client gives up by sending keys.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.api_load import POST_LUA, ROOT, SPEC, running, wrk  # noqa: E402
from benchmarks.common import scratch_postgres, scratch_redis  # noqa: E402

# A new key per request: wrk's setup() numbers the threads, each counts its requests, and
# each wrk run has a prefix of its own (the same keys in the next round would be replays).
KEYED_LUA = """local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  local key = "{prefix}-" .. tid .. "-" .. n
  return wrk.format("POST", "/v1/jobs",
    {{["Content-Type"] = "application/json", ["Idempotency-Key"] = key}}, '{body}')
end
"""
REPLAY_LUA = POST_LUA + 'wrk.headers["Idempotency-Key"] = "bench-replayed"\n'
LOADS = {
    "no key (batched)": POST_LUA,
    "a new key each": KEYED_LUA,
    "one key (replays)": REPLAY_LUA,
}
PORT = 8784


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "distributed"], default="embedded")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("needs wrk (the load tool) on PATH: Debian's package `wrk`")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        env = {
            **os.environ,
            "HWNAS_DATA_DIR": tmp,
            "HWNAS_EMBEDDED_DEVICES": "cpu-1t",
            "HWNAS_API_KEYS": "",
            "PYTHONPATH": str(ROOT),
        }
        if args.mode == "embedded":
            env |= {"HWNAS_DATABASE_URL": f"sqlite:///{tmp}/keyed.db", "HWNAS_BROKER_URL": ""}
        else:
            env["HWNAS_DATABASE_URL"] = stack.enter_context(scratch_postgres())
            env["HWNAS_BROKER_URL"] = scratch_redis()
            subprocess.run([sys.executable, "-m", "api.cli", "db-upgrade"], env=env, check=True)
        base = f"http://127.0.0.1:{PORT}"
        stack.enter_context(
            running(
                [sys.executable, "-m", "api.cli", "serve", "--port", str(PORT)],
                env,
                f"{base}/healthz",
            )
        )
        rounds: dict[str, list[dict[str, Any]]] = {}
        for round_number in range(args.rounds):
            for k, (name, template) in enumerate(LOADS.items()):
                script = Path(tmp) / f"{round_number}-{k}.lua"
                prefix = f"bench-{round_number}"  # new keys each round; replays: one key
                script.write_text(template.format(body=json.dumps(SPEC), prefix=prefix))
                result = wrk(f"{base}/v1/jobs", args.connections, args.seconds, script)
                rounds.setdefault(name, []).append(result)
            if round_number == 0:
                stored = httpx.get(f"{base}/v1/jobs", params={"limit": 1}).json()["count"]
                print(f"jobs stored after round 1: {stored}", file=sys.stderr)
        if args.mode == "distributed":  # leave nothing queued in the scratch Redis db
            import redis

            redis.Redis.from_url(env["HWNAS_BROKER_URL"]).flushdb()
    report(rounds, args)


def report(rounds: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[name])

    print(
        f"mode {args.mode}; wrk -t2 -c{args.connections} -d{args.seconds}s x {args.rounds} "
        "rounds (medians), POST /v1/jobs"
    )
    print("| load | req/s | vs no key | p99 ms | non-2xx (all rounds) | socket errors |")
    print("|---|---|---|---|---|---|")
    batched = median("no key (batched)", "rps")
    for name, results in rounds.items():
        errors = sum(r["errors"] for r in results)
        sockets = "; ".join(sorted({r["socket_errors"] for r in results}))
        rps = median(name, "rps")
        print(
            f"| {name} | {rps:.0f} | {rps / batched:.0%} | {median(name, 'p99_ms'):.1f} "
            f"| {errors} | {sockets} |"
        )


if __name__ == "__main__":
    main()
