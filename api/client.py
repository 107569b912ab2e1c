"""A small HTTP client for hwnas, used by the CLI and by pipelines.

Every failure is a :class:`ClientError` (or one of its kinds) that says what went wrong and
carries what a pipeline branches on: ``status`` (None when no answer came), the service's
``error`` class and ``field``, and ``transient`` (worth trying again). ``wait`` rides out a
service that restarts or is briefly unreachable (a job survives that: it resumes).
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO
from urllib.parse import quote, urlsplit

import httpx

from core.redact import key_label

FINISHED = {"succeeded", "failed", "cancelled"}


#: How the service begins a job's message that says why the job is not progressing.
WAITING = "waiting:"

#: An Idempotency-Key as the service takes it (``api.routes.jobs.IDEMPOTENCY_KEY_FORM``).
_KEY_FORM = re.compile(r"[!-~]{1,255}")

#: The header with which the service says it answered with the job an earlier request with
#: the same Idempotency-Key created.
REPLAYED_HEADER = "Idempotent-Replayed"


class _LogLines:
    """When ``wait``'s progress is worth a line of its own where its output is no terminal
    (a CI log): a new status, each tenth of the budget, or ``EVERY_S`` since the last line;
    a line per evaluation made 10,000 lines of a 10,000-evaluation job (audit 30)."""

    EVERY_S = 30.0

    def __init__(self) -> None:
        self.status: str | None = None
        self.tenth = -1
        self.at = -math.inf

    def due(self, job: dict[str, Any]) -> bool:
        tenth = int(10 * float((job.get("progress") or {}).get("fraction") or 0.0))
        now = time.monotonic()
        if job["status"] == self.status and tenth == self.tenth and now - self.at < self.EVERY_S:
            return False
        self.status, self.tenth, self.at = job["status"], tenth, now
        return True


class Submitted(dict[str, Any]):
    """A job as ``submit`` or ``calibrate`` got it back (a dict, as the service's JSON);
    ``replayed``: the service answered with the job an earlier request with the same
    idempotency key created, not a new one (a key stays bound to its job whatever its
    outcome: a failed step sent again with its key gets the failed job back)."""

    replayed: bool = False


#: Answers worth asking again: the service or a proxy in front of it is (re)starting.
TRANSIENT_STATUSES = frozenset({502, 503, 504})


class ClientError(RuntimeError):
    """A request hwnas refused, or that got no usable answer.

    ``status``: the HTTP status, None when no answer came; ``error``: the service's error
    class (``NotFound``, ``Conflict``, ``InvalidInput``, ...) and ``field`` the request field
    at fault, when the service said; ``body``: its JSON answer, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        field: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.field, self.body = status, error, field, body

    @property
    def transient(self) -> bool:
        """Worth trying again later: no answer (``Unreachable``), or a 502/503/504 (database
        or service down); not a request refused before it was sent, nor an answer that says
        what is wrong with it."""
        return isinstance(self, Unreachable) or self.status in TRANSIENT_STATUSES


class Unreachable(ClientError):
    """No answer: the connection was refused or cut, the name did not resolve, or nothing
    came back in time."""


class WaitTimeout(ClientError, TimeoutError):
    """``wait`` gave up: the job had not finished within ``timeout_s``; ``job`` is the job as
    the last poll found it."""

    def __init__(self, message: str, job: dict[str, Any]) -> None:
        super().__init__(message)
        self.job = job


class HwnasClient:
    """``api_key``: sent as ``Authorization: Bearer`` (for a service with HWNAS_API_KEYS);
    ``timeout``: seconds one request may take (``wait`` gives each poll no more than the
    time it has left)."""

    def __init__(
        self, base_url: str, *, timeout: float = 120.0, api_key: str | None = None
    ) -> None:
        if api_key and not (api_key.isascii() and api_key.isprintable()):
            raise ClientError("an API key is printable ASCII (the server refuses others)")
        if not base_url.startswith(("http://", "https://")):
            raise ClientError(
                f"the service's URL {base_url!r} needs its scheme: http://{base_url} or "
                f"https://{base_url}"
            )
        if (url := httpx.URL(base_url)).userinfo:  # httpx sent it as Basic auth, not the
            raise ClientError(  # key, and the errors below printed it (security audit 31)
                f"the service's URL {str(url.copy_with(userinfo=b''))!r} was given with a user "
                "name or password: hwnas "
                "takes an API key (--api-key, HWNAS_API_KEY), not credentials in its URL; "
                "leave them out"
            )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        #: How the service names this client's API key (a job's ``submitted_by``; None
        #: without a key): ``jobs(submitted_by=client.key_label)`` lists its own jobs.
        self.key_label = key_label(api_key.encode()) if api_key else None
        self.timeout = timeout
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def close(self) -> None:
        """Close the connections it keeps (``with HwnasClient(...) as client:`` does this)."""
        self.http.close()

    def __enter__(self) -> HwnasClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        if timeout is not None:  # else the client's own (a TestClient takes none)
            kwargs["timeout"] = timeout
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(method, path, exc) from exc
        _raise_for_error(method, path, response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._parsed(method, path, self._call(method, path, **kwargs))

    def _parsed(self, method: str, path: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise ClientError(
                f"{method} {path}: {self.http.base_url} answered {response.status_code} with "
                f"{kind}, not hwnas's JSON: is that the hwnas service's URL?",
                status=response.status_code,
            ) from None

    def _unreachable(self, method: str, path: str, exc: httpx.HTTPError) -> Unreachable:
        where = self.http.base_url
        if isinstance(exc, httpx.TimeoutException):
            why = f"no answer from hwnas at {where} in time ({type(exc).__name__})"
        else:
            why = f"cannot reach hwnas at {where}: {exc}"
        return Unreachable(f"{method} {path}: {why}")

    # -- jobs -------------------------------------------------------------------------------

    def submit(
        self,
        spec: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        retry_s: float = 0.0,
        pause_s: float = 1.0,
        on_retry: Callable[[ClientError], None] | None = None,
    ) -> Submitted:
        """Submit a search job (the body of ``POST /v1/jobs``); the job as stored (queued).

        With ``idempotency_key`` the service stores it once however often it is sent (a
        retry gets the job the first request created: ``Submitted.replayed``, whatever that
        job's status now, a failed one's too), so a failure that may have stored it (no
        answer, a 502/503/504) is sent again, every ``pause_s``, for up to ``retry_s``
        seconds, before it is raised; ``on_retry`` hears of each failure that differs from
        the one before. ``retry_s`` without a key is refused: each retry could store
        another job."""
        return self._post_job("/v1/jobs", spec, idempotency_key, retry_s, pause_s, on_retry)

    def _post_job(
        self,
        path: str,
        body: dict[str, Any],
        idempotency_key: str | None,
        retry_s: float,
        pause_s: float,
        on_retry: Callable[[ClientError], None] | None,
    ) -> Submitted:
        """POST a job (a search, a calibration) as ``submit`` says."""
        if retry_s > 0 and idempotency_key is None:
            raise ClientError("retrying a submission needs an idempotency_key")
        if idempotency_key is not None and not _KEY_FORM.fullmatch(idempotency_key):
            raise ClientError(  # the service's rule: checked before anything is sent
                f"an idempotency key is 1-255 printable ASCII characters, no spaces: "
                f"{idempotency_key!r}"
            )
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        give_up, said = time.monotonic() + retry_s, ""
        while True:
            try:
                response = self._call("POST", path, json=body, headers=headers)
                job = Submitted(self._parsed("POST", path, response))
                job.replayed = response.headers.get(REPLAYED_HEADER, "").lower() == "true"
                return job
            except ClientError as exc:
                if not exc.transient or time.monotonic() + pause_s > give_up:
                    raise
                if on_retry is not None and str(exc) != said:
                    on_retry(exc)
                said = str(exc)
            time.sleep(pause_s)

    def job(self, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """The job's state now: status, progress, timing, message, error."""
        return dict(self._json("GET", f"/v1/jobs/{_job(job_id)}", timeout=timeout))

    def pareto(self, job_id: str) -> dict[str, Any]:
        """The job's front as it stands (``status`` says whether the job has ended)."""
        return dict(self._json("GET", f"/v1/jobs/{_job(job_id)}/pareto"))

    def delete(self, job_id: str) -> None:
        """Delete a job that has ended, its evaluations and exported files; a
        ``ClientError`` with status 409 while it is queued or running (cancel it first)."""
        self._call("DELETE", f"/v1/jobs/{_job(job_id)}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job (one cancelled already: as it is); a ``ClientError`` with status 409
        if it had succeeded or failed."""
        return dict(self._json("POST", f"/v1/jobs/{_job(job_id)}/cancel"))

    def label(self, job_id: str, labels: dict[str, str | None]) -> dict[str, Any]:
        """Set (a value) or remove (None) the job's labels named in ``labels``, keeping its
        others (``PATCH /v1/jobs/{id}``); the job as changed. A ``ClientError`` with status
        422 if more than 16 would remain."""
        path = f"/v1/jobs/{_job(job_id)}"
        try:
            return dict(self._json("PATCH", path, json={"labels": labels}))
        except ClientError as exc:
            if exc.status != 405:
                raise
            raise ClientError(
                f"PATCH {path}: the service cannot change a job's labels (a version before "
                "PATCH /v1/jobs/{id})",
                status=405,
            ) from None

    def jobs(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        status: str | Sequence[str] | None = None,
        kind: str | None = None,
        after: str | None = None,
        labels: dict[str, str | None] | None = None,
        submitted_by: str | None = None,
    ) -> dict[str, Any]:
        """One page of jobs, newest first, of one ``status`` (or any of several) and
        ``kind`` if given, carrying every one of ``labels`` (a value of None: the name with
        any value), submitted with the API key labelled ``submitted_by`` if given
        (``key_label``: this client's): ``data``, ``count`` (the number of all that match)
        and ``next_after``, the next page's ``after`` (None after the last). ``iter_jobs``
        reads every page."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        given = (("kind", kind), ("after", after), ("submitted_by", submitted_by))
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        params.update({k: v for k, v in given if v is not None})
        if statuses:
            params["status"] = statuses
        if labels:
            params["label"] = [n if v is None else f"{n}={v}" for n, v in labels.items()]
        page = dict(self._json("GET", "/v1/jobs", params=params))
        asked = labels or {}
        for job in page["data"] if asked else ():
            carried = job.get("labels")
            if carried is None or any(
                n not in carried or v not in (None, carried[n]) for n, v in asked.items()
            ):  # an older server ignores the filter: its page would be every job
                raise ClientError(
                    "the service does not filter jobs by label (a version before labels)"
                )
        if submitted_by is not None and any(
            job.get("submitted_by") != (submitted_by or None) for job in page["data"]
        ):  # a version before 0011 ignores it too: --mine cancelled every team's jobs
            raise ClientError(  # (upgrade audit 34)
                "the service does not filter jobs by API key (a version before submitted_by)"
            )
        if len(statuses) > 1 and sorted(page.get("status", [])) != sorted(statuses):
            raise ClientError(  # an older server filters on the last of several, and says not
                "the service does not filter jobs by several statuses (a version before that)"
            )
        return page

    def iter_jobs(
        self,
        *,
        page: int = 200,
        status: str | Sequence[str] | None = None,
        kind: str | None = None,
        labels: dict[str, str | None] | None = None,
        submitted_by: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every job of that ``status``, ``kind``, ``labels`` and ``submitted_by``, newest
        first, a page at a time, each once: a page starts after the last job of the one
        before (``after``), so jobs submitted meanwhile move none (a server that gives no
        ``next_after``: by offset)."""
        where: dict[str, Any] = {
            "status": status, "kind": kind, "labels": labels, "submitted_by": submitted_by
        }  # fmt: skip
        answer = self.jobs(limit=page, **where)
        if "next_after" not in answer:  # an older server: its first page read again
            yield from self._pages(lambda offset: self.jobs(offset=offset, limit=page, **where))
            return
        after = None
        while True:
            yield from answer["data"]
            following = answer["next_after"]
            if not answer["data"] or following is None or following == after:  # the end
                return
            after = following
            answer = self.jobs(limit=page, after=after, **where)

    def evaluations(self, job_id: str, *, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """One page of the job's evaluations, in the order they were measured: ``data`` and
        ``count`` (all of them). ``iter_evaluations`` reads every page."""
        params = {"offset": offset, "limit": limit}
        return dict(self._json("GET", f"/v1/jobs/{_job(job_id)}/evaluations", params=params))

    def iter_evaluations(self, job_id: str, *, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every evaluation of the job, in the order they were measured."""
        yield from self._pages(lambda offset: self.evaluations(job_id, offset=offset, limit=page))

    @staticmethod
    def _pages(read: Callable[[int], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            answer = read(offset)
            rows = answer["data"]
            yield from rows
            offset += len(rows)
            if not rows or offset >= answer["count"]:
                return

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 0.5,
        out: TextIO | None = sys.stderr,
        timeout_s: float | None = None,
        retry_s: float = 300.0,
    ) -> dict[str, Any]:
        """Poll until the job finishes, drawing a progress bar on ``out`` (None: nothing
        drawn); the finished job.

        Raises ``WaitTimeout`` once ``timeout_s`` passed (each poll waits for an answer no
        longer than what is left of it). A service that does not answer or answers 502/503/504
        (restarting, its database down) is polled again, said once on ``out``, until it is
        back, ``timeout_s`` runs out, or it has failed for ``retry_s`` seconds in a row; then
        that ``ClientError`` is raised. Other errors (404, 401) are raised at once.
        """
        out = out if out is not None else _Quiet()
        started = time.monotonic()
        last = last_note = said = ""
        logged = _LogLines()
        failing_since: float | None = None
        while True:
            left = None if timeout_s is None else timeout_s - (time.monotonic() - started)
            try:
                job = self.job(job_id, timeout=_poll_timeout(self.timeout, left))
            except ClientError as exc:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                out_of_time = left is not None and left <= poll_s
                if not exc.transient or out_of_time or now - failing_since >= retry_s:
                    out.write("\n" if last else "")
                    out.flush()
                    raise
                if str(exc) != said:  # once per distinct failure, on a line of its own
                    out.write(("\n" if last else "") + f"hwnas: {exc}; trying again for up "
                              f"to {retry_s:.0f} s (Ctrl+C stops)\n")  # fmt: skip
                    out.flush()
                    last, said, logged = "", str(exc), _LogLines()
                pause = max(poll_s, 1.0)
                time.sleep(pause if left is None else min(pause, left))
                continue
            failing_since, said = None, ""
            message = job.get("message") or ""
            waits = job["status"] == "queued" or message.startswith(WAITING)
            note = message if waits else ""  # a running job waits when its worker died
            if note and note != last_note:  # why it waits: once, on a line of its own
                out.write(("\n" if last else "") + note + "\n")
                last, last_note, logged = "", note, _LogLines()  # the bar again after it
            line = _progress_line(job)
            terminal = out.isatty()
            if line != last and (terminal or logged.due(job)):  # redrawn on change; a log
                redraw = "\r\x1b[K" if terminal else "\n" if last else ""  # gets fewer lines
                out.write(redraw + line)
                out.flush()
                last = line
            if job["status"] in FINISHED:
                out.write("\n")
                return job
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                out.write("\n" if last else "")  # the bar's line ends before what follows
                out.flush()
                raise WaitTimeout(f"job {job_id} still {job['status']} after {timeout_s} s", job)
            time.sleep(poll_s)

    # -- catalog ----------------------------------------------------------------------------

    def supernets(self) -> list[dict[str, Any]]:
        """The registered supernets: genes, space, metrics, whether they have validation
        data of their own, and a note (random weights, or why one is not usable)."""
        return list(self._json("GET", "/v1/supernets"))

    def devices(self) -> list[dict[str, Any]]:
        """The hardware profiles: kind, runtime, threads, batch size, whether a live worker
        serves each now (``served``), the supernets it gives latencies of, and its jobs
        ``queued`` and ``running``."""
        return list(self._json("GET", "/v1/devices"))

    # -- calibrations -----------------------------------------------------------------------

    def calibrate(
        self,
        device: str,
        body: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        retry_s: float = 0.0,
        pause_s: float = 1.0,
        on_retry: Callable[[ClientError], None] | None = None,
    ) -> Submitted:
        """Queue a calibration of ``device`` (``supernet``, ``n_samples``, ``seed``,
        ``kind``); the job, which ``wait`` follows like a search. ``idempotency_key``,
        ``retry_s``: as ``submit`` (a retried step queued a second calibration: audit 30)."""
        path = f"/v1/devices/{_segment(device, 'device')}/calibrations"
        return self._post_job(path, body, idempotency_key, retry_s, pause_s, on_retry)

    def calibrations(
        self, device: str, *, supernet: str | None = None, job_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Stored predictor versions of ``device`` (newest first per supernet), every page."""
        given = {k: v for k, v in (("supernet", supernet), ("job_id", job_id)) if v}
        url = f"/v1/devices/{_segment(device, 'device')}/calibrations"

        def page(offset: int) -> dict[str, Any]:
            params = {**given, "offset": offset, "limit": 500}
            return dict(self._json("GET", url, params=params))

        return list(self._pages(page))

    # -- exports ----------------------------------------------------------------------------

    def download(
        self, job_id: str, subnet_id: str, fmt: str, path: str | os.PathLike[str] | BinaryIO
    ) -> Path | None:
        """The sub-network as a file (``fmt``: onnx, torchscript, state_dict); the path
        written, or None when ``path`` is a binary stream (``sys.stdout.buffer``).

        A folder gets the file under the service's name for it. A file is written in full
        beside its final name and then moved there: an interrupted download leaves no part
        file and does not clobber an earlier one. A device or pipe (``/dev/stdout``) is
        written to as the bytes arrive.
        """
        url = f"/v1/jobs/{_job(job_id)}/subnets/{_segment(subnet_id, 'subnet id')}/export"
        try:
            with self.http.stream("GET", url, params={"format": fmt}) as response:
                if response.status_code >= 300:
                    response.read()
                    _raise_for_error("GET", url, response)
                kind = response.headers.get("content-type", "")
                attachment = response.headers.get("content-disposition", "")
                if not (kind.startswith("application/octet-stream") and attachment):
                    raise ClientError(
                        f"GET {url}: {self.http.base_url} answered {response.status_code} with "
                        f"{kind or 'no content type'}{'' if attachment else ' and no file name'}"
                        ", not hwnas's file: is that hwnas's URL?",
                        status=response.status_code,
                    )
                if not isinstance(path, str | os.PathLike):
                    _copy(response, path)
                    return None
                return _save(response, Path(path))
        except httpx.HTTPError as exc:
            raise self._unreachable("GET", url, exc) from exc


class _Quiet(io.StringIO):
    """A stream that keeps nothing (``wait(out=None)``)."""

    def write(self, text: str) -> int:
        return len(text)


def _segment(value: str, what: str) -> str:
    """``value`` as one segment of a request's path, percent-escaped (a ``?`` or ``#`` in it
    stays part of it); a ``ClientError`` for an empty one, or one holding ``/`` (the server
    would read the escaped ``/`` as a separator: another route) or being ``.`` or ``..``."""
    if not value.strip():
        raise ClientError(f"give a {what} (got an empty one)")
    if "/" in value or value in (".", ".."):
        raise ClientError(f"{value!r} is not a {what}")
    return quote(value, safe="")


def _job(job_id: str) -> str:
    """A job id as a path segment; the job's own URL (its ``url``, as ``submit`` answers
    it) is taken too, pasted whole."""
    parts = urlsplit(job_id)
    head, marker, tail = parts.path.rstrip("/").rpartition("/v1/jobs/")
    if parts.scheme in ("http", "https") and marker and tail and "/" not in tail:
        return _segment(tail, "job id")
    return _segment(job_id, "job id")


def _poll_timeout(timeout: float, left: float | None) -> float:
    """One poll's time for an answer: the client's, or less when the wait has less left."""
    return timeout if left is None else min(timeout, max(left, 1.0))


def _raise_for_error(method: str, path: str, response: httpx.Response) -> None:
    if 300 <= response.status_code < 400:  # not followed: a POST or a file must not be lost
        where = response.headers.get("location", "elsewhere")
        raise ClientError(
            f"{method} {path}: {response.status_code}: the service redirects to {where}: "
            "give that URL (--url, HWNAS_URL)",
            status=response.status_code,
        )
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        text = (response.text.strip().splitlines() or [""])[0][:200]
        raise ClientError(
            f"{method} {path}: {response.status_code}: {text or response.reason_phrase} "
            "(not an answer of hwnas's: is the URL right?)",
            status=response.status_code,
        ) from None
    said = body if isinstance(body, dict) else {}
    raise ClientError(
        f"{method} {path}: {response.status_code}: {said.get('message') or said.get('detail')}",
        status=response.status_code,
        error=said.get("error"),
        field=said.get("field") or _first_location(said.get("detail")),
        body=body,
    )


def _first_location(detail: Any) -> str | None:
    """The field of a request validation 422 (FastAPI's list: ``loc`` is ["body", "budget",
    "evaluations"]): "budget.evaluations"."""
    if not (isinstance(detail, list) and detail and isinstance(detail[0], dict)):
        return None
    where = [str(part) for part in detail[0].get("loc", ())[1:]]
    return ".".join(where) or None


def _filename(response: httpx.Response) -> str:
    """The name the service gives the file (Content-Disposition), without any folder."""
    disposition = response.headers.get("content-disposition", "")
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "filename":
            return Path(value.strip('"')).name
    return "subnet"


def _copy(response: httpx.Response, stream: BinaryIO) -> None:
    for chunk in response.iter_bytes():
        stream.write(chunk)
    stream.flush()


def _save(response: httpx.Response, path: Path) -> Path:
    if path.is_dir():
        path = path / _filename(response)
    # A link (/dev/stdout, /proc/self/fd/1, a link the user made) or something that is not a
    # regular file (a FIFO, a device): written through as it is, never replaced (moving a
    # file over /dev/stdout replaced the machine's link with the model).
    if path.is_symlink() or (path.exists() and not path.is_file()):
        with path.open("wb") as stream:
            _copy(response, stream)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with scratch.open("xb") as stream:  # the permissions any new file gets (umask)
            _copy(response, stream)
        scratch.replace(path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    return path


def _progress_line(job: dict[str, Any]) -> str:
    p = job["progress"]
    width = 30
    filled = int(width * p["fraction"])
    bar = "#" * filled + "-" * (width - filled)
    hv = f" hv {p['hypervolume']:.3f}" if p.get("hypervolume") is not None else ""
    front = "" if job.get("kind") == "calibration" else f"front {p['front_size']}{hv}"
    failed = f" ({p['evaluations_failed']} failed)" if p.get("evaluations_failed") else ""
    done = f"{p['evaluations_done']}/{p['budget']}{failed}"
    return f"[{bar}] {done} {job['status']:<9} {front}"
