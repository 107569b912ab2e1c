"""Latency repeatability: the same sub-networks measured in separate runs of the protocol.

    python benchmarks/latency_repeatability.py [--device cpu-1t] [--runs 10]

For each of three sub-networks of the built-in supernet (smallest, a middle one, largest),
runs ``measure_latency`` ``--runs`` times (each run: fresh warm-up, its own stopping rule)
and reports the coefficient of variation of the run medians, with the median IQR and
repeats per run. Also the fidelity check: the same sub-network exported to TorchScript and
to ONNX, loaded back and measured with the same protocol, relative to the in-memory number.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from hardware_profiles import get_profile, measure_latency
from models.export import export_subnet
from models.fmnist_cnn import largest_arch, smallest_arch
from models.registry import get_supernet

MIDDLE = "r24-k5e4.k3e4-k5e4.k3e2-k5e4.k7e2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-1t")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--runtime", default=None, help="override the profile's runtime")
    args = parser.parse_args()
    profile = get_profile(args.device)
    if args.runtime:
        profile = profile.model_copy(update={"runtime": args.runtime})
    supernet = get_supernet("fmnist-ofa-cnn")
    archs = [smallest_arch(), supernet.decode(MIDDLE), largest_arch()]
    print(
        f"device {profile.id} ({profile.runtime}, threads {profile.threads}, "
        f"batch {profile.batch_size}), {args.runs} runs each"
    )
    print(
        "| sub-network | median of medians ms | CV of run medians | median IQR ms "
        "| repeats/run | TorchScript file / in-memory | ONNX Runtime file / in-memory |"
    )
    print("|---|---|---|---|---|---|---|")
    for arch in archs:
        module = supernet.extract(arch)
        example = supernet.example_input(arch, profile.batch_size)
        runs = [measure_latency(module, example, profile) for _ in range(args.runs)]
        medians = [r.median_ms for r in runs]
        cv = statistics.stdev(medians) / statistics.mean(medians)
        ts_ratio, ort_ratio = fidelity(supernet, arch, profile, statistics.median(medians))
        print(
            f"| `{supernet.encode(arch)}` | {statistics.median(medians):.4f} | {cv:.2%} | "
            f"{statistics.median(r.iqr_ms for r in runs):.4f} | "
            f"{statistics.median(r.repeats for r in runs):.0f} | {ts_ratio} | {ort_ratio} |"
        )


def fidelity(supernet, arch, profile, reported_ms: float) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Exported files measured again: TorchScript under the profile, ONNX under ORT (CPU)."""
    example = supernet.example_input(arch, profile.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            scripted = torch.jit.load(
                str(export_subnet(supernet, arch, "torchscript", Path(tmp) / "s.pt"))
            )
            ts = f"{measure_latency(scripted, example, profile).median_ms / reported_ms:.3f}"
        except Exception as exc:  # e.g. a runtime that cannot take a TorchScript module
            ts = f"n/a ({type(exc).__name__})"
        if profile.kind != "cpu":
            return ts, "n/a (GPU profile)"
        ort_profile = profile.model_copy(update={"runtime": "onnxruntime"})
        ort = measure_latency(supernet.extract(arch), example, ort_profile).median_ms
    return ts, f"{ort / reported_ms:.3f}"


if __name__ == "__main__":
    main()
