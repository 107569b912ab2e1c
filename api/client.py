"""A small HTTP client for hwnas, used by the CLI and by pipelines."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

FINISHED = {"succeeded", "failed", "cancelled"}


#: How the service begins a job's message that says why the job is not progressing.
WAITING = "waiting:"


class ClientError(RuntimeError):
    """The service answered with an error; the message is the service's own."""


class HwnasClient:
    """``api_key``: sent as ``Authorization: Bearer`` (for a service with HWNAS_API_KEYS)."""

    def __init__(
        self, base_url: str, *, timeout: float = 120.0, api_key: str | None = None
    ) -> None:
        if api_key and not (api_key.isascii() and api_key.isprintable()):
            raise ClientError("an API key is printable ASCII (the server refuses others)")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:  # refused, timed out, name not resolved, cut off
            where = self.http.base_url
            raise ClientError(f"{method} {path}: cannot reach hwnas at {where}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("message") or body.get("detail")
            except ValueError:
                detail = response.text
            raise ClientError(f"{method} {path}: {response.status_code}: {detail}")
        return response

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/jobs", json=spec).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def pareto(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}/pareto").json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def jobs(self, *, offset: int = 0, limit: int = 50, **filters: str) -> dict[str, Any]:
        """A page of jobs, newest first (``filters``: ``status``, ``kind``)."""
        params = {"offset": offset, "limit": limit, **filters}
        return self._call("GET", "/v1/jobs", params=params).json()

    def evaluations(self, job_id: str, *, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """A page of the job's evaluations, in the order they were measured."""
        params = {"offset": offset, "limit": limit}
        return self._call("GET", f"/v1/jobs/{job_id}/evaluations", params=params).json()

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 0.5,
        out: TextIO = sys.stderr,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the job finishes, drawing a progress bar on ``out``."""
        started = time.monotonic()
        last = last_note = ""
        while True:
            job = self.job(job_id)
            message = job.get("message") or ""
            waits = job["status"] == "queued" or message.startswith(WAITING)
            note = message if waits else ""  # a running job waits when its worker died
            if note and note != last_note:  # why it waits: once, on a line of its own
                out.write(("\n" if last else "") + note + "\n")
                last, last_note = "", note
            line = _progress_line(job)
            if line != last:  # redraw only on change: logs of a pipeline stay short
                redraw = "\r\x1b[K" if out.isatty() else "\n" if last else ""
                out.write(redraw + line)
                out.flush()
                last = line
            if job["status"] in FINISHED:
                out.write("\n")
                return job
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                out.write("\n" if last else "")  # the bar's line ends before what follows
                out.flush()
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")
            time.sleep(poll_s)

    def calibrate(self, device: str, body: dict[str, Any]) -> dict[str, Any]:
        """Queue a calibration of ``device`` (``supernet``, ``n_samples``, ``seed``,
        ``kind``); the job, which ``wait`` follows like a search."""
        return self._call("POST", f"/v1/devices/{device}/calibrations", json=body).json()

    def calibrations(
        self, device: str, *, supernet: str | None = None, job_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Stored predictor versions of ``device`` (newest first per supernet)."""
        params = {k: v for k, v in (("supernet", supernet), ("job_id", job_id)) if v}
        url = f"/v1/devices/{device}/calibrations"
        return list(self._call("GET", url, params=params).json()["data"])

    def download(self, job_id: str, subnet_id: str, fmt: str, path: Path) -> Path:
        url = f"/v1/jobs/{job_id}/subnets/{subnet_id}/export"
        response = self._call("GET", url, params={"format": fmt})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(response.content)
        return path


def _progress_line(job: dict[str, Any]) -> str:
    p = job["progress"]
    width = 30
    filled = int(width * p["fraction"])
    bar = "#" * filled + "-" * (width - filled)
    hv = f" hv {p['hypervolume']:.3f}" if p.get("hypervolume") is not None else ""
    front = "" if job.get("kind") == "calibration" else f"front {p['front_size']}{hv}"
    return f"[{bar}] {p['evaluations_done']}/{p['budget']} {job['status']:<9} {front}"
