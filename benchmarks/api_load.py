"""API under load: hwnas vs a bare uvicorn app, same machine, same run, same load tool.

    python benchmarks/api_load.py [--connections 100] [--seconds 10]

Starts `hwnas serve` (embedded mode, SQLite, jobs for a device no worker serves, so the
CPU goes to the API alone) and `uvicorn benchmarks.bare_app:app`, then drives each with wrk
(Debian package `wrk`): GET of one job, and POST of new jobs, 100 concurrent connections.
wrk is closed-loop: each connection sends its next request when the last one returns, so
p99 reflects queueing at saturation. Prints a Markdown table with ratios to the bare app.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

POST_LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""
SPEC = {"supernet": "fmnist-ofa-cnn", "device": "cpu-all", "budget": {"evaluations": 10}}


def serve(args: list[str], env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{args} did not start")


def wrk(url: str, connections: int, seconds: int, script: Path | None) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)],  # type: ignore[union-attr]
        "errors": float(errors.group(1)) if errors else 0.0,
        "socket_errors": socket_errors.group(1) if socket_errors else "none",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        post_lua = Path(tmp) / "post.lua"
        post_lua.write_text(POST_LUA.format(body=json.dumps(SPEC)))
        env = {
            **os.environ,
            "HWNAS_DATABASE_URL": f"sqlite:///{tmp}/load.db",
            "HWNAS_DATA_DIR": tmp,
            "HWNAS_BROKER_URL": "",
            "HWNAS_EMBEDDED_DEVICES": "cpu-1t",
        }
        results = {}
        ours = serve(
            [sys.executable, "-m", "api.cli", "serve", "--port", "8781"],
            env,
            "http://127.0.0.1:8781/healthz",
        )
        try:
            job = httpx.post("http://127.0.0.1:8781/v1/jobs", json=SPEC).json()["id"]
            results["hwnas GET /v1/jobs/{id}"] = wrk(
                f"http://127.0.0.1:8781/v1/jobs/{job}", args.connections, args.seconds, None
            )
            results["hwnas POST /v1/jobs"] = wrk(
                "http://127.0.0.1:8781/v1/jobs", args.connections, args.seconds, post_lua
            )
        finally:
            ours.terminate()
            ours.wait(timeout=60)
        bare = serve(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "benchmarks.bare_app:app",
                "--port",
                "8782",
                "--log-level",
                "warning",
                "--app-dir",
                str(root),
            ],
            env,
            "http://127.0.0.1:8782/",
        )
        try:
            results["bare GET"] = wrk(
                "http://127.0.0.1:8782/", args.connections, args.seconds, None
            )
            results["bare POST"] = wrk(
                "http://127.0.0.1:8782/", args.connections, args.seconds, post_lua
            )
        finally:
            bare.terminate()
            bare.wait(timeout=60)
    print(f"wrk -t2 -c{args.connections} -d{args.seconds}s, one uvicorn process each")
    print("| endpoint | req/s | ratio to bare | p99 ms | non-2xx | socket errors |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        base = results["bare POST" if "POST" in name else "bare GET"]["rps"]
        print(
            f"| {name} | {r['rps']:.0f} | {r['rps'] / base:.0%} | {r['p99_ms']:.1f} "
            f"| {r['errors']:.0f} | {r['socket_errors']} |"
        )


if __name__ == "__main__":
    main()
