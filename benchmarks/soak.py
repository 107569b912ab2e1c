"""A long run of the embedded service: does its memory grow with the jobs it has served?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py --minutes 20

Starts ``hwnas serve`` (embedded mode: SQLite, the in-process worker; ``cpu-1t`` and the
NAS-Bench-201 devices) in a scratch folder and drives it through ``HwnasClient`` for
``--minutes``, in rounds. Each round submits ``--jobs-per-round`` short ``linas`` searches on
``nb201-cifar10`` / ``nb201-pixel3`` (a recorded table: the job's time is the service's own)
and, every ``--fmnist-every`` rounds, one ``fmnist-ofa-cnn`` search on ``cpu-1t`` (PyTorch:
extraction, evaluation, timing) whose best sub-network is downloaded as ONNX, TorchScript
(traced in a child process) and a state dict; it waits for each job, reads its front, a
page of its evaluations and the job listing, and deletes the jobs of the round before
last (their rows and exported files). The server process's resident memory (``/proc``) is
sampled every ``--sample-s`` seconds.

Prints a Markdown table: per window of the run, the jobs served so far and the memory in
it; then the growth from the first window, and from the middle one (the first half's last:
warm by then, allocator arenas grown to their working size), to the last, per 1,000 jobs,
and every request that failed. A service that keeps something per job or per download
shows a slope; one that does not, a flat line once warm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from api.client import ClientError, HwnasClient  # noqa: E402


def _rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` (KiB), 0 once it is gone. Its children (a
    TorchScript export's, a timing child) live for one file or one job, and are not
    counted: what a long run keeps is the server's own."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


@dataclass
class Sampler:
    """The server's memory every ``every`` seconds, with the jobs served by then."""

    pid: int
    every: float
    served: list[int] = field(default_factory=lambda: [0])
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (s, jobs, KiB)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        started = time.monotonic()

        def run() -> None:
            while not self._stop.wait(self.every):
                self.samples.append(
                    (time.monotonic() - started, self.served[0], _rss_kib(self.pid))
                )

        threading.Thread(target=run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def _search(supernet: str, device: str, seed: int, budget: int) -> dict[str, object]:
    return {
        "supernet": supernet,
        "device": device,
        "objectives": {"accuracy": "max", "latency_ms": "min"},
        "budget": {"evaluations": budget},
        "strategy": "linas",
        "seed": seed,
    }


def drive(client: HwnasClient, args: argparse.Namespace, sampler: Sampler, out: Path) -> list[str]:
    """Rounds of jobs until ``--minutes`` have passed; the requests that failed."""
    failed: list[str] = []
    deadline = time.monotonic() + 60 * args.minutes
    rounds: list[list[str]] = []
    seed = 0
    sink = open(os.devnull, "w")  # noqa: SIM115 - the wait's progress bars
    while time.monotonic() < deadline:
        specs = [_search("nb201-cifar10", "nb201-pixel3", seed + k, args.nb201_budget)
                 for k in range(args.jobs_per_round)]  # fmt: skip
        fmnist = len(rounds) % args.fmnist_every == 0
        if fmnist:
            specs.append(_search("fmnist-ofa-cnn", "cpu-1t", seed, args.fmnist_budget))
        seed += len(specs)
        ids = []
        for spec in specs:
            try:
                ids.append(client.submit(spec)["id"])
            except ClientError as exc:
                failed.append(f"submit: {exc}")
        for job_id in ids:
            try:
                job = client.wait(job_id, poll_s=0.2, out=sink)
                sampler.served[0] += 1  # served, whatever came of it
                if job["status"] != "succeeded":
                    failed.append(f"job {job_id}: {job['status']} {job.get('error')}")
                    continue
                front = client.pareto(job_id)["data"]
                client.evaluations(job_id, limit=50)
                if fmnist and front and job_id == ids[-1]:
                    best = max(front, key=lambda p: p["metrics"]["accuracy"])
                    for fmt in ("onnx", "torchscript", "state_dict"):
                        client.download(job_id, best["subnet_id"], fmt, out)
            except ClientError as exc:
                failed.append(f"job {job_id}: {exc}")
        client.jobs(limit=50)
        rounds.append(ids)
        if len(rounds) >= 3:  # the round before last: ended, nobody reads it now
            for job_id in rounds[-3]:
                try:
                    client.delete(job_id)
                except ClientError as exc:
                    failed.append(f"delete {job_id}: {exc}")
        for leftover in out.iterdir():
            leftover.unlink()
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--jobs-per-round", type=int, default=10)
    parser.add_argument("--nb201-budget", type=int, default=15)
    parser.add_argument("--fmnist-every", type=int, default=5)
    parser.add_argument("--fmnist-budget", type=int, default=4)
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        env = {
            **os.environ,
            "HWNAS_DATABASE_URL": f"sqlite:///{root}/hwnas.db",
            "HWNAS_DATA_DIR": str(root / "var"),
            "HWNAS_BROKER_URL": "",
            "HWNAS_API_KEYS": "",
            "HWNAS_ACCESS_LOG": "false",
        }
        log = (root / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(args.port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        client = HwnasClient(f"http://127.0.0.1:{args.port}", timeout=60)
        try:
            for _ in range(300):
                try:
                    client.jobs(limit=1)
                    break
                except ClientError:
                    time.sleep(0.2)
            sampler = Sampler(server.pid, args.sample_s)
            sampler.start()
            (root / "out").mkdir()
            started = time.monotonic()
            failed = drive(client, args, sampler, root / "out")
            wall = time.monotonic() - started
            sampler.stop()
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=60)
            log.close()
        report(args, sampler.samples, failed, wall)
        if failed:
            print("\nserver log, last lines:\n" + "\n".join(
                (root / "server.log").read_text(errors="replace").splitlines()[-20:]))  # fmt: skip


def report(
    args: argparse.Namespace, samples: list[tuple[float, int, int]], failed: list[str], wall: float
) -> None:
    jobs = samples[-1][1] if samples else 0
    print(f"{jobs} jobs in {wall / 60:.1f} min ({args.jobs_per_round} nb201 linas jobs of "
          f"{args.nb201_budget} a round, an fmnist-ofa-cnn job of {args.fmnist_budget} and its "
          f"3 downloads every {args.fmnist_every} rounds); server memory sampled every "
          f"{args.sample_s:g} s\n")  # fmt: skip
    print("| window ends (min) | jobs served | server RSS, MiB (median of the window) | max |")
    print("|---:|---:|---:|---:|")
    n = min(args.windows, len(samples))  # as equal as they divide, the longer ones first
    size, more = divmod(len(samples), n) if n else (0, 0)
    ends = [(k + 1) * size + min(k + 1, more) for k in range(n)]
    windows = [samples[start:end] for start, end in zip([0, *ends], ends, strict=False)]
    for window in windows:
        rss = [kib / 1024 for _, _, kib in window]
        print(f"| {window[-1][0] / 60:.1f} | {window[-1][1]} | {statistics.median(rss):.0f} | "
              f"{max(rss):.0f} |")  # fmt: skip
    if len(windows) >= 2:
        print()
        for said, start in (("the first window", 0), ("the middle", len(windows) // 2 - 1)):
            first, last = windows[start], windows[-1]
            grown = statistics.median(k for *_, k in last) - statistics.median(k for *_, k in first)
            served = last[-1][1] - first[-1][1]
            per = grown / 1024 / served * 1000 if served else float("nan")
            print(f"from {said} to the last: {grown / 1024:+.1f} MiB over {served} jobs "
                  f"({per:+.1f} MiB per 1,000 jobs)")  # fmt: skip
    print(f"requests or jobs that failed: {len(failed)}")
    for line in failed[:20]:
        print(f"- {line}")


if __name__ == "__main__":
    main()
