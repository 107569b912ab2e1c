"""Memory of a process timing many sub-networks on ``cpu-ts`` (TorchScript), in the
process itself (as before session 20) or in the timing child (``hardware_profiles.isolated``),
and whether the child's latencies agree with the in-process ones.

Each mode runs in a fresh process of its own (what torch keeps of a traced network is never
freed, so one mode would skew the other's memory): the process's RSS after 5 warm-up
timings and after ``--timings`` more, on seeded random sub-networks of ``fmnist-ofa-cnn``.
Then, in one process, the same sub-networks timed both ways, alternated per network, and the
ratio of the medians. With ``--exports N``, the same for TorchScript *exports* (the API's
downloads): N distinct files written in the process or each in a child of its own
(``run_once``), RSS growth and seconds per file.

    .venv/bin/python benchmarks/cpu_ts_memory.py --timings 120 --exports 30
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hardware_profiles.configured import device_profile  # noqa: E402
from hardware_profiles.isolated import _CHILDREN, close_children, rss_mb, run_once  # noqa: E402
from hardware_profiles.runners import _measure_here, device_lock, measure_latency  # noqa: E402
from models.export import export_subnet  # noqa: E402
from models.registry import get_supernet  # noqa: E402

WARMUP = 5


def archs(count: int, seed: int) -> list[dict[str, Any]]:
    net = get_supernet("fmnist-ofa-cnn")
    rng = random.Random(seed)
    return [net.canonical({g: rng.choice(c) for g, c in net.space().items()}) for _ in range(count)]


def time_here(arch: dict[str, Any]) -> float:
    net, profile = get_supernet("fmnist-ofa-cnn"), device_profile("cpu-ts")
    with device_lock(profile.torch_device):
        return _measure_here(net.extract(arch), net.example_input(arch), profile).median_ms


def time_isolated(arch: dict[str, Any]) -> float:
    net, profile = get_supernet("fmnist-ofa-cnn"), device_profile("cpu-ts")
    return measure_latency(net.extract(arch), net.example_input(arch), profile).median_ms


def memory(mode: str, timings: int, seed: int) -> dict[str, Any]:
    timed = time_here if mode == "here" else time_isolated
    sample = archs(WARMUP + timings, seed)
    for arch in sample[:WARMUP]:
        timed(arch)
    before, growth, seconds = _grown(timed, sample[WARMUP:])
    child = _CHILDREN.get("cpu")
    return {
        "mode": mode,
        "timings": timings,
        "rss_before_mb": before,
        "rss_growth_mb": growth,
        "child_rss_mb": child.rss_mb if child else None,
        "child_growth_mb": (child.rss_mb - (child.first_rss_mb or 0)) if child else None,
        "seconds": seconds,
    }


def _grown(step: Callable[[Any], Any], items: Sequence[Any]) -> tuple[float, float, float]:
    """``step`` on each item: the RSS before (MB), its growth (MB) and the seconds taken,
    garbage collected before and after."""
    gc.collect()
    before, started = rss_mb(), time.perf_counter()
    for item in items:
        step(item)
    gc.collect()
    return before, rss_mb() - before, time.perf_counter() - started


def exports(mode: str, count: int, seed: int) -> dict[str, Any]:
    """``count`` distinct TorchScript files, after one warm-up file of each format."""
    net = get_supernet("fmnist-ofa-cnn")
    isolate = run_once if mode == "export-child" else None
    sample = archs(count + 1, seed + 2)
    with tempfile.TemporaryDirectory() as folder:
        for fmt in ("state_dict", "torchscript"):
            export_subnet(net, sample[0], fmt, Path(folder, f"warm-{fmt}"), isolate=isolate)

        def export(item: tuple[int, dict[str, Any]]) -> None:
            index, arch = item
            export_subnet(net, arch, "torchscript", Path(folder, f"{index}.pt"), isolate=isolate)

        _, growth, seconds = _grown(export, list(enumerate(sample[1:])))
        return {"mode": mode, "exports": count, "rss_growth_mb": growth, "seconds": seconds / count}


def agreement(count: int, seed: int) -> dict[str, Any]:
    ratios = []
    for arch in archs(count, seed + 1):
        here, isolated = time_here(arch), time_isolated(arch)
        ratios.append(isolated / here)
    close_children()
    return {
        "networks": count,
        "median_ratio": statistics.median(ratios),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timings", type=int, default=120)
    parser.add_argument("--agreement", type=int, default=20, help="networks timed both ways")
    parser.add_argument("--exports", type=int, default=0, help="TorchScript exports each way")
    parser.add_argument("--seed", type=int, default=0)
    modes = ["here", "isolated", "agreement", "export-here", "export-child"]
    parser.add_argument("--mode", choices=modes, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "agreement":
        print(json.dumps(agreement(args.agreement, args.seed)))
        return
    if args.mode in ("export-here", "export-child"):
        print(json.dumps(exports(args.mode, args.exports, args.seed)))
        return
    if args.mode:
        print(json.dumps(memory(args.mode, args.timings, args.seed)))
        close_children()
        return
    rows = []
    for mode in modes[: 5 if args.exports else 3]:
        command = [sys.executable, __file__, "--mode", mode, "--timings", str(args.timings),
                   "--agreement", str(args.agreement), "--exports", str(args.exports),
                   "--seed", str(args.seed)]  # fmt: skip
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    here, isolated, agree = rows[:3]
    print("| timed | timings | process RSS growth | timing child's growth | wall time |")
    print("|---|---:|---:|---:|---:|")
    for row in (here, isolated):
        child = "-" if row["child_growth_mb"] is None else f"{row['child_growth_mb']:.0f} MB"
        print(
            f"| {'in the process' if row['mode'] == 'here' else 'in the timing child'} | "
            f"{row['timings']} | {row['rss_growth_mb']:.0f} MB | {child} | {row['seconds']:.1f} s |"
        )
    print(
        f"\nchild / in-process latency over {agree['networks']} networks, alternated: median "
        f"{agree['median_ratio']:.3f} (min {agree['min_ratio']:.3f}, max {agree['max_ratio']:.3f})"
    )
    if args.exports:
        print("\n| TorchScript files written | files | RSS growth | per file | seconds a file |")
        print("|---|---:|---:|---:|---:|")
        for row in rows[3:]:
            where = "in the process" if row["mode"] == "export-here" else "each in a child"
            print(
                f"| {where} | {row['exports']} | {row['rss_growth_mb']:.0f} MB | "
                f"{row['rss_growth_mb'] / row['exports']:.1f} MB | {row['seconds']:.2f} s |"
            )


if __name__ == "__main__":
    main()
