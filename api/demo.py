"""``hwnas run``: the README's quick start as one command.

Starts the service in embedded mode (SQLite + in-process worker) on a free local port,
submits a real search over HTTP, follows it, prints the Pareto front, and downloads the most
accurate sub-network that meets the constraints as ONNX.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from api.app import create_app
from api.auth import parse_api_keys
from api.cli import NOTHING_FEASIBLE, best_first, build_spec, format_front
from api.client import HwnasClient
from api.errors import error_field, validation_message
from api.schemas import JobCreate
from core.errors import InvalidInput
from core.settings import get_settings
from hardware_profiles import measure_latency
from hardware_profiles.configured import device_profile
from models.export import list_formats
from models.registry import check_checkpoints, get_supernet
from store.db import ready_database


class BackgroundServer:
    """uvicorn in a thread, for as long as the ``with`` block lasts, on a free port of
    127.0.0.1 (``port``) that its own socket holds from the start: a port found free, let
    go and bound later could be taken between."""

    def __init__(self) -> None:
        config = uvicorn.Config(create_app(), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.port = int(self.socket.getsockname()[1])
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.socket.close()
                raise RuntimeError("the embedded service did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.socket.close()


def _midway_latency(spec: dict[str, Any]) -> float:
    """A latency limit that splits this machine's range: the geometric mean of the smallest
    and the largest sub-network's latency, measured now on the job's device, each the lower
    of two measurements (the first in a fresh process ran up to 4.5 times slower on a
    loaded machine, user probe of session 21).

    A fixed number would be out of reach on a slower or busier machine (an empty front, no
    export) and meaningless on a faster one.
    """
    supernet = get_supernet(spec["supernet"])
    profile = device_profile(spec["device"])
    space = supernet.space()
    ends = []
    for pick in (0, -1):
        arch = supernet.canonical({gene: choices[pick] for gene, choices in space.items()})
        module, example = supernet.extract(arch), supernet.example_input(arch)
        ends.append(min(measure_latency(module, example, profile).median_ms for _ in range(2)))
    limit = float(f"{(ends[0] * ends[1]) ** 0.5:.2g}")
    print(
        f"latency limit {limit} ms: between the smallest ({ends[0]:.2f} ms) and the largest "
        f"({ends[1]:.2f} ms) sub-network's latency, measured now on {spec['device']} "
        "(--constraint sets your own)"
    )
    return limit


def _default_constraints(spec: dict[str, Any]) -> dict[str, Any]:
    """The midway latency limit for a search that minimises latency; none for a recorded
    table (nothing to measure here) or other objectives."""
    if "latency_ms" not in spec["objectives"]:
        return {}
    if get_supernet(spec["supernet"]).recorded:
        print(f"no latency limit: {spec['supernet']} is a recorded table (give --constraint)")
        return {}
    return {"latency_ms": {"max": _midway_latency(spec)}}


def _checked(spec: dict[str, Any]) -> None:
    """The job's own checks, before the service starts and anything is measured (a
    recorded supernet on a device of its own, ...): ``InvalidInput`` as the 422 would say."""
    try:
        JobCreate(**spec)
    except ValidationError as exc:
        errors = exc.errors()
        raise InvalidInput(validation_message(errors[:1]), field=error_field(errors[0])) from None


def run_demo(args: argparse.Namespace) -> int:
    if not get_settings().is_embedded:  # audit 30: a Celery worker ran it, timed elsewhere
        raise InvalidInput(
            "hwnas run starts an embedded service of its own, but HWNAS_BROKER_URL is set "
            "(the distributed mode): its job would go to the workers, while it times the "
            "latency limit here; on a distributed service use hwnas submit and hwnas wait, "
            "or unset HWNAS_BROKER_URL (and give hwnas run a database of its own, "
            "HWNAS_DATABASE_URL)",
            field="HWNAS_BROKER_URL",
        )
    check_checkpoints()  # as `hwnas serve` does: a weights setting naming no supernet
    settings = get_settings()  # and its database, before the latency limit is timed: one
    # line and exit 2, not two tracebacks after it (upgrade audit 31)
    ready_database(
        settings.database_url, migrate=settings.auto_migrate, wait_s=settings.migration_wait_s
    )
    spec = build_spec(args)
    _checked(spec)
    if args.format not in list_formats():  # before the search, not after it
        raise InvalidInput(
            f"--format must be one of {', '.join(list_formats())}, got {args.format!r}",
            field="format",
        )
    if not args.constraint:
        spec["constraints"] = _default_constraints(spec)
    with BackgroundServer() as server:
        keys = parse_api_keys(get_settings().api_keys)  # its own server: any of them
        url = f"http://127.0.0.1:{server.port}"
        client = HwnasClient(url, api_key=keys[0].decode() if keys else None)
        job: dict[str, Any] = client.submit(spec)
        print(
            f"job {job['id']}: {spec['strategy']} on {spec['supernet']} for device "
            f"{spec['device']}, objectives {job['objectives']}, constraints {spec['constraints']}, "
            f"budget {job['progress']['budget']}"
        )
        job = client.wait(job["id"])
        pareto = client.pareto(job["id"])
        print(format_front(pareto))
        timing = job["timing"]
        outside = timing["run_seconds"] - timing["eval_seconds"]
        share = f"{outside:.1f} s ({100 * outside / max(timing['run_seconds'], 1e-9):.1f}%)"
        said = (
            "a recorded table: looked up, not measured"
            if get_supernet(spec["supernet"]).recorded
            else f"{share} outside measurement"
        )
        print(f"status {job['status']}; search wall time {timing['run_seconds']:.1f} s, {said}")
        if job["status"] != "succeeded" or not pareto["data"]:
            print(job.get("message") or job.get("error"))
            return NOTHING_FEASIBLE if job["status"] == "succeeded" else 1
        if job.get("message"):  # a busy device, what a warm start reused, ...
            print(f"note: {job['message']}")
        objectives = pareto["objectives"]
        best = best_point(pareto["data"], objectives)
        values = ", ".join(_shown(name, best["metrics"].get(name)) for name in objectives)
        print(
            f"best under the constraints by {next(iter(objectives))}: "
            f"{best['subnet_id']} ({values})"
        )
        if best.get("export_url") is None:
            print(f"nothing to export: {spec['supernet']} is a recorded table, not weights")
            return 0
        folder = Path(args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        # The service names the file, as `hwnas download -o <folder>/` does.
        path = client.download(job["id"], best["subnet_id"], args.format, folder)
        print(f"exported {FORMAT_NAMES.get(args.format, args.format)}: {Path(str(path)).resolve()}")
        if note := _runtime_note(best, args.format, spec["device"]):
            print(f"note: {note}")
    return 0


FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "state_dict": "state_dict"}
#: The runtime that runs a file of each format, and this CPU's device that times it.
_RUNS_UNDER = {"onnx": ("onnxruntime", "cpu-ort"), "torchscript": ("torchscript", "cpu-ts")}


def _runtime_note(best: dict[str, Any], fmt: str, device: str) -> str | None:
    """Where the latency the search held the point to is another runtime's than the one
    that runs the file exported: the ONNX file of a ``cpu-1t`` (PyTorch eager) search ran
    2.7 times faster under onnxruntime than its measured latency (audit 30)."""
    runtime = (best.get("latency") or {}).get("runtime")
    if fmt not in _RUNS_UNDER or best["metrics"].get("latency_ms") is None or runtime is None:
        return None
    runs_under, cpu_device = _RUNS_UNDER[fmt]
    if runtime == runs_under:
        return None
    return (
        f"its latency is {runtime}'s on {device}; the {FORMAT_NAMES[fmt]} file runs under "
        f"{runs_under}, at another speed: search a device of that runtime to hold the file "
        f"to the limit ({cpu_device} on this CPU: --device {cpu_device})"
    )


def best_point(points: list[dict[str, Any]], objectives: dict[str, str]) -> dict[str, Any]:
    """The front's best point on the job's first objective (its own direction); the next
    objectives break ties in order, and a point without a value counts as the worst."""
    return min(points, key=best_first(objectives))


def _shown(name: str, value: float | None) -> str:
    """An objective's value as the front's table shows it."""
    if value is None:
        return f"{name} -"
    units = {"latency_ms": f"{value:.3f} ms"}
    default = f"{value:,.0f}" if name in ("params", "macs") else f"{value:.4f}"
    return f"{name} {units.get(name, default)}"
