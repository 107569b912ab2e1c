"""How long other requests wait while POSTs name a large image directory as validation_data.

Starts ``hwnas serve`` (embedded mode, a scratch SQLite file) from each checkout given, with a
data root holding ``--images`` small PNGs in 10 class folders. A poller asks for a job on the
event loop (``GET /v1/jobs/<id>``, 404) every 5 ms while ``--posts`` POSTs name that
directory; each POST is refused after the directory's check (the supernet reads tensor files
only), so no job runs. Reports the POSTs' mean time and the poller's waits.

    .venv/bin/python benchmarks/file_check_stall.py                  # this checkout
    .venv/bin/python benchmarks/file_check_stall.py --repos /tmp/old . --pairs 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

SPEC = {"supernet": "text-transformer-synth", "device": "cpu-1t",
        "objectives": {"latency_ms": "min"}, "validation_data": "imgs"}  # fmt: skip


def make_images(root: Path, count: int) -> None:
    image = Image.new("L", (28, 28))
    for n in range(count):
        folder = root / "imgs" / f"c{n % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{n}.png")


async def measure(base: str, posts: int) -> tuple[float, list[float], set[int]]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for _ in range(300):
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        waits: list[float] = []
        done = asyncio.Event()

        async def poll() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await client.get("/v1/jobs/none")
                waits.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)

        poller = asyncio.create_task(poll())
        await asyncio.sleep(0.3)
        started, codes = time.perf_counter(), set()
        for _ in range(posts):
            codes.add((await client.post("/v1/jobs", json=SPEC)).status_code)
        per_post = (time.perf_counter() - started) / posts
        done.set()
        await poller
    return per_post, sorted(waits), codes


def run(repo: Path, root: Path, scratch: Path, port: int, posts: int) -> str:
    env = dict(os.environ, HWNAS_DATABASE_URL=f"sqlite:///{scratch / f'{port}.db'}",
               HWNAS_DATA_ROOTS=str(root), HWNAS_DATA_DIR=str(scratch / str(port)),
               HWNAS_BROKER_URL="", HWNAS_API_KEYS="", HWNAS_MAX_DATA_IMAGES="1000000")  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
        cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        per_post, waits, codes = asyncio.run(measure(f"http://127.0.0.1:{port}", posts))
    finally:
        server.terminate()
        server.wait()
    p50, p99 = (waits[min(len(waits) - 1, int(q * len(waits)))] * 1000 for q in (0.5, 0.99))
    cells = [str(repo), str(sorted(codes)), f"{per_post * 1000:.0f}", str(len(waits)),
             f"{p50:.1f}", f"{p99:.0f}", f"{waits[-1] * 1000:.0f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", nargs="+", type=Path, default=[Path(".")])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--posts", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=1, help="rounds over all repos")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        root = scratch / "data"
        make_images(root, args.images)
        print(f"{args.images} images, {args.posts} POSTs naming them; poller every 5 ms")
        print("| checkout | POST codes | ms per POST | polls | poll p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|---|")
        port = 18400
        for _ in range(args.pairs):
            for repo in args.repos:
                port += 1
                print(run(repo.resolve(), root, scratch, port, args.posts), flush=True)


if __name__ == "__main__":
    main()
