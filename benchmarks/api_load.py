"""API under load: hwnas vs bare apps, same machine, same uvicorn, same load tool, same run.

    python benchmarks/api_load.py [--mode embedded|distributed] [--connections 100]
                                  [--seconds 5] [--rounds 3] [--processes 1] [--access-log]

Starts three servers side by side under the same uvicorn settings:
- hwnas (`hwnas serve`), in the embedded mode (SQLite; jobs for a device this server does
  not serve, so no search competes for the CPU) or the distributed mode (a scratch
  PostgreSQL database and Redis db; POST publishes each job to its device's Celery queue,
  where no worker consumes it);
- the bare baselines of `benchmarks/bare_app.py`: a raw ASGI callable and a FastAPI app
  with the same two routes answering fixed objects.
wrk (Debian package `wrk`) drives GET of one job and POST of new jobs with 100 concurrent
connections, closed-loop (each connection sends its next request when the last returns, so
p99 is queueing at saturation). The servers take turns for `--rounds` rounds, so a burst of
other load on the machine hits all of them; the table shows the median round. wrk shares
the cores with the server it loads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import scratch_postgres, scratch_redis  # noqa: E402
from core.settings import Settings  # noqa: E402

POST_LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""
# 100 clients mixing the two: every 5th request of a connection is a POST, the rest GETs.
MIX_LUA = """local n = 0
request = function()
  n = n + 1
  if n % 5 == 0 then
    return wrk.format("POST", "/v1/jobs", {{["Content-Type"] = "application/json"}}, '{body}')
  end
  return wrk.format("GET", "/v1/jobs/{job}")
end
"""
# The same mix from clients that wait a think time between requests (wrk's delay hook):
# 100 pollers, not 100 clients hammering; p99 is then service time, not queueing.
PACED_LUA = (
    MIX_LUA
    + """delay = function()
  return {think_ms}
end
"""
)
ENDPOINTS = {
    "GET": "GET /v1/jobs/{id}",
    "POST": "POST /v1/jobs",
    "MIX": "4 GET : 1 POST",
    "PACED": "4 GET : 1 POST, {think_ms} ms think time",
}
SPEC = {"supernet": "fmnist-ofa-cnn", "device": "cpu-all", "budget": {"evaluations": 10}}
ROOT = Path(__file__).resolve().parents[1]


def serve(args: list[str], env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(url)
            return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{args} did not start")


@contextmanager
def running(args: list[str], env: dict[str, str], url: str) -> Any:
    process = serve(args, env, url)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def wrk(url: str, connections: int, seconds: int, script: Path | None) -> dict[str, Any]:
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
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "none",
    }


def uvicorn_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--workers", str(args.processes), "--log-level", "warning", "--loop", args.loop]
    return flags + ([] if args.access_log else ["--no-access-log"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "distributed"], default="embedded")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1, help="uvicorn processes, each app")
    parser.add_argument("--access-log", action="store_true", help="uvicorn's access log on")
    parser.add_argument("--think-ms", type=int, default=100, help="paced clients' pause")
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="every server's loop (auto: hwnas's default for that many processes)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error(
            "needs wrk (the load tool) on PATH: Debian's package `wrk` (apt-get install wrk)"
        )
    args.loop = Settings(api_loop=args.loop, api_processes=args.processes).serve_loop
    if args.mode == "embedded" and args.processes > 1:
        parser.error("--processes > 1 needs --mode distributed (see HWNAS_API_PROCESSES)")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        post_lua = Path(tmp) / "post.lua"
        post_lua.write_text(POST_LUA.format(body=json.dumps(SPEC)))
        env = {
            **os.environ,
            "HWNAS_DATA_DIR": tmp,
            "HWNAS_EMBEDDED_DEVICES": "cpu-1t",
            "HWNAS_API_PROCESSES": str(args.processes),
            "HWNAS_API_KEYS": "",  # its clients send no key (keys cost ~1 us a request)
            "HWNAS_ACCESS_LOG": str(args.access_log).lower(),
            "HWNAS_API_LOOP": args.loop,
            "PYTHONPATH": str(ROOT),
        }
        if args.mode == "embedded":
            env |= {"HWNAS_DATABASE_URL": f"sqlite:///{tmp}/load.db", "HWNAS_BROKER_URL": ""}
        else:
            env["HWNAS_DATABASE_URL"] = stack.enter_context(scratch_postgres())
            env["HWNAS_BROKER_URL"] = scratch_redis()
            subprocess.run([sys.executable, "-m", "api.cli", "db-upgrade"], env=env, check=True)
        uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT), *uvicorn_flags(args)]
        stack.enter_context(
            running(
                [sys.executable, "-m", "api.cli", "serve", "--port", "8781"],
                env,
                "http://127.0.0.1:8781/healthz",
            )
        )
        stack.enter_context(
            running(
                [*uvicorn, "benchmarks.bare_app:app", "--port", "8782"],
                env,
                "http://127.0.0.1:8782/",
            )
        )
        stack.enter_context(
            running(
                [*uvicorn, "benchmarks.bare_app:fastapi_app", "--port", "8783"],
                env,
                "http://127.0.0.1:8783/docs",
            )
        )
        job = httpx.post("http://127.0.0.1:8781/v1/jobs", json=SPEC).json()["id"]
        mix_lua = Path(tmp) / "mix.lua"
        mix_lua.write_text(MIX_LUA.format(body=json.dumps(SPEC), job=job))
        paced_lua = Path(tmp) / "paced.lua"
        paced_lua.write_text(
            PACED_LUA.format(body=json.dumps(SPEC), job=job, think_ms=args.think_ms)
        )
        scripts = {"GET": None, "POST": post_lua, "MIX": mix_lua, "PACED": paced_lua}
        targets = {
            "hwnas": "http://127.0.0.1:8781",
            "bare ASGI": "http://127.0.0.1:8782",
            "bare FastAPI": "http://127.0.0.1:8783",
        }
        rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for name, base in targets.items():
                for method, script in scripts.items():
                    url = f"{base}/v1/jobs/{job}" if method == "GET" else f"{base}/v1/jobs"
                    result = wrk(url, args.connections, args.seconds, script)
                    rounds.setdefault((name, method), []).append(result)
        if args.mode == "distributed":  # leave nothing queued in the scratch Redis db
            import redis

            redis.Redis.from_url(env["HWNAS_BROKER_URL"]).flushdb()
    report(rounds, args)


def report(rounds: dict[tuple[str, str], list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def median(name: str, method: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[(name, method)])

    print(
        f"mode {args.mode}; wrk -t2 -c{args.connections} -d{args.seconds}s x {args.rounds} "
        f"rounds (medians); uvicorn processes {args.processes}, loop {args.loop}, access log "
        f"{'on' if args.access_log else 'off'}"
    )
    print(
        "| server | load | req/s | vs bare ASGI | vs bare FastAPI | p99 ms "
        "| non-2xx (all rounds) | socket errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (name, method), results in rounds.items():
        rps = median(name, method, "rps")
        asgi = median("bare ASGI", method, "rps")
        fastapi = median("bare FastAPI", method, "rps")
        endpoint = ENDPOINTS[method].replace("{think_ms}", str(args.think_ms))
        errors = sum(r["errors"] for r in results)
        sockets = "; ".join(sorted({r["socket_errors"] for r in results}))
        print(
            f"| {name} | {endpoint} | {rps:.0f} | {rps / asgi:.0%} | {rps / fastapi:.0%} "
            f"| {median(name, method, 'p99_ms'):.1f} | {errors} | {sockets} |"
        )


if __name__ == "__main__":
    main()
