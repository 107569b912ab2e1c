"""Fidelity: the exported file of a Pareto point, measured again, against the reported latency.

    python benchmarks/latency_fidelity.py [--device cpu-ort] [--budget 6] [--seed 0]

Runs a real embedded job (the app with its in-process worker, SQLite in a temporary
directory) of ``fmnist-ofa-cnn`` on ``--device``, takes every point of its Pareto front,
downloads the exported file through the API and measures that file again with the same
profile and protocol: ONNX files under ONNX Runtime for an ``onnxruntime`` profile, TorchScript
files (``torch.jit.load``) for the PyTorch runtimes. Target (issue 6): within +-10 % of the
latency the job reported.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings
from hardware_profiles import HardwareProfile, get_profile, measure, measure_latency
from hardware_profiles.runners import _ort_options, device_lock, resolved_threads
from models.registry import get_supernet

SUPERNET = "fmnist-ofa-cnn"


def run_job(client: TestClient, device: str, budget: int, seed: int) -> dict[str, Any]:
    spec = {
        "supernet": SUPERNET,
        "device": device,
        "objectives": {"accuracy": "max", "latency_ms": "min"},
        "budget": {"evaluations": budget},
        "strategy": "nsga2",
        "seed": seed,
    }
    job = client.post("/v1/jobs", json=spec).json()
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1.0)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    if job["status"] != "succeeded":
        raise SystemExit(f"job ended {job['status']}: {job.get('error')}")
    return job


def measure_file(path: Path, example: torch.Tensor, profile: HardwareProfile) -> float:
    """Median latency (ms) of an exported file, by the profile's runtime and protocol."""
    if profile.runtime == "onnxruntime":
        return _measure_onnx(path, example, profile)
    loaded = torch.jit.load(str(path), map_location=profile.torch_device)
    return measure_latency(loaded, example, profile).median_ms


def _measure_onnx(path: Path, example: torch.Tensor, profile: HardwareProfile) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(path), _ort_options(profile), providers=["CPUExecutionProvider"]
    )
    binding = session.io_binding()
    feed = ort.OrtValue.ortvalue_from_numpy(example.numpy(), "cpu", 0)
    binding.bind_ortvalue_input(session.get_inputs()[0].name, feed)
    for output in session.get_outputs():
        binding.bind_output(output.name, "cpu", 0)
    threads = resolved_threads(profile) or 1
    with device_lock(profile.torch_device):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            stats = measure(lambda: session.run_with_iobinding(binding), profile.protocol)
        finally:
            torch.set_num_threads(previous)
    return stats.median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu-ort")
    parser.add_argument("--budget", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    profile = get_profile(args.device)
    fmt = "onnx" if profile.runtime == "onnxruntime" else "torchscript"
    supernet = get_supernet(SUPERNET)
    with tempfile.TemporaryDirectory(prefix="hwnas-fidelity-") as tmp:
        settings = Settings(
            database_url=f"sqlite:///{tmp}/hwnas.db", data_dir=Path(tmp) / "data",
            broker_url="", embedded_devices=args.device,
        )  # fmt: skip
        with TestClient(create_app(settings)) as client:
            started = time.perf_counter()
            job = run_job(client, args.device, args.budget, args.seed)
            front = client.get(f"/v1/jobs/{job['id']}/pareto").json()["data"]
            print(
                f"job {job['id']} on {args.device} ({profile.runtime}): {args.budget} "
                f"evaluations, {len(front)} Pareto points, {time.perf_counter() - started:.0f} s"
            )
            print(f"| sub-network | reported ms | {fmt} file ms | file / reported | within 10 % |")
            print("|---|---:|---:|---:|---|")
            for point in front:
                subnet_id = point["subnet_id"]
                url = f"/v1/jobs/{job['id']}/subnets/{subnet_id}/export"
                blob = client.get(url, params={"format": fmt}).content
                path = Path(tmp) / f"subnet.{fmt}"
                path.write_bytes(blob)
                example = supernet.example_input(supernet.decode(subnet_id), profile.batch_size)
                again = measure_file(path, example, profile)
                reported = point["metrics"]["latency_ms"]
                ratio = again / reported
                print(
                    f"| `{subnet_id}` | {reported:.4f} | {again:.4f} | {ratio:.3f} | "
                    f"{'yes' if abs(ratio - 1) <= 0.10 else 'no'} |"
                )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
