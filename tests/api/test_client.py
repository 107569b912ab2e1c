"""The HTTP client's job follower: what ``hwnas wait`` and ``hwnas calibrate`` draw."""

from __future__ import annotations

import io
from typing import Any

import pytest

from api.client import HwnasClient, _progress_line

WAITING = "waiting: no live worker serves device 'cpu-ort'; start one with `hwnas worker`"


def _job(status: str, done: int, message: str | None = None) -> dict[str, Any]:
    progress = {"evaluations_done": done, "budget": 4, "fraction": done / 4, "front_size": done,
                "hypervolume": None}  # fmt: skip
    return {"id": "j1", "kind": "search", "status": status, "progress": progress,
            "message": message}  # fmt: skip


class Scripted(HwnasClient):
    """A client whose polls answer a fixed sequence of job states."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        super().__init__("http://127.0.0.1:1")
        self.states = states

    def job(self, job_id: str) -> dict[str, Any]:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_wait_says_once_why_a_job_waits_and_redraws_its_bar_cleanly() -> None:
    states = [_job("queued", 0, WAITING), _job("queued", 0, WAITING), _job("running", 1, "x"),
              _job("running", 3, "x"), _job("succeeded", 4, "done")]  # fmt: skip
    out = Terminal()
    assert Scripted(states).wait("j1", poll_s=0, out=out)["status"] == "succeeded"
    text = out.getvalue()
    assert text.count(WAITING) == 1 and text.startswith(WAITING + "\n")
    bars = text.split("\n", 1)[1]
    assert bars.count("\r\x1b[K") == 4  # queued, 1/4, 3/4, 4/4: each clears the line first
    assert "4/4 succeeded" in bars and WAITING not in bars and bars.endswith("\n")


def test_wait_in_a_pipeline_log_writes_one_line_per_change() -> None:
    states = [_job("queued", 0, WAITING), _job("running", 2), _job("succeeded", 4)]
    out = io.StringIO()
    Scripted(states).wait("j1", poll_s=0, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == WAITING and len(lines) == 4 and "\r" not in out.getvalue()


def test_wait_says_once_that_a_running_jobs_worker_died_and_when_it_goes_on() -> None:
    died = "waiting: its worker stopped heartbeating at 2026-12-06 03:00:00 UTC; ..."
    states = [_job("running", 1, "warm start: 2"), _job("running", 1, f"{died}; warm start: 2"),
              _job("running", 1, f"{died}; warm start: 2"), _job("running", 2, "warm start: 2"),
              _job("succeeded", 4)]  # fmt: skip
    out = io.StringIO()
    Scripted(states).wait("j1", poll_s=0, out=out)
    lines = out.getvalue().splitlines()
    assert [line for line in lines if "warm start" in line] == [f"{died}; warm start: 2"]
    assert len(lines) == 5 and lines[2] == lines[0]  # 1/4, the note, 1/4 again, 2/4, 4/4


def test_a_wait_that_times_out_ends_its_bar_line_first() -> None:
    """``hwnas: ... still queued`` follows on stderr: on a line of its own."""
    out = Terminal()
    with pytest.raises(TimeoutError, match="still queued after 0 s"):
        Scripted([_job("queued", 0)]).wait("j1", poll_s=0, out=out, timeout_s=0)
    assert out.getvalue() == "\r\x1b[K" + _progress_line(_job("queued", 0)) + "\n"
