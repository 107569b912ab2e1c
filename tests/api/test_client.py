"""The HTTP client's job follower: what ``hwnas wait`` and ``hwnas calibrate`` draw."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.client import (
    _KEY_FORM,
    ClientError,
    HwnasClient,
    Unreachable,
    WaitTimeout,
    _progress_line,
)
from api.routes.jobs import IDEMPOTENCY_KEY_FORM

WAITING = "waiting: no live worker serves device 'cpu-ort'; start one with `hwnas worker`"


def _job(status: str, done: int, message: str | None = None) -> dict[str, Any]:
    progress = {"evaluations_done": done, "budget": 4, "fraction": done / 4, "front_size": done,
                "hypervolume": None}  # fmt: skip
    return {"id": "j1", "kind": "search", "status": status, "progress": progress,
            "message": message}  # fmt: skip


def test_the_progress_line_counts_failed_measurements() -> None:
    job = _job("running", 2)
    assert " 2/4 running " in _progress_line(job)
    job["progress"]["evaluations_failed"] = 3
    assert " 2/4 (3 failed) running " in _progress_line(job)


class Scripted(HwnasClient):
    """A client whose polls answer a fixed sequence of job states (or raise errors)."""

    def __init__(self, states: list[dict[str, Any] | ClientError]) -> None:
        super().__init__("http://127.0.0.1:1")
        self.states = states
        self.timeouts: list[float | None] = []

    def job(self, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        self.timeouts.append(timeout)
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, ClientError):
            raise state
        return state


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


def test_wait_in_a_pipeline_log_writes_a_line_per_tenth_of_the_budget_not_per_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """44 lines for a 40-evaluation job: a 10,000-evaluation one made 10,000 (audit 30)."""

    def logged() -> list[str]:
        states = [_job("queued", 0), *(_job("running", i) for i in range(1, 40))]
        states.append(_job("succeeded", 40))
        for state in states:
            state["progress"].update(budget=40, fraction=state["progress"]["evaluations_done"] / 40)
        out = io.StringIO()
        Scripted(states).wait("j1", poll_s=0, out=out)
        return out.getvalue().splitlines()

    lines = logged()
    assert len(lines) == 12 and " 40/40 succeeded " in lines[-1]  # queued, 1/40, each tenth
    monkeypatch.setattr("api.client._LogLines.EVERY_S", 0.0)  # and every EVERY_S
    assert len(logged()) == 41


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
    with pytest.raises(WaitTimeout, match="still queued after 0 s") as raised:
        Scripted([_job("queued", 0)]).wait("j1", poll_s=0, out=out, timeout_s=0)
    assert raised.value.job == _job("queued", 0)  # as it stood: no poll more after the time
    assert out.getvalue() == "\r\x1b[K" + _progress_line(_job("queued", 0)) + "\n"


# -- errors a pipeline can branch on ------------------------------------------------------


def _served(handler: Any) -> HwnasClient:
    """A client whose requests ``handler`` answers (httpx's mock transport: no socket)."""
    client = HwnasClient("http://hwnas.test")
    client.http = httpx.Client(base_url="http://hwnas.test", transport=httpx.MockTransport(handler))
    return client


def test_an_error_answer_carries_its_status_class_and_field() -> None:
    said = {"message": "device: unknown 'tpu'", "detail": "x", "error": "InvalidInput",
            "field": "device"}  # fmt: skip
    client = _served(lambda request: httpx.Response(422, json=said))
    with pytest.raises(ClientError) as raised:
        client.submit({"device": "tpu"})
    error = raised.value
    assert (error.status, error.error, error.field, error.body) == (422, "InvalidInput", "device",
                                                                    said)  # fmt: skip
    assert str(error) == "POST /v1/jobs: 422: device: unknown 'tpu'" and not error.transient
    checked = {"message": "budget.evaluations: Input should be greater than or equal to 1",
               "detail": [{"loc": ["body", "budget", "evaluations"], "msg": "..."}]}  # fmt: skip
    with pytest.raises(ClientError) as raised:
        _served(lambda request: httpx.Response(422, json=checked)).submit({})
    assert (raised.value.field, raised.value.error) == ("budget.evaluations", None)
    busy = _served(lambda request: httpx.Response(503, json={"message": "database down"}))
    with pytest.raises(ClientError) as raised:
        busy.job("j1")
    assert raised.value.status == 503 and raised.value.transient


def test_what_is_not_hwnas_answering_is_a_client_error_that_says_so() -> None:
    """A wrong URL (a proxy's login page, another service) was a JSONDecodeError traceback
    from a 200, and a whole HTML page as the message of an error."""
    page = "<!DOCTYPE html>\n<html><body>proxy login</body></html>\n"
    html = _served(
        lambda request: httpx.Response(200, text=page, headers={"content-type": "text/html"})
    )
    with pytest.raises(
        ClientError, match=r"answered 200 with text/html, not hwnas's JSON"
    ) as raised:
        html.job("j1")
    assert raised.value.status == 200
    missing = _served(lambda request: httpx.Response(404, text=page))
    with pytest.raises(ClientError) as raised:
        missing.job("j1")
    assert str(raised.value) == (
        "GET /v1/jobs/j1: 404: <!DOCTYPE html> (not an answer of hwnas's: is the URL right?)"
    )


def test_no_answer_is_unreachable_and_transient() -> None:
    with pytest.raises(Unreachable, match="cannot reach hwnas at http://127.0.0.1:1") as raised:
        HwnasClient("http://127.0.0.1:1").job("j1")
    assert raised.value.status is None and raised.value.transient

    def stalls(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(Unreachable, match=r"no answer from hwnas at http://hwnas.test in time"):
        _served(stalls).job("j1")


# -- wait across a restart ------------------------------------------------------------------


def test_wait_rides_out_a_service_that_restarts() -> None:
    """A job survives a restart of the service (it resumes); ``hwnas wait`` exited 2 at the
    first refused connection."""
    down = Unreachable("GET /v1/jobs/j1: cannot reach hwnas at http://x: refused")
    busy = ClientError("GET /v1/jobs/j1: 503: database down", status=503)
    states = [_job("running", 1), down, down, _job("running", 2), busy, _job("succeeded", 4)]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("api.client.time.sleep", lambda _s: None)
        assert Scripted(states).wait("j1", poll_s=0, out=out)["status"] == "succeeded"
    lines = out.getvalue().splitlines()
    retry = "; trying again for up to 300 s (Ctrl+C stops)"  # how long (help audit 34)
    assert lines == [_progress_line(_job("running", 1)), f"hwnas: {down}{retry}",
                     _progress_line(_job("running", 2)), f"hwnas: {busy}{retry}",
                     _progress_line(_job("succeeded", 4))]  # fmt: skip


def test_wait_raises_what_retrying_would_not_mend_and_gives_up_on_the_rest() -> None:
    gone = ClientError("GET /v1/jobs/j1: 404: job 'j1' not found", status=404)
    with pytest.raises(ClientError, match="404"):
        Scripted([gone]).wait("j1", poll_s=0, out=io.StringIO())
    down = Unreachable("GET /v1/jobs/j1: cannot reach hwnas")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("api.client.time.sleep", lambda _s: None)
        with pytest.raises(Unreachable):
            Scripted([down]).wait("j1", poll_s=0, out=io.StringIO(), retry_s=0)


def test_a_poll_waits_for_its_answer_no_longer_than_the_wait_has_left() -> None:
    """``wait --timeout 3`` against a server that accepted and never answered took 121 s."""
    scripted = Scripted([_job("queued", 0)])
    with pytest.raises(WaitTimeout):
        scripted.wait("j1", poll_s=0.01, out=io.StringIO(), timeout_s=3)
    assert scripted.timeouts and all(t is not None and 1.0 <= t <= 3 for t in scripted.timeouts)
    unbounded = Scripted([_job("succeeded", 4)])
    unbounded.wait("j1", poll_s=0, out=io.StringIO())
    assert unbounded.timeouts == [120.0]


# -- pages and files --------------------------------------------------------------------------


def test_the_iterators_read_every_page() -> None:
    rows = [{"seq": i} for i in range(7)]
    asked: list[tuple[str, str]] = []

    def pages(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        asked.append((request.url.params["offset"], request.url.params["limit"]))
        return httpx.Response(200, json={"data": rows[offset : offset + limit], "count": 7})

    client = _served(pages)
    assert list(client.iter_evaluations("j1", page=3)) == rows
    assert asked == [("0", "3"), ("3", "3"), ("6", "3")]
    assert list(client.iter_jobs(page=500, status="succeeded")) == rows  # an older server


def test_the_jobs_iterator_goes_on_after_each_page() -> None:
    """Each page asked for after the last job of the one before, as the server says."""
    jobs = [{"id": f"j{i}"} for i in range(5)]
    asked: list[tuple[str | None, str | None, str | None]] = []

    def pages(request: httpx.Request) -> httpx.Response:
        after, limit = request.url.params.get("after"), int(request.url.params["limit"])
        asked.append((after, request.url.params.get("status"), request.url.params.get("kind")))
        start = 0 if after is None else int(after) + 1
        data = jobs[start : start + limit]
        following = str(start + limit - 1) if len(data) == limit else None
        return httpx.Response(200, json={"data": data, "count": 5, "next_after": following})

    assert list(_served(pages).iter_jobs(page=2, status="failed", kind="search")) == jobs
    assert asked == [(after, "failed", "search") for after in (None, "1", "3")]


def test_a_label_filter_an_older_server_ignores_is_an_error_not_every_job() -> None:
    """A server before labels answers ``?label=`` with every job: listing those as the
    label's (then deleting them in a pipeline) would be wrong; the client says so."""
    served: list[dict[str, Any]] = [{"id": "a"}, {"id": "b"}]  # no "labels": an older server
    client = _served(lambda request: httpx.Response(200, json={"data": served, "count": 2}))
    with pytest.raises(ClientError, match="does not filter jobs by label"):
        client.jobs(labels={"run": "42"})
    assert client.jobs()["data"] == served  # no filter asked: nothing to check
    served[:] = [{"id": "a", "labels": {"run": "42", "x": "1"}}, {"id": "b", "labels": {}}]
    with pytest.raises(ClientError, match="does not filter"):
        client.jobs(labels={"run": None})
    served[1:] = []
    assert client.jobs(labels={"run": "42", "x": None})["data"] == served


def test_a_submitter_filter_an_older_server_ignores_is_an_error_not_every_job() -> None:
    """Upgrade audit 34: a server before revision 0011 answered ``?submitted_by=`` with
    every job, and ``hwnas cancel --mine`` cancelled every team's."""
    served: list[dict[str, Any]] = [{"id": "a"}, {"id": "b"}]  # no "submitted_by": older
    client = _served(lambda request: httpx.Response(200, json={"data": served, "count": 2}))
    with pytest.raises(ClientError, match="does not filter jobs by API key"):
        client.jobs(submitted_by="1a2b3c4d")
    with pytest.raises(ClientError, match="does not filter jobs by API key"):
        list(client.iter_jobs(submitted_by="1a2b3c4d"))
    served[:] = [{"id": "a", "submitted_by": "1a2b3c4d"}, {"id": "b", "submitted_by": "ffff0000"}]
    with pytest.raises(ClientError, match="does not filter"):  # one of another key's
        client.jobs(submitted_by="1a2b3c4d")
    served[1:] = []
    assert client.jobs(submitted_by="1a2b3c4d")["data"] == served


def test_changing_labels_sends_a_merge_and_an_older_server_is_named_as_such() -> None:
    sent: list[tuple[str, Any]] = []

    def serve(request: httpx.Request) -> httpx.Response:
        sent.append((request.method, json.loads(request.content)))
        return httpx.Response(200, json={"id": "a", "labels": {"x": "1"}})

    assert _served(serve).label("a", {"x": "1", "y": None})["labels"] == {"x": "1"}
    assert sent == [("PATCH", {"labels": {"x": "1", "y": None}})]
    older = _served(lambda request: httpx.Response(405, json={"detail": "Method Not Allowed"}))
    with pytest.raises(ClientError, match="cannot change a job's labels") as caught:
        older.label("a", {"x": "1"})
    assert caught.value.status == 405


def test_several_statuses_are_asked_for_and_an_older_server_keeping_one_is_an_error() -> None:
    asked: list[list[str]] = []
    served = [{"id": "a", "status": "queued"}, {"id": "b", "status": "running"}]
    older = False

    def serve(request: httpx.Request) -> httpx.Response:
        statuses = request.url.params.get_list("status")
        asked.append(statuses)
        if older:  # FastAPI's single-valued parameter: the last one, not said back
            data = [job for job in served if job["status"] == statuses[-1]]
            return httpx.Response(200, json={"data": data, "count": len(data)})
        return httpx.Response(200, json={"data": served, "count": 2, "status": statuses})

    client = _served(serve)
    assert client.jobs(status=["queued", "running"])["data"] == served
    assert asked == [["queued", "running"]]
    older = True
    with pytest.raises(ClientError, match="does not filter jobs by several statuses"):
        client.jobs(status=("queued", "running"))
    assert client.jobs(status="running")["data"] == served[1:]  # one: any server filters it


def test_ids_travel_as_one_path_segment_and_a_pasted_job_url_is_taken() -> None:
    """An id cannot reach another route (``J/pareto`` was read as the job), an empty one
    (a script whose submit failed) is refused before any request, not retried, and the
    job's own ``url`` names the job."""
    asked: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"id": "j", "data": [], "count": 0})

    client = _served(serve)
    client.job("j?x=1#y")
    client.job("http://hwnas.test/v1/jobs/abc")
    client.job("https://elsewhere:8000/prefix/v1/jobs/abc/")
    client.calibrations("nb201 pixel3")
    assert asked == [
        "/v1/jobs/j%3Fx%3D1%23y",
        "/v1/jobs/abc",
        "/v1/jobs/abc",
        "/v1/devices/nb201%20pixel3/calibrations?offset=0&limit=500",
    ]
    for wrong, said in [("", "give a job id"), (" ", "give a job id"),
                        ("j/pareto", "'j/pareto' is not a job id"),
                        ("..", "'..' is not a job id"),
                        ("http://hwnas.test/v1/jobs/abc/pareto", "is not a job id")]:  # fmt: skip
        with pytest.raises(ClientError, match=said) as caught:
            client.wait(wrong, out=io.StringIO())
        assert not caught.value.transient
    with pytest.raises(ClientError, match="'../x' is not a subnet id"):
        client.download("j", "../x", "onnx", io.BytesIO())
    assert len(asked) == 4


class _Cut(httpx.SyncByteStream):
    """A body that breaks off after its first chunk."""

    def __iter__(self) -> Any:
        yield b"PK\x03\x04 first"
        raise httpx.ReadError("connection reset")


def _file(body: bytes | httpx.SyncByteStream) -> Any:
    headers = {"content-type": "application/octet-stream",
               "content-disposition": 'attachment; filename="net_r24-k3e2.onnx"'}  # fmt: skip
    if isinstance(body, bytes):
        return lambda request: httpx.Response(200, content=body, headers=headers)
    return lambda request: httpx.Response(200, stream=body, headers=headers)


def test_download_to_a_file_a_folder_or_a_stream(tmp_path: Path) -> None:
    client = _served(_file(b"ONNX bytes"))
    target = client.download("j1", "r24-k3e2", "onnx", str(tmp_path / "m.onnx"))  # a str too
    assert target == tmp_path / "m.onnx" and target.read_bytes() == b"ONNX bytes"
    into = client.download("j1", "r24-k3e2", "onnx", tmp_path)
    assert into == tmp_path / "net_r24-k3e2.onnx" and into.read_bytes() == b"ONNX bytes"
    stream = io.BytesIO()
    assert client.download("j1", "r24-k3e2", "onnx", stream) is None
    assert stream.getvalue() == b"ONNX bytes"


def test_a_download_cut_off_leaves_the_earlier_file_and_no_part(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"the earlier download")
    with pytest.raises(Unreachable, match="connection reset"):
        _served(_file(_Cut())).download("j1", "r24-k3e2", "onnx", target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert target.read_bytes() == b"the earlier download"


def test_a_page_instead_of_a_file_is_refused_and_not_saved(tmp_path: Path) -> None:
    html = {"content-type": "text/html"}
    page = _served(lambda request: httpx.Response(200, text="<html>login</html>", headers=html))
    with pytest.raises(ClientError, match="with text/html and no file name, not hwnas's file"):
        page.download("j1", "r24-k3e2", "onnx", tmp_path / "m.onnx")
    # a static server labels any unknown file octet-stream, but names no attachment
    bytes_only = {"content-type": "application/octet-stream"}
    static = _served(lambda request: httpx.Response(200, text="<html/>", headers=bytes_only))
    with pytest.raises(ClientError, match="octet-stream and no file name, not hwnas's file"):
        static.download("j1", "r24-k3e2", "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_download_through_a_link_writes_through_it_and_keeps_the_link(tmp_path: Path) -> None:
    """`-o /dev/stdout > model.zip` moved the file over /dev/stdout, the machine's link
    (as root): every later write to /dev/stdout went into that file."""
    target = tmp_path / "model.onnx"
    target.write_bytes(b"older")
    link = tmp_path / "stdout"
    link.symlink_to(target)
    assert _served(_file(b"ONNX bytes")).download("j1", "r24-k3e2", "onnx", link) == link
    assert link.is_symlink() and target.read_bytes() == b"ONNX bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "stdout"]


def test_a_redirect_is_an_error_that_names_where_not_an_empty_file(tmp_path: Path) -> None:
    """A TLS proxy's 308 to https: the download wrote an empty model file, exit 0."""
    moved = {"location": "https://hwnas.test/v1/jobs/j1"}
    client = _served(lambda request: httpx.Response(308, headers=moved))
    for call in (lambda: client.job("j1"), lambda: client.download("j1", "s", "onnx", tmp_path)):
        with pytest.raises(ClientError, match="308: the service redirects to https://hwnas.test"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_a_url_without_its_scheme_is_refused_at_once() -> None:
    with pytest.raises(ClientError, match="needs its scheme: http://localhost:8000 or https://"):
        HwnasClient("localhost:8000")


def test_a_wait_without_a_stream_draws_nothing() -> None:
    answers = iter([{"status": "running"}, {"status": "succeeded"}])
    job = {"id": "j", "progress": {"evaluations_done": 1, "budget": 2, "front_size": 1,
                                   "fraction": 0.5}, "message": None}  # fmt: skip
    client = _served(lambda request: httpx.Response(200, json={**job, **next(answers)}))
    assert client.wait("j", poll_s=0.01, out=None)["status"] == "succeeded"


def test_a_keyed_submission_is_sent_again_after_a_failure_that_may_have_stored_it() -> None:
    """503, then no answer, then the job: three sends of one key; a 422 is not sent again;
    retrying without a key is refused (each retry could store another job)."""
    keys: list[str | None] = []
    answers: list[Any] = [
        httpx.Response(503, json={"message": "database down"}),
        httpx.ConnectError("refused"),
        httpx.Response(202, json={"id": "j"}),
    ]

    def serve(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key"))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    client, heard = _served(serve), []
    job = client.submit({}, idempotency_key="k", retry_s=5, pause_s=0.01, on_retry=heard.append)
    assert job == {"id": "j"} and keys == ["k", "k", "k"]
    assert [str(exc).split(": ")[1] for exc in heard] == [
        "503",
        "cannot reach hwnas at http://hwnas.test",
    ]
    answers[:] = [httpx.Response(422, json={"message": "device: unknown"})] * 2
    with pytest.raises(ClientError, match="422"):
        client.submit({}, idempotency_key="k", retry_s=5, pause_s=0.01)
    assert len(keys) == 4
    answers[:] = [httpx.Response(503, json={"message": "down"})] * 3
    with pytest.raises(ClientError, match="503"):
        client.submit({}, idempotency_key="k", retry_s=0.015, pause_s=0.01)
    with pytest.raises(ClientError, match="needs an idempotency_key"):
        client.submit({}, retry_s=5)


def test_a_replayed_job_is_told_from_a_new_one_and_calibrations_are_keyed_too() -> None:
    """The service's Idempotent-Replayed header was dropped: a pipeline could not tell the
    failed job a re-run step got back from a new one; calibrations took no key (audit 30)."""
    sent: list[tuple[str, str | None]] = []

    def serve(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, request.headers.get("idempotency-key")))
        replayed = {"Idempotent-Replayed": "true"} if len(sent) > 1 else {}
        return httpx.Response(202, json={"id": "j", "status": "failed"}, headers=replayed)

    client = _served(serve)
    first = client.submit({}, idempotency_key="run-1")
    again = client.submit({}, idempotency_key="run-1")
    assert (first.replayed, again.replayed) == (False, True) and again == {
        "id": "j",
        "status": "failed",
    }
    calibration = client.calibrate("cpu-1t", {}, idempotency_key="cal-1", retry_s=5)
    assert calibration.replayed
    assert sent[-1] == ("/v1/devices/cpu-1t/calibrations", "cal-1")


def test_a_key_the_service_would_refuse_is_refused_before_anything_is_sent() -> None:
    sent: list[httpx.Request] = []
    client = _served(lambda request: sent.append(request) or httpx.Response(202, json={}))
    for wrong in ["", "a b", "é", "x" * 256]:
        with pytest.raises(ClientError, match="1-255 printable ASCII"):
            client.submit({}, idempotency_key=wrong, retry_s=5)
    assert sent == []
    assert IDEMPOTENCY_KEY_FORM.pattern == _KEY_FORM.pattern  # the client's rule is the API's


def test_a_url_with_credentials_is_refused_without_showing_them() -> None:
    """Security audit 31: httpx sent ``user:pass@`` as Basic auth in place of the API key,
    and "cannot reach hwnas at http://bob:S3cret@..." printed the password."""
    with pytest.raises(ClientError) as refused:
        HwnasClient("http://bob:S3cret@127.0.0.1:1", api_key="k" * 16)
    assert "S3cret" not in str(refused.value) and "bob" not in str(refused.value)
    assert "'http://127.0.0.1:1' was given with a user name or password" in str(refused.value)
