"""`hwnas run` (api/demo.py) beyond the default job `make run` shows: objectives without a
quality metric, and a recorded supernet that has nothing to export."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from api.demo import best_point


def _point(subnet_id: str, **metrics: float) -> dict[str, object]:
    return {"subnet_id": subnet_id, "metrics": metrics}


def test_the_best_point_is_best_on_the_first_objective_in_its_direction() -> None:
    front = [
        _point("fast", accuracy=0.80, latency_ms=1.0, macs=5.0),
        _point("accurate", accuracy=0.90, latency_ms=3.0, macs=9.0),
        _point("fast-too", accuracy=0.85, latency_ms=1.0, macs=4.0),
    ]
    assert best_point(front, {"accuracy": "max", "latency_ms": "min"})["subnet_id"] == "accurate"
    # latency first: a tie between two points is broken by the next objective (macs, min)
    assert best_point(front, {"latency_ms": "min", "macs": "min"})["subnet_id"] == "fast-too"
    # a point without the objective's value (stored before that metric existed) is the worst
    older = [_point("old", macs=1.0), *front]
    assert best_point(older, {"latency_ms": "min", "macs": "min"})["subnet_id"] == "fast-too"


def _hwnas_run(tmp_path: Path, devices: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HWNAS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "HWNAS_DATA_DIR": str(tmp_path / "data"),
        "HWNAS_BROKER_URL": "",
        "HWNAS_EMBEDDED_DEVICES": devices,
        "HWNAS_API_KEYS": "",
    }
    command = [sys.executable, "-m", "api.cli", "run", "--strategy", "random", *args]
    return subprocess.run(
        [*command, "--output-dir", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_objectives_without_accuracy_pick_and_export_by_the_first(tmp_path: Path) -> None:
    run = _hwnas_run(
        tmp_path, "cpu-1t", "--objective", "latency_ms=min", "--objective", "macs=min",
        "--budget", "4", "--constraint", "latency_ms<=1000",  # a limit every network meets
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "best under the constraints by latency_ms: " in run.stdout
    assert "outside measurement" in run.stdout
    best = run.stdout.split("best under")[1]
    assert "accuracy" not in best and " ms, macs " in best
    assert re.search(r" ms, macs \d{1,3}(,\d{3})+\)", best)  # counted, as constrained
    # the given objectives replaced the defaults: said, with how to keep them
    assert "--objective replaces the defaults: add --objective accuracy=max" in run.stderr
    (exported,) = (tmp_path / "out").glob("*.onnx")
    assert f"exported ONNX: {exported}" in run.stdout
    # timed in PyTorch eager, run under onnxruntime: said (audit 30: 2.7 times faster)
    assert (
        "note: its latency is torch_eager's on cpu-1t; the ONNX file runs under onnxruntime, "
        "at another speed: search a device of that runtime to hold the file to the limit "
        "(cpu-ort on this CPU: --device cpu-ort)"
    ) in run.stdout
    # The service's name for the file, as `hwnas download -o out/` gives it.
    assert exported.name.startswith("fmnist-ofa-cnn_r"), exported.name


def test_a_recorded_supernet_searches_without_a_limit_and_exports_nothing(tmp_path: Path) -> None:
    run = _hwnas_run(
        tmp_path, "nb201-*", "--supernet", "nb201-cifar10", "--device", "nb201-pixel3",
        "--budget", "12",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "no latency limit: nb201-cifar10 is a recorded table" in run.stdout
    assert "best under the constraints by accuracy: " in run.stdout
    assert "nothing to export: nb201-cifar10 is a recorded table" in run.stdout
    assert "s, a recorded table: looked up, not measured" in run.stdout  # not "100% outside"
    assert not (tmp_path / "out").exists()


def test_a_recorded_supernet_on_another_device_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    """It started the service (about 20 s on a loaded machine), then failed on the 422."""
    run = _hwnas_run(tmp_path, "nb201-*", "--supernet", "nb201-cifar10", "--budget", "3")
    assert run.returncode == 2
    assert "device: 'cpu-1t' (cpu) cannot evaluate the recorded supernet" in run.stderr
    assert "nb201-pixel3" in run.stderr and "job " not in run.stdout


def test_run_refuses_the_distributed_mode(tmp_path: Path) -> None:
    """With HWNAS_BROKER_URL set its job went to a Celery worker while it timed the latency
    limit here, and it waited for ever where no worker served the device (audit 30)."""
    env = {**os.environ, "HWNAS_BROKER_URL": "redis://127.0.0.1:1/0"}
    run = subprocess.run([sys.executable, "-m", "api.cli", "run", "--budget", "3"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2 and run.stdout == ""
    assert "hwnas run starts an embedded service of its own, but HWNAS_BROKER_URL is set" in (
        run.stderr
    )


def test_nothing_feasible_exits_3_as_wait_and_pareto_do(tmp_path: Path) -> None:
    run = _hwnas_run(
        tmp_path, "nb201-*", "--supernet", "nb201-cifar10", "--device", "nb201-pixel3",
        "--budget", "3", "--constraint", "latency_ms<=0.000001",
    )  # fmt: skip
    assert run.returncode == 3, run.stdout + run.stderr
    assert "no measured sub-network met" in run.stdout


def test_no_latency_limit_without_a_latency_objective_and_the_job_s_notes_shown(
    tmp_path: Path,
) -> None:
    """A latency limit was added to searches that did not ask for latency, and a job's
    notes (a busy device, a warm start) were never shown when it succeeded."""
    args = ("--objective", "macs=min", "--objective", "accuracy=max", "--budget", "2")
    first = _hwnas_run(tmp_path, "cpu-1t", *args)
    assert first.returncode == 0, first.stderr
    assert "latency limit" not in first.stdout and "constraints {}" in first.stdout
    again = _hwnas_run(tmp_path, "cpu-1t", *args, "--seed", "1", "--format", "state_dict")
    assert again.returncode == 0, again.stderr
    assert "note: warm start: 2 earlier measurements of fmnist-ofa-cnn on cpu-1t" in again.stdout
    (exported,) = (tmp_path / "out").glob("*.zip")  # --format
    assert f"exported state_dict: {exported}" in again.stdout
    typo = _hwnas_run(tmp_path, "cpu-1t", *args, "--format", "onx")  # before any search
    assert typo.returncode == 2 and "--format must be one of onnx" in typo.stderr
    assert "job " not in typo.stdout
