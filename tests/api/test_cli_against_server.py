"""The pipeline CLI against a real `hwnas serve` process (embedded mode, own SQLite file)."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest

from api.cli import build_parser
from api.client import HwnasClient
from core.settings import Settings
from store.tables import JobStatus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with _serving(tmp_path) as url:
        yield url


API_KEY = "cli-test-key-0123456789"


@pytest.fixture
def secured_server(tmp_path: Path) -> Iterator[str]:
    with _serving(tmp_path, HWNAS_API_KEYS=API_KEY) as url:
        yield url


@contextmanager
def _serving(tmp_path: Path, **extra_env: str) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "HWNAS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "HWNAS_DATA_DIR": str(tmp_path / "data"),
        "HWNAS_BROKER_URL": "",
        "HWNAS_EMBEDDED_DEVICES": "cpu-1t",
        **extra_env,
    }
    log = (tmp_path / "serve.log").open("wb")  # its standard error: what it logged
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "hwnas serve exited"
            assert time.monotonic() < deadline, "hwnas serve did not come up"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def hwnas(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args, "--url", url],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def test_the_cli_sends_the_api_key_a_secured_server_asks_for(secured_server: str) -> None:
    refused = hwnas(secured_server, "submit", "--device", "cpu-all", HWNAS_API_KEY="")
    assert refused.returncode == 2 and "401" in refused.stderr and "API key" in refused.stderr
    by_flag = hwnas(secured_server, "submit", "--device", "cpu-all", "--api-key", API_KEY)
    assert by_flag.returncode == 0, by_flag.stderr
    by_env = hwnas(secured_server, "pareto", by_flag.stdout.strip(), HWNAS_API_KEY=API_KEY)
    assert by_env.returncode == 0, by_env.stderr


def test_submit_wait_download(server: str, tmp_path: Path) -> None:
    submitted = hwnas(server, "submit", "--budget", "4", "--constraint", "latency_ms<=50")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    waited = hwnas(server, "wait", job_id)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert '"succeeded"' in waited.stdout
    front = httpx.get(f"{server}/v1/jobs/{job_id}/pareto").json()["data"]
    target = tmp_path / "model.onnx"
    downloaded = hwnas(
        server,
        "download",
        job_id,
        "--subnet",
        front[0]["subnet_id"],
        "--format",
        "onnx",
        "-o",
        str(target),
    )
    assert downloaded.returncode == 0, downloaded.stderr
    onnx.checker.check_model(onnx.load(str(target)))
    subnet = front[0]["subnet_id"]
    folder = tmp_path / "models"
    folder.mkdir()
    into_a_folder = hwnas(server, "download", job_id, "--subnet", subnet, "-o", str(folder))
    assert into_a_folder.returncode == 0, into_a_folder.stderr
    named = folder / f"fmnist-ofa-cnn_{subnet}.onnx"  # the service's name for it
    assert into_a_folder.stdout == f"{named}\n" and named.read_bytes() == target.read_bytes()
    # To stdout: the bytes alone (the path printed after them had overwritten the zip's
    # header, or followed the bytes in a pipe).
    for out in ("-", "/dev/stdout"):
        streamed = subprocess.run(
            [sys.executable, "-m", "api.cli", "download", job_id, "--subnet", subnet,
             "--format", "state_dict", "-o", out, "--url", server],
            capture_output=True, timeout=120,
        )  # fmt: skip
        assert streamed.returncode == 0, streamed.stderr
        assert zipfile.ZipFile(io.BytesIO(streamed.stdout)).namelist() == [
            "state_dict.pt", "architecture.json",
        ]  # fmt: skip
    # stdout redirected to a file, through a link to it (as /dev/stdout is): the zip alone,
    # and the link kept (the file had been moved over the link)
    link, redirected = tmp_path / "my-stdout", tmp_path / "redirected.zip"
    link.symlink_to("/proc/self/fd/1")
    with redirected.open("wb") as out:
        subprocess.run(
            [sys.executable, "-m", "api.cli", "download", job_id, "--subnet", subnet,
             "--format", "state_dict", "-o", str(link), "--url", server],
            stdout=out, timeout=120, check=True,
        )  # fmt: skip
    assert link.is_symlink() and zipfile.ZipFile(redirected).namelist()[0] == "state_dict.pt"
    as_json = hwnas(server, "pareto", job_id, "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["data"] == front
    _shows_the_job_its_evaluations_and_the_catalog(server, job_id, front)
    # A reader that leaves early (head) is no error.
    piped = subprocess.run(
        f"{sys.executable} -m api.cli pareto {job_id} --url {server} | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.stdout.startswith("subnet_id") and piped.stderr == "", piped.stderr


def _shows_the_job_its_evaluations_and_the_catalog(
    server: str, job_id: str, front: list[dict[str, object]]
) -> None:
    """``show``, ``evaluations``, ``supernets`` and ``devices`` print what the API answers."""
    shown = hwnas(server, "show", job_id)
    assert (
        shown.returncode == 0
        and json.loads(shown.stdout) == httpx.get(f"{server}/v1/jobs/{job_id}").json()
    )
    measured = httpx.get(f"{server}/v1/jobs/{job_id}/evaluations").json()["data"]
    lines = hwnas(server, "evaluations", job_id, "--json").stdout.splitlines()
    assert [json.loads(line) for line in lines] == measured
    header, _rule, *rows = hwnas(server, "evaluations", job_id).stdout.splitlines()
    assert header.split() == [  # the objectives first, then the other metrics
        "seq", "subnet_id", "feasible", "front", "accuracy", "latency_ms", "macs",
        "model_size_mb", "params",
    ]  # fmt: skip
    on_front = {str(p["subnet_id"]) for p in front}
    assert [(row.split()[1], row.split()[3] == "*") for row in rows] == [
        (e["subnet_id"], e["subnet_id"] in on_front) for e in measured
    ]
    supernets = hwnas(server, "supernets").stdout.splitlines()
    assert supernets[0].split()[:2] == ["id", "genes"]
    assert any(line.split()[:2] == ["fmnist-ofa-cnn", "22"] for line in supernets)
    devices = hwnas(server, "devices", "--json").stdout
    served = {d["id"] for d in json.loads(devices) if d["served"]}
    assert served == {"cpu-1t"}  # HWNAS_EMBEDDED_DEVICES
    table = hwnas(server, "devices").stdout.splitlines()
    assert any(line.split()[:8] == ["cpu-1t", "cpu", "torch_eager", "1", "1", "yes", "0", "0"]
               for line in table)  # fmt: skip


def test_submitting_again_with_a_key_prints_the_job_it_created(server: str) -> None:
    args = ("submit", "--device", "cpu-all", "--idempotency-key", "ci-run-7")
    first, again = hwnas(server, *args), hwnas(server, *args)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout == again.stdout and len(first.stdout.split()) == 1
    # said: a re-run of a failed pipeline step with its run id got the failed job back,
    # silently (audit 30)
    assert "ci-run-7" not in first.stderr
    assert f"idempotency key 'ci-run-7' created job {first.stdout.strip()} before (" in again.stderr
    assert "a key stays bound to its job whatever its outcome" in again.stderr
    other = hwnas(server, *args, "--seed", "3")
    assert other.returncode == 2 and "409" in other.stderr and "ci-run-7" in other.stderr
    empty = hwnas(server, "submit", "--device", "cpu-all", "--idempotency-key", "")
    assert empty.returncode == 2 and "1-255 printable ASCII" in empty.stderr  # not a new key
    unkeyed = [hwnas(server, "submit", "--device", "cpu-all").stdout for _ in range(2)]
    assert unkeyed[0] != unkeyed[1]  # each its own random key: two jobs
    assert httpx.get(f"{server}/v1/jobs").json()["count"] == 3


def test_calibrate_follows_the_job_and_prints_the_stored_version(server: str) -> None:
    done = hwnas(server, "calibrate", "cpu-1t", "--samples", "5", "--seed", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    stored = json.loads(done.stdout)
    assert (stored["device"], stored["version"], stored["n_measurements"]) == ("cpu-1t", 1, 5)
    assert stored["kind"] == "scaled-lut" and stored["job_id"]
    assert isinstance(stored["steers_searches"], bool)
    assert ("too poorly" in done.stderr) is not stored["steers_searches"]
    listed = hwnas(server, "calibrations", "cpu-1t").stdout.splitlines()  # help audit 34
    assert listed[0].split() == ["version", "supernet", "kind", "measured", "spearman",
                                 "within_10pct", "steers", "created_at", "job"]  # fmt: skip
    row = listed[2].split()
    assert row[:4] == ["1", "fmnist-ofa-cnn", "scaled-lut", "5"] and row[-1] == stored["job_id"]
    assert row[6] == ("yes" if stored["steers_searches"] else "no")
    none = hwnas(server, "calibrations", "cpu-all")
    assert none.returncode == 0 and none.stdout.startswith("no calibration of cpu-all")
    queued = hwnas(server, "calibrate", "cpu-ort", "--no-wait")  # nobody serves cpu-ort
    job = httpx.get(f"{server}/v1/jobs/{queued.stdout.strip()}").json()
    assert job["kind"] == "calibration" and job["status"] == "queued"
    assert "no live worker serves device 'cpu-ort'" in queued.stderr  # said (audit 30)
    args = ("calibrate", "cpu-ort", "--seed", "3", "--timeout", "1", "--idempotency-key", "c-9")
    waited = hwnas(server, *args)
    assert waited.returncode == 4 and "still queued after 1.0 s" in waited.stderr  # timed out
    assert json.loads(waited.stdout)["status"] == "queued"
    again = hwnas(server, *args)  # a retried step: the same calibration, not another one
    assert json.loads(again.stdout)["id"] == json.loads(waited.stdout)["id"]
    assert "idempotency key 'c-9' created job" in again.stderr
    refused = hwnas(server, "calibrate", "cpu-1t", "--kind", "oracle")
    assert refused.returncode == 2 and "predictor kind" in refused.stderr


def test_wait_exits_non_zero_for_a_job_that_did_not_succeed(server: str) -> None:
    job_id = hwnas(server, "submit", "--budget", "500").stdout.strip()
    cancelled = hwnas(server, "cancel", job_id)
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["id"] == job_id
    assert "cancel_requested" in json.loads(cancelled.stdout)  # a running job's says true
    assert hwnas(server, "wait", job_id).returncode == 1
    front = hwnas(server, "pareto", job_id)  # what it measured, and that it did not succeed
    message = httpx.get(f"{server}/v1/jobs/{job_id}").json()["message"]
    assert message.startswith("cancelled")  # said once ("cancelled: cancelled ..." was twice)
    assert front.returncode == 1 and front.stderr == f"hwnas: job {job_id} {message}\n"
    again = hwnas(server, "cancel", job_id)  # cancelled already: as it is
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "cancelled"


def test_wait_gives_up_after_its_timeout_and_submit_sends_its_options(server: str) -> None:
    queued = hwnas(server, "submit", "--device", "cpu-ort", "--no-warm-start")  # not served
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    assert httpx.get(f"{server}/v1/jobs/{job_id}").json()["warm_start"] is False
    waited = hwnas(server, "wait", job_id, "--timeout", "1")
    assert waited.returncode == 4 and "still queued after 1.0 s" in waited.stderr  # not 1
    assert hwnas(server, "pareto", job_id).returncode == 0  # not ended: its front so far
    assert json.loads(waited.stdout)["status"] == "queued"
    outside = hwnas(server, "submit", "--validation-data", "/etc/passwd")
    assert outside.returncode == 2 and "validation_data" in outside.stderr


def test_a_search_with_nothing_feasible_exits_3(server: str) -> None:
    """It succeeded, with an empty front: `hwnas wait && hwnas pareto | pick | download`
    went on (exit 0) with nothing to pick."""
    job_id = hwnas(
        server, "submit", "--budget", "2", "--strategy", "random", "--no-warm-start",
        "--constraint", "latency_ms<=0.000001", "--failures", "0",
    ).stdout.strip()  # fmt: skip
    waited = hwnas(server, "wait", job_id)
    assert waited.returncode == 3, waited.stdout + waited.stderr
    assert json.loads(waited.stdout)["status"] == "succeeded"
    assert HwnasClient(server).job(job_id)["progress"]["failures_allowed"] == 0  # --failures
    front = hwnas(server, "pareto", job_id)
    assert front.returncode == 3 and front.stdout.startswith("(empty front) no measured")
    assert f"hwnas: job {job_id} found nothing feasible: no measured" in front.stderr


def test_cli_reports_service_errors_plainly(server: str) -> None:
    result = hwnas(server, "submit", "--device", "tpu-9")
    assert result.returncode == 2
    assert "device" in result.stderr and "cpu-1t" in result.stderr


@pytest.mark.parametrize(
    ("loop", "processes", "served"),
    [
        ("auto", 1, "asyncio"),  # fair to 100 busy clients
        ("auto", 2, "uvloop"),  # asyncio leaves Nagle on for a socket shared by processes
        ("asyncio", 4, "asyncio"),
        ("uvloop", 1, "uvloop"),
    ],
)
def test_serve_picks_its_event_loop(loop: str, processes: int, served: str) -> None:
    assert Settings(api_loop=loop, api_processes=processes).serve_loop == served


def test_the_front_table_of_a_recorded_supernet_shows_dashes_for_macs_and_params() -> None:
    """Recorded supernets (NAS-Bench-201 tables) report no MACs or params: None in the API."""
    from api.cli import format_front

    point = {"subnet_id": "|nor_conv_3x3~0|+|skip_connect~0|none~1|", "accuracy": 0.9312}
    row = {**point, "latency_ms": 2.5, "macs": None, "params": None}
    pareto = {"data": [{**row, "metrics": {"accuracy": 0.9312, "latency_ms": 2.5}}]}
    lines = format_front(pareto).splitlines()
    assert lines[2].split() == [point["subnet_id"], "0.9312", "2.500", "-", "-"]
    measured = {**pareto["data"][0], "macs": 1_500_000, "params": 12_345}
    # counted, as a constraint on them is given (help audit 34: a column of millions)
    assert format_front({"data": [measured]}).splitlines()[2].split()[-2:] == ["1500000", "12345"]


def test_the_catalog_shows_a_raw_space_size_as_an_upper_bound() -> None:
    """Plugin audit 32: a plugin's 81 gene combinations (39 networks) showed as 81."""
    from api.cli import _space_size

    assert _space_size({"space_size": 39, "raw_space_size": 81}) == "39"
    assert _space_size({"space_size": None, "raw_space_size": 81}) == "<=81"
    assert _space_size({"space_size": None, "raw_space_size": 0}) == "-"  # not built


def test_the_front_table_shows_every_objective_best_first() -> None:
    """A job minimising model_size_mb showed no such column, and rows came by latency."""
    from api.cli import format_front

    def point(subnet: str, accuracy: float, size: float) -> dict:
        metrics = {"accuracy": accuracy, "latency_ms": 1.0, "macs": 10**6, "params": 10,
                   "model_size_mb": size}  # fmt: skip
        return {"subnet_id": subnet, **metrics, "metrics": metrics}

    pareto = {
        "objectives": {"accuracy": "max", "model_size_mb": "min"},
        "data": [point("small", 0.80, 0.1), point("big", 0.90, 0.4), point("tie", 0.90, 0.2)],
    }
    lines = format_front(pareto).splitlines()
    # the objectives first, in order (plugin audit 32), then the usual columns
    assert lines[0].split() == [
        "subnet_id",
        "accuracy",
        "model_size_mb",
        "latency_ms",
        "macs",
        "params",
    ]
    assert [line.split()[0] for line in lines[2:-1]] == ["tie", "big", "small"]
    assert lines[2].split()[2] == "0.2"
    assert lines[-1] == "best first by accuracy (max), then model_size_mb (min)"
    # a metric only a constraint names gets a column; the bounds are said under the table
    bounded = {**pareto, "constraints": {"energy_mj": {"max": 3.0}, "params": {"min": 5}}}
    for row in bounded["data"]:
        row["metrics"]["energy_mj"] = 2.5
    lines = format_front(bounded).splitlines()
    assert lines[0].split()[-1] == "energy_mj" and lines[2].split()[-1] == "2.5"
    assert lines[-1].endswith("; every row meets energy_mj <= 3, params >= 5")
    close = {"objectives": {"latency_ms": "min"}, "data": [point("a", 0.8, 0.1)]}
    close["data"][0]["latency_ms"] = 0.0037  # a small network's: 3 decimals showed 0.004
    assert format_front(close).splitlines()[2].split()[1] == "0.003700"
    close["data"][0]["latency_ms"] = 12345.6  # 1.235e+04 before (review 32a)
    assert format_front(close).splitlines()[2].split()[1] == "12346"


def test_serve_logs_its_mode_and_each_job_with_time_level_and_logger(tmp_path: Path) -> None:
    """Nothing configured hwnas's loggers under serve: warnings came bare, INFO lines (a job
    resumed) were lost, and a misspelt variable silently gave the embedded mode (operator
    probe, session 22)."""
    with _serving(tmp_path, HWNAS_BROKER_ULR="redis://127.0.0.1:6379/9") as url:
        submitted = hwnas(url, "submit", "--budget", "2", "--strategy", "random")
        job = submitted.stdout.strip()
        assert hwnas(url, "wait", job).returncode == 0
    logged = (tmp_path / "serve.log").read_text()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.search(
        stamp + r" WARNING core.settings: HWNAS_BROKER_ULR is not an hwnas setting: ignored; "
        r"did you mean HWNAS_BROKER_URL\?",
        logged,
    ), logged
    assert re.search(stamp + r" INFO api.app: hwnas: embedded mode .* database sqlite:///", logged)
    assert re.search(
        stamp + rf" INFO workers.runner: job {job}: running fmnist-ofa-cnn on cpu-1t, random "
        r"search, budget 2\n",
        logged,
    ), logged
    assert re.search(stamp + rf" INFO workers.runner: job {job}: succeeded after ", logged)


def test_jobs_lists_the_newest_as_a_table_or_json_lines(server: str) -> None:
    """``hwnas jobs``: newest first, ``--limit`` of them (0: all, read a page at a time),
    filtered by status, kind and labels; every status the service has is one it takes."""
    labels = ["--label", "project=kws", "--label"]
    ids = [  # nobody serves cpu-all: queued
        hwnas(
            server, "submit", "--device", "cpu-all", "--seed", f"{k}", *labels, f"run={k}"
        ).stdout.strip()
        for k in range(3)
    ]
    table = hwnas(server, "jobs", "--limit", "2")
    assert table.returncode == 0, table.stderr
    header, rule, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["id", "status", "kind"] and set(rule) == {"-"}
    assert [row.split()[:5] for row in rows] == [
        [job_id, "queued", "search", "fmnist-ofa-cnn", "cpu-all"] for job_id in ids[:0:-1]
    ]
    assert rows[0].split()[5:7] == ["0/60", "0"] and rows[0].endswith(
        '  {"project": "kws", "run": "2"}'
    )
    by_label = hwnas(server, "jobs", "--label", "project", "--label", "run=1", "--json")
    assert [json.loads(line)["id"] for line in by_label.stdout.splitlines()] == [ids[1]]
    assert json.loads(by_label.stdout)["labels"] == {"project": "kws", "run": "1"}
    lines = hwnas(server, "jobs", "--limit", "0", "--json", "--status", "queued").stdout
    assert [json.loads(line)["id"] for line in lines.splitlines()] == ids[::-1]
    for only in (["--status", "succeeded"], ["--kind", "calibration"]):
        assert len(hwnas(server, "jobs", *only).stdout.splitlines()) == 2  # the header
    both = hwnas(server, "jobs", "--status", "succeeded", "--status", "queued", "--limit", "2")
    assert [row.split()[0] for row in both.stdout.splitlines()[2:]] == ids[:0:-1]
    assert "hwnas: the newest 2 of 3 jobs (--limit 0: all)" in both.stderr
    assert hwnas(server, "jobs", "--limit", "3").stderr == ""  # every job shown
    refused = hwnas(server, "jobs", "--limit", "-1")
    assert refused.returncode == 2 and "not a whole number" in refused.stderr
    relabelled = hwnas(server, "label", ids[0], "stage=chosen", "project=x", "--remove", "run")
    assert relabelled.returncode == 0, relabelled.stderr
    assert json.loads(relabelled.stdout) == {
        "id": ids[0], "labels": {"project": "x", "stage": "chosen"}
    }  # fmt: skip
    chosen = hwnas(server, "jobs", "--label", "stage=chosen", "--json").stdout
    assert [json.loads(line)["id"] for line in chosen.splitlines()] == [ids[0]]
    for wrong, said in [
        ([], "give NAME=VALUE labels to set, or --remove NAME"),
        (["stage"], "label 'stage': give NAME=VALUE"),
        (["a=1", "--remove", "a"], "label a is both set and removed"),
        ([f"l{k}=1" for k in range(15)], "would leave it 17"),
    ]:
        refused = hwnas(server, "label", ids[0], *wrong)
        assert refused.returncode == 2 and said in refused.stderr, (wrong, refused.stderr)
    parser = build_parser()
    jobs = parser._subparsers._group_actions[0].choices["jobs"]  # type: ignore[union-attr]
    [status] = [a for a in jobs._actions if a.dest == "status"]
    assert status.choices == [s.value for s in JobStatus]


def test_cancel_by_label_ends_every_unfinished_job_carrying_it(tmp_path: Path) -> None:
    """Security audit 31 M2: a flood of jobs took one cancel each."""
    with _serving(tmp_path, HWNAS_EMBEDDED_DEVICES="none") as url:  # they stay queued
        ids = [
            hwnas(url, "submit", "--label", label, "--budget", "2").stdout.strip()
            for label in ("team=a", "team=a", "team=b")
        ]
        refused = hwnas(url, "cancel")
        assert refused.returncode == 2 and "give a job id, or --label" in refused.stderr
        cancelled = hwnas(url, "cancel", "--label", "team=a")
        assert cancelled.returncode == 0, cancelled.stderr
        lines = [json.loads(line) for line in cancelled.stdout.splitlines()]
        assert sorted(job["id"] for job in lines) == sorted(ids[:2])
        assert {job["status"] for job in lines} == {"cancelled"}
        assert cancelled.stderr.strip().endswith("hwnas: 2 jobs cancelled")
        left = json.loads(hwnas(url, "show", ids[2]).stdout)
        assert left["status"] == "queued"


def test_cancel_by_label_passes_over_a_job_that_ended_since_it_was_listed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review 32b M2: the first 409 stopped the command, leaving the rest queued."""
    import api.cli
    from api.client import ClientError

    class Listed:
        def iter_jobs(self, **_where: Any) -> Iterator[dict[str, Any]]:
            yield from ({"id": job} for job in ("a", "b", "c"))

        def cancel(self, job_id: str) -> dict[str, Any]:
            if job_id == "b":
                raise ClientError("409: job 'b' already succeeded", status=409)
            return {"id": job_id, "status": "cancelled", "cancel_requested": True, "message": ""}

    monkeypatch.setattr(api.cli, "_client", lambda _args: Listed())
    args = api.cli.build_parser().parse_args(["cancel", "--label", "team=a"])
    assert api.cli.cmd_cancel(args) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["a", "c"]
    assert "job b passed over: 409: job 'b' already succeeded" in err
    assert err.strip().endswith("hwnas: 2 jobs cancelled")


def test_mine_lists_and_cancels_only_this_key_s_jobs(tmp_path: Path) -> None:
    """Tenancy audit 33: on a shared server `hwnas cancel --label project=kws` cancelled
    every team's jobs with that label; `--mine` keeps to the key's own."""
    other = "other-team-key-0123456789"
    keys = f"{API_KEY},{other}"
    with _serving(tmp_path, HWNAS_EMBEDDED_DEVICES="none", HWNAS_API_KEYS=keys) as url:
        ours, theirs = (
            hwnas(
                url, "submit", "--label", "project=kws", "--budget", "2", HWNAS_API_KEY=key
            ).stdout.strip()
            for key in (API_KEY, other)
        )
        listed = hwnas(url, "jobs", "--mine", "--json", HWNAS_API_KEY=API_KEY).stdout
        assert [json.loads(line)["id"] for line in listed.splitlines()] == [ours]
        cancelled = hwnas(url, "cancel", "--label", "project=kws", "--mine", HWNAS_API_KEY=API_KEY)
        assert cancelled.returncode == 0, cancelled.stderr
        assert [json.loads(line)["id"] for line in cancelled.stdout.splitlines()] == [ours]
        left = json.loads(hwnas(url, "show", theirs, HWNAS_API_KEY=other).stdout)
        assert left["status"] == "queued"
        keyless = hwnas(url, "jobs", "--mine", HWNAS_API_KEY="")
        assert keyless.returncode == 2 and "--mine needs an API key" in keyless.stderr


def test_a_mistake_gets_the_subcommand_s_usage_and_a_404_the_next_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Help audit 34: a mistyped option printed the list of every command; a job id that is
    none, or a --url with a path, said "not found" and no more; no --version."""
    from api.cli import _next_step, main
    from api.client import ClientError

    with pytest.raises(SystemExit) as exited:
        main(["submit", "--budjet", "3"])
    assert exited.value.code == 2
    said = capsys.readouterr().err
    assert said.startswith("usage: hwnas submit") and "unrecognized arguments: --budjet 3" in said
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("hwnas ")
    no_job = ClientError("GET /v1/jobs/x: 404: job 'x' not found", status=404, error="NotFound")
    assert _next_step(no_job) == " (hwnas jobs lists the jobs)"
    subnet = "GET /v1/jobs/x/subnets/s/export: 404: sub-network 's' was not measured in job x"
    assert _next_step(ClientError(subnet, status=404, error="NotFound")) == ""  # review 34a L4
    no_path = ClientError("GET /v1/v1/jobs: 404: Not Found", status=404)
    assert "--url is the service's root" in _next_step(no_path)
    assert _next_step(ClientError("GET /v1/jobs: 409: ...", status=409)) == ""
