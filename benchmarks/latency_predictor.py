"""Latency predictors per (supernet, device): error on held-out sub-networks vs measurements.

    python benchmarks/latency_predictor.py [--devices cpu-1t cpu-ort] [--n 250] [--seed 0]
        [--time-cap 1.0] [--clock wall|thread] [--data FILE] [--reuse] [--out report.md]
    [--recorded 1080ti_1 gold_6226 ...]

Measures ``--n`` uniformly sampled sub-networks of ``fmnist-ofa-cnn`` on each device with the
real protocol (``hardware_profiles.measure_latency``; the profile's protocol with its time cap
lowered to ``--time-cap`` seconds so the whole run stays short), plus the first 30 a second
time at the end (the noise floor: how well one measurement predicts another of the same
network). Then every predictor kind is fitted on the first 10 / 20 / 50 measurements and
scored on all the others: fraction within +-10 %, Spearman, MAPE; and the cross-validated
metrics the fit itself reports. ``--reuse`` skips measuring and reads ``--data``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hardware_profiles import get_profile, measure, measure_latency
from hardware_profiles.latency_predictor import (
    PREDICTOR_KINDS,
    ArchEncoder,
    fit_latency_predictor,
    validation_metrics,
)
from hardware_profiles.latency_sample import sample_archs
from hardware_profiles.runners import device_lock, prepare, resolved_threads
from models.registry import get_supernet

SUPERNET = "fmnist-ofa-cnn"
TRAIN_SIZES = (10, 20, 50)
NOISE_REPEATS = 30


def measure_one(module: Any, example: Any, profile: Any, clock: str) -> float:
    """Median latency (ms) by the profile's runtime and protocol, timed with ``clock``.

    ``wall`` is ``measure_latency`` itself. ``thread`` runs the same protocol (runtime,
    warm-up, stopping rule, thread count, device lock) on the calling thread's CPU-time clock:
    for the one-thread profiles here all compute runs on that thread, and the clock does not
    count the time other processes hold the core, which on a shared machine is most of the
    wall-clock noise.
    """
    if clock == "wall":
        return measure_latency(module, example, profile).median_ms
    threads = resolved_threads(profile)
    if threads != 1:
        raise SystemExit("--clock thread needs one-thread profiles")
    with device_lock(profile.torch_device):
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            call = prepare(module, example, profile)
            return measure(call, profile.protocol, clock=time.thread_time).median_ms
        finally:
            torch.set_num_threads(previous)


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    supernet = get_supernet(SUPERNET)
    archs = sample_archs(supernet, args.n, args.seed)
    profiles = {}
    for device in args.devices:
        profile = get_profile(device)
        protocol = profile.protocol.model_copy(update={"time_cap_s": args.time_cap})
        profiles[device] = profile.model_copy(update={"protocol": protocol})
    latencies: dict[str, list[float]] = {d: [] for d in args.devices}
    repeats: dict[str, list[float]] = {d: [] for d in args.devices}
    started = time.perf_counter()
    for i, arch in enumerate(archs + archs[:NOISE_REPEATS]):
        module, example = supernet.timing_module(arch), supernet.example_input(arch, 1)
        for device, profile in profiles.items():
            into = latencies if i < len(archs) else repeats
            into[device].append(measure_one(module, example, profile, args.clock))
        if i % 25 == 24:
            print(f"  measured {i + 1}/{len(archs) + NOISE_REPEATS} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    return {
        "supernet": SUPERNET,
        "archs": [supernet.encode(a) for a in archs],
        "latency_ms": latencies,
        "repeat_latency_ms": repeats,
        "seconds": time.perf_counter() - started,
        "time_cap_s": args.time_cap,
        "clock": args.clock,
        "load_average": os.getloadavg(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }


def evaluate(data: dict[str, Any]) -> list[str]:
    """Markdown rows: (device, kind, n) -> held-out and cross-validated metrics."""
    supernet = get_supernet(data["supernet"])
    encoder = ArchEncoder.from_supernet(supernet)
    archs = [supernet.decode(a) for a in data["archs"]]
    rows = []
    for device, measured in data["latency_ms"].items():
        y = np.asarray(measured)
        if device in data["repeat_latency_ms"]:
            repeats = data["repeat_latency_ms"][device]
            floor = validation_metrics(repeats, y[: len(repeats)])
            rows.append(_row(device, "repeat measurement (noise floor)", "-", floor, None))
        for kind in PREDICTOR_KINDS:
            for n in TRAIN_SIZES:
                predictor = fit_latency_predictor(encoder, archs[:n], y[:n], kind=kind)
                held = validation_metrics(predictor.predict(encoder, archs[n:]), y[n:])
                rows.append(_row(device, kind, str(n), held, predictor.metrics))
    return rows


def recorded_data(columns: list[str], n: int, seed: int) -> dict[str, Any]:
    """Recorded NAS-Bench-201 latencies (HW-NAS-Bench tables) in the shape ``evaluate`` reads.

    Measured on other machines, without this machine's noise: they show what each predictor
    can model when the measurements are clean. The table has no repeats, so no noise floor.
    """
    supernet = get_supernet("nb201-cifar10")
    keys = sorted(supernet.rows)
    random.Random(seed).shuffle(keys)
    keys = keys[:n]
    return {
        "supernet": supernet.name,
        "archs": keys,
        "latency_ms": {f"nb201 {c} (recorded)": [supernet.rows[k][f"lat_ms_{c}"] for k in keys]
                       for c in columns},
        "repeat_latency_ms": {},
    }  # fmt: skip


def _row(device: str, kind: str, n: str, held: dict[str, Any], cv: dict[str, Any] | None) -> str:
    cv_text = "-" if cv is None else f"{cv['within_10pct']:.0%} / {cv['spearman']:.3f}"
    return (
        f"| {device} | {kind} | {n} | {held['n']} | {held['within_10pct']:.1%} | "
        f"{held['spearman']:.3f} | {held['mape']:.1%} | {cv_text} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu-1t", "cpu-ort"])
    parser.add_argument("--n", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-cap", type=float, default=1.0)
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall")
    parser.add_argument("--data", type=Path, default=Path("/tmp/latency_predictor.json"))
    parser.add_argument("--reuse", action="store_true", help="read --data, measure nothing")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--recorded", nargs="*", default=[], metavar="COLUMN",
        help="also NAS-Bench-201 recorded latency columns, e.g. 1080ti_1 gold_6226",
    )  # fmt: skip
    args = parser.parse_args()
    if args.reuse:
        data = json.loads(args.data.read_text())
    else:
        data = measure_all(args)
        args.data.write_text(json.dumps(data))
    lines = [
        f"{data['supernet']}, {len(data['archs'])} sub-networks, "
        f"clock {data.get('clock', 'wall')}, time cap {data['time_cap_s']} s, "
        f"measured in {data['seconds']:.0f} s on "
        f"{data['machine']} (load average at the end {data['load_average'][0]:.1f})",
        "",
        "| device | predictor | fitted on | held out | within +-10 % | Spearman | MAPE "
        "| CV within 10 % / Spearman |",
        "|---|---|---:|---:|---:|---:|---:|---|",
        *evaluate(data),
    ]
    if args.recorded:
        lines += evaluate(recorded_data(args.recorded, args.n, args.seed))
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
