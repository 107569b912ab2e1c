"""The ``hwnas`` command: serve the API, submit and follow jobs, download sub-networks."""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import ipaddress
import itertools
import json
import logging.config
import math
import os
import re
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from api.client import WAITING, ClientError, HwnasClient, Submitted, WaitTimeout
from core.errors import HwnasError, InvalidInput
from core.settings import Settings, get_settings

_URL = "http://127.0.0.1:8000"
DEFAULT_URL = os.environ.get("HWNAS_URL", _URL)
DEFAULT_API_KEY = os.environ.get("HWNAS_API_KEY")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def parse_constraints(items: list[str]) -> dict[str, dict[str, float]]:
    """``["latency_ms<=2", "accuracy>=0.9"]`` -> ``{"latency_ms": {"max": 2.0}, ...}``."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        match = _CONSTRAINT.match(item)
        bound = _finite(match.group(3)) if match else None
        if match is None or bound is None:
            raise InvalidInput(
                f"bad constraint {item!r}: write NAME<=VALUE or NAME>=VALUE with a finite number",
                field="--constraint",
            )
        name, op, _ = match.groups()
        side = "max" if op == "<=" else "min"
        if side in out.setdefault(name, {}):  # the last one would have won, silently
            raise InvalidInput(
                f"bad constraint {item!r}: {name}{op} is given twice "
                f"({out[name][side]:g} and {bound:g}); give each bound once",
                field="--constraint",
            )
        out[name][side] = bound
    return out


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_objectives(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, _, sense = item.partition("=")
        if sense not in ("min", "max"):
            raise InvalidInput(
                f"bad objective {item!r}: write NAME=min or NAME=max", field="--objective"
            )
        if name in out:  # the last one would have won, silently
            raise InvalidInput(
                f"bad objective {item!r}: {name} is given twice ({name}={out[name]} and "
                f"{item}); give each objective once",
                field="--objective",
            )
        out[name] = sense
    return out


#: The supernet a job searches when ``--supernet`` names none.
DEFAULT_SUPERNET = "fmnist-ofa-cnn"


#: A job's objectives where no --objective is given.
DEFAULT_OBJECTIVES = ("accuracy=max", "latency_ms=min")


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The job the options ask for. Data given without ``--supernet`` is searched on the
    default supernet, which is said on stderr (a user's own data, whose shape the default
    took, was searched on the built-in Fashion-MNIST network without a word: audit 29)."""
    if args.supernet is None and args.validation_data:
        print(
            f"hwnas: searching {DEFAULT_SUPERNET}, the default supernet, on "
            f"{args.validation_data} (--supernet names another: hwnas supernets)",
            file=sys.stderr,
        )
    objectives = parse_objectives(args.objective or DEFAULT_OBJECTIVES)
    dropped = [aim for aim in DEFAULT_OBJECTIVES if aim.partition("=")[0] not in objectives]
    if dropped:  # help audit 34: --objective params=min searched params alone, unsaid
        print(
            f"hwnas: objectives {', '.join(f'{n}={d}' for n, d in objectives.items())} "
            f"(--objective replaces the defaults: add --objective {' --objective '.join(dropped)} "
            "to keep them)",
            file=sys.stderr,
        )
    spec = {
        "supernet": args.supernet or DEFAULT_SUPERNET,
        "device": args.device,
        "objectives": objectives,
        "constraints": parse_constraints(args.constraint or []),
        "strategy": args.strategy,
        "seed": args.seed,
        "warm_start": not args.no_warm_start,
    }
    if args.no_latency_prior:  # only then: a server before it refuses the key (422)
        spec["latency_prior"] = False
    if args.budget is not None:  # else the server's default (60, or its cap when lower)
        spec["budget"] = {"evaluations": args.budget}
    if args.failures is not None:
        spec.setdefault("budget", {})["failures"] = args.failures
    if args.validation_data:
        spec["validation_data"] = args.validation_data
    if args.label:  # only then: a server before labels refuses the key (422)
        spec["labels"] = parse_labels(args.label, values=True)
    return spec


def parse_labels(
    given: list[str], *, values: bool, option: str = "--label"
) -> dict[str, str | None]:
    """``--label NAME=VALUE`` arguments (or ``option``'s) as a dict (``values=False``: a
    NAME alone is taken too, as None: any value); ``InvalidInput`` for one without a name."""
    labels: dict[str, str | None] = {}
    for item in given:
        name, equals, value = item.partition("=")
        if not name or not (equals or not values):
            form = "NAME=VALUE" if values else "NAME=VALUE or NAME"
            raise InvalidInput(f"{option} {item!r}: give {form}", field="label")
        if name in labels:
            raise InvalidInput(f"{option} {name} is given twice", field="label")
        labels[name] = value if equals else None
    return labels


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.auth import server_keys
    from api.log_config import serve_log_config

    # Before the settings warn of anything (a misspelt variable): in the format asked for,
    # so that a collector of JSON lines gets them as JSON too (review 29).
    logging.config.dictConfig(serve_log_config("json" if _json_logs() else "text"))
    settings = get_settings()

    def warn(text: str) -> None:
        if settings.log_format == "json":
            logging.getLogger("api.cli").warning("%s", text)
        else:
            print(f"hwnas: warning: {text}", file=sys.stderr)

    if settings.api_processes > 1 and settings.is_embedded:
        raise InvalidInput(
            "HWNAS_API_PROCESSES > 1 needs the distributed mode (HWNAS_BROKER_URL set): "
            "in the embedded mode one process owns the in-process worker and its database",
            field="HWNAS_API_PROCESSES",
        )
    sock = _check_before_serving(settings, args.host, args.port)
    keys = server_keys(settings)
    keyed = bool(keys.keys)  # "," is no key (tenancy audit 33)
    if keys.admins and not keys.own_jobs_only:
        warn(  # security test 34 L5: they did nothing, unsaid
            "HWNAS_ADMIN_API_KEYS are keys like the others while HWNAS_JOB_VISIBILITY is "
            "all: every key sees every job (set it to own to keep teams to their own jobs)"
        )
    if not keyed and os.environ.get("HWNAS_API_KEY"):
        warn(  # the client's variable, one letter short of the server's (ops audit 29)
            "HWNAS_API_KEY is set, HWNAS_API_KEYS is not: this server requires no key "
            "(HWNAS_API_KEY is what clients send; HWNAS_API_KEYS, the keys a server takes)"
        )
    if not keyed and not _loopback(args.host):
        warn(
            f"serving on {args.host} without API keys: whoever reaches this port may submit "
            "jobs, cancel them and download every export; set HWNAS_API_KEYS (README, API "
            "keys)"
        )
    if keyed and not settings.public_url and not _loopback(args.host):
        warn(  # a shared service behind a proxy, most likely (security audit 31)
            f"serving on {args.host} without HWNAS_PUBLIC_URL: job URLs and redirects take "
            "their host from each request's Host header, which a client chooses; set "
            "HWNAS_PUBLIC_URL to the address clients reach (README, Configuration)"
        )
    config = uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=settings.api_processes,
        access_log=settings.access_log,
        loop=settings.serve_loop,
        log_level="info",
        log_config=serve_log_config(settings.log_format),
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    logging.getLogger("api.cli").info(  # uvicorn says nothing of a socket it is handed
        "serving on http://%s:%d (Ctrl+C stops)", shown, sock.getsockname()[1]
    )
    with sock:  # served on as bound by the check: no other server can take the port between
        server = uvicorn.Server(config)
        try:
            if config.workers > 1:
                from uvicorn.supervisors import Multiprocess

                # uvicorn up to 0.35 at least takes the processes' target; later ones make it
                takes_target = "target" in inspect.signature(Multiprocess).parameters
                target = {"target": server.run} if takes_target else {}
                Multiprocess(config, sockets=[sock], **target).run()
            else:
                server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        except SystemExit as exc:  # uvicorn's 3: the app could not start
            if exc.code not in (0, None):
                raise _not_started(exc.code) from None
    if config.workers == 1 and not server.started:
        raise _not_started(3)
    return 0


def _not_started(code: object) -> InvalidInput:
    return InvalidInput(
        f"the server could not start (uvicorn's exit code {code}; its reason is above)"
    )


def _loopback(host: str) -> bool:
    """Whether ``host`` (``--host``) is reached from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def _check_before_serving(settings: Settings, host: str, port: int) -> socket.socket:
    """What would stop the app's start-up, checked here, so it is one line and an exit
    code of 2 (uvicorn prints a traceback per process, and its supervisor of several
    processes exits 0 when they fail to start); the listening socket to serve on, bound."""
    from api.auth import server_keys
    from models.registry import check_checkpoints
    from store.db import ready_database
    from workers.dispatch import local_devices

    server_keys(settings)  # a bad key would fail each process's start-up
    _check_data_dir(settings.data_dir)
    check_checkpoints()  # loads the plugins: one that does not load is a PluginError now
    if settings.is_embedded:
        local_devices(settings)  # a device name that is no profile
    ready_database(
        settings.database_url, migrate=settings.auto_migrate, wait_s=settings.migration_wait_s
    )
    return _bind(host, port)


def _bind(host: str, port: int) -> socket.socket:
    """The socket to serve on, bound before the app starts, so a port another server holds
    is refused before the embedded worker resumes any queued job (uvicorn binds after the
    app's start-up: operator probe, session 22), and the port cannot be taken between this
    check and serving (review 23b, M5: on Linux, two sockets with ``SO_REUSEADDR`` may both
    bind a port nobody listens on yet, hence listening here). Bound as uvicorn binds
    ``--host``/``--port``: IPv6 when the host holds a ":", ``SO_REUSEADDR``, inheritable by
    uvicorn's processes. Connections made while the app starts wait in the backlog."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
        sock.set_inheritable(True)
        return sock
    except OSError as exc:
        sock.close()
        raise InvalidInput(
            f"cannot serve on {host} port {port}: {exc.strerror or exc} (another server on "
            "it? choose another with --port)",
            field="--port",
        ) from None


def _check_data_dir(data_dir: Path) -> None:
    """Made if need be, and writable: every export was a 500 otherwise (operator probe,
    session 22)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise InvalidInput(
            f"HWNAS_DATA_DIR {str(data_dir)!r} is not a writable directory: {exc.strerror or exc}",
            field="HWNAS_DATA_DIR",
        ) from None


#: How long ``hwnas submit`` asks again a service that restarts or does not answer.
SUBMIT_RETRY_S = 60.0


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit and print the job's id (``_queued``)."""
    client = _client(args)
    job = _queued(args, partial(client.submit, build_spec(args)))
    print(job["id"])
    return 0


def _queued(args: argparse.Namespace, post: Callable[..., Submitted]) -> Submitted:
    """The job ``post`` queued (a search, a calibration), sent with an idempotency key
    (``--idempotency-key``, or a new random one), so a service that restarts or does not
    answer is asked again for up to ``SUBMIT_RETRY_S``, and stores the job once. Said on
    stderr: a job the key had created before (whatever its outcome: a failed one is not
    searched again), and a job no live worker takes (audit 30)."""
    given = args.idempotency_key  # "" (an unset variable) is refused, not replaced
    key = f"hwnas-cli-{uuid.uuid4().hex}" if given is None else given

    def retrying(exc: ClientError) -> None:
        print(f"hwnas: {exc}; trying again for up to {SUBMIT_RETRY_S:.0f} s (Ctrl+C stops)",
              file=sys.stderr)  # fmt: skip

    job = post(idempotency_key=key, retry_s=SUBMIT_RETRY_S, on_retry=retrying)
    if job.replayed and given is not None:
        print(
            f"hwnas: idempotency key {key!r} created job {job['id']} before ({job['status']} "
            "now): that job answered, none was queued; a key stays bound to its job whatever "
            "its outcome (a new key, such as the run id and its attempt, queues another)",
            file=sys.stderr,
        )
    elif str(job.get("message") or "").startswith(WAITING):
        print(f"hwnas: job {job['id']} {job['message']}", file=sys.stderr)
    return job


#: Exit code of ``wait`` and ``pareto`` for a search that succeeded but whose every
#: measured sub-network broke a constraint: there is nothing to download.
NOTHING_FEASIBLE = 3


#: Exit code of ``wait`` and ``calibrate`` when ``--timeout`` ran out before the job ended
#: (it was 1, as a failed job's: a pipeline could not tell "cancel and retry" from "stop"
#: without reading the JSON: audit 30).
TIMED_OUT = 4


def cmd_wait(args: argparse.Namespace) -> int:
    job, ended = _follow(_client(args), args.job_id, args.timeout)
    _print_job(job)
    if not ended:
        return TIMED_OUT
    if job["status"] != "succeeded":
        return 1
    empty = job.get("kind") != "calibration" and not job["progress"]["front_size"]
    return NOTHING_FEASIBLE if empty else 0


def _follow(
    client: HwnasClient, job_id: str, timeout_s: float | None
) -> tuple[dict[str, Any], bool]:
    """The job once finished, or as it stood when ``timeout_s`` ran out (said on stderr),
    and whether it finished."""
    try:
        return client.wait(job_id, timeout_s=timeout_s), True
    except WaitTimeout as exc:
        print(f"hwnas: {exc}", file=sys.stderr)
        return exc.job, False


def _print_job(
    job: dict[str, Any], keys: tuple[str, ...] = ("id", "status", "message", "error")
) -> None:
    """The job's outcome as one JSON line on stdout, for pipelines."""
    print(json.dumps({k: job[k] for k in keys}))


def cmd_jobs(args: argparse.Namespace) -> int:
    """The newest ``--limit`` jobs (0: all), of one status, kind and labels if given: a
    table (read whole first: its columns fit the longest name, and a refused request
    prints nothing), or with ``--json`` one job per line as the API gives it."""
    labels = parse_labels(args.label or [], values=False)
    client, where = _client(args), {"status": args.status, "kind": args.kind, "labels": labels}
    jobs = client.iter_jobs(
        page=min(args.limit or 500, 500), submitted_by=_mine(args, client), **where
    )
    listed = itertools.islice(jobs, args.limit or None)
    if args.json:
        for job in listed:
            print(json.dumps(job))
        return 0
    table = list(listed)
    print(format_jobs(table))
    if args.limit and len(table) == args.limit:  # the table may not be every job: say so
        total = client.jobs(limit=1, **where)["count"]
        if total > len(table):
            print(f"hwnas: the newest {len(table)} of {total} jobs (--limit 0: all)",
                  file=sys.stderr)  # fmt: skip
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """The job as the API gives it (status, progress, timing, labels, failures), indented."""
    print(json.dumps(_client(args).job(args.job_id), indent=2, ensure_ascii=False))
    return 0


def cmd_evaluations(args: argparse.Namespace) -> int:
    """The job's evaluations in the order measured: a table of their metrics (columns in the
    job's objectives' order, then the others), or with ``--json`` one per line."""
    client = _client(args)
    evaluations = client.iter_evaluations(args.job_id)
    if args.json:
        for evaluation in evaluations:
            print(json.dumps(evaluation))
        return 0
    listed = list(evaluations)
    first = list(client.job(args.job_id)["objectives"])
    names = first + sorted({n for e in listed for n in e["metrics"]} - set(first))
    rows = [
        [str(e["seq"]), e["subnet_id"], "yes" if e["feasible"] else "no",
         "*" if e["on_front"] else "",
         *(_number(e["metrics"].get(name)) for name in names)]
        for e in listed
    ]  # fmt: skip
    print(format_table(["seq", "subnet_id", "feasible", "front", *names], rows,
                       right={"seq", *names}))  # fmt: skip
    return 0


def _number(value: float | None) -> str:
    """A metric in 6 significant digits, plain from a million (MACs were 4.93682e+06 here:
    multi-objective audit 33)."""
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 1e6 else f"{value:.6g}"


def _space_size(supernet: dict[str, Any]) -> str:
    """Its distinct sub-networks, or where it does not say (``describe``), at most its
    genes' combinations (they were shown as its count: 81 for 39, plugin audit 32); "-"
    for one that could not be built (no space to count)."""
    if supernet["space_size"] is not None:
        return str(supernet["space_size"])
    return f"<={supernet['raw_space_size']}" if supernet["raw_space_size"] else "-"


def cmd_supernets(args: argparse.Namespace) -> int:
    """The registered supernets: a table, or the API's JSON."""
    return _catalog(
        args, _client(args).supernets(),
        {"id": lambda s: s["id"], "genes": lambda s: str(s["genes"]),
         "sub-networks": _space_size,
         "metrics": lambda s: ",".join(s["metrics"]),
         "own data": lambda s: "yes" if s["has_validation_data"] else "no",
         "note": lambda s: s["note"] or ""},
        right={"genes", "sub-networks"},
    )  # fmt: skip


def cmd_devices(args: argparse.Namespace) -> int:
    """The hardware profiles, whether a live worker serves each and how many of its jobs
    are queued and running: a table, or JSON."""
    return _catalog(
        args, _client(args).devices(),
        {"id": lambda d: d["id"], "kind": lambda d: d["kind"],
         "runtime": lambda d: d["runtime"] or "-",
         "threads": lambda d: "-" if d["threads"] is None else str(d["threads"]),
         "batch": lambda d: str(d["batch_size"]),
         "served": lambda d: "yes" if d["served"] else "no",
         "queued": lambda d: str(d.get("queued", "-")),
         "running": lambda d: str(d.get("running", "-")), "name": lambda d: d["name"]},
        right={"threads", "batch", "queued", "running"},
    )  # fmt: skip


def cmd_calibrations(args: argparse.Namespace) -> int:
    """A device's latency predictors (what ``calibrate`` fitted), newest first per
    supernet, and whether each steers searches: a table, or JSON (help audit 34: no
    command said whether a device was calibrated)."""
    found = _client(args).calibrations(args.device, supernet=args.supernet)
    if not found and not args.json:
        print(f"no calibration of {args.device} (hwnas calibrate {args.device} makes one; "
              "a search needs none)")  # fmt: skip
        return 0
    return _catalog(
        args, found,
        {"version": lambda c: str(c["version"]), "supernet": lambda c: c["supernet"],
         "kind": lambda c: c["kind"], "measured": lambda c: str(c["n_measurements"]),
         "spearman": lambda c: _metric(c, "spearman"),
         "within_10pct": lambda c: _metric(c, "within_10pct"),
         "steers": _steers,
         "created_at": lambda c: c["created_at"][:19], "job": lambda c: c["job_id"] or "-"},
        right={"version", "measured", "spearman", "within_10pct"},
    )  # fmt: skip


def _steers(calibration: dict[str, Any]) -> str:
    """Whether it steers searches; '-' from a server before 2026-12-07, which did not say."""
    said = calibration.get("steers_searches")
    return "-" if said is None else "yes" if said else "no"


def _metric(calibration: dict[str, Any], name: str) -> str:
    value = calibration["metrics"].get(name)
    return "-" if value is None else f"{value:.3f}"


def _catalog(
    args: argparse.Namespace,
    items: list[dict[str, Any]],
    columns: dict[str, Callable[[dict[str, Any]], str]],
    *,
    right: set[str],
) -> int:
    """``items`` as the API's JSON (``--json``) or a table of ``columns``."""
    if args.json:
        print(json.dumps(items))
        return 0
    rows = [[cell(item) for cell in columns.values()] for item in items]
    print(format_table(list(columns), rows, right=right))
    return 0


def format_jobs(jobs: list[dict[str, Any]]) -> str:
    """Jobs as a table: one line each, its labels last as JSON (a value may hold , or =)."""
    rows = [
        [
            job["id"], job["status"], job["kind"], job["supernet"], job["device"],
            f"{job['progress']['evaluations_done']}/{job['progress']['budget']}",
            str(job["progress"]["front_size"]), job["created_at"][:19].replace("T", " "),
            json.dumps(job["labels"], ensure_ascii=False) if job.get("labels") else "",
        ]
        for job in jobs
    ]  # fmt: skip
    names = ["id", "status", "kind", "supernet", "device", "done", "front", "created (UTC)",
             "labels"]  # fmt: skip
    return format_table(names, rows, right={"done", "front"})


def format_table(names: list[str], rows: list[list[str]], *, right: set[str]) -> str:
    """``rows`` under a header of ``names`` and a rule, each column as wide as its widest
    cell, those named in ``right`` aligned right; trailing blanks trimmed."""
    widths = [max([len(name), *(len(row[k]) for row in rows)]) for k, name in enumerate(names)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if name in right else cell.ljust(width)
            for cell, width, name in zip(cells, widths, names, strict=True)
        ).rstrip()

    header = line(names)
    return "\n".join([header, "-" * len(header), *map(line, rows)])


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel the job given, or with ``--label`` every queued or running job carrying all
    those labels (security audit 31 M2: a flood of jobs took one cancel each), with
    ``--mine`` only (or all) those of this API key; one JSON line per job cancelled, then
    their count on stderr."""
    if (args.job_id is None) == (not (args.label or args.mine)):
        raise InvalidInput(
            "give a job id, or --label NAME=VALUE and/or --mine (not both)", field="job_id"
        )
    client, keys = _client(args), ("id", "status", "cancel_requested", "message")
    if args.job_id is not None:
        _print_job(client.cancel(args.job_id), keys=keys)
        return 0
    labels = parse_labels(args.label or [], values=False)
    unfinished = list(
        client.iter_jobs(
            status=["queued", "running"], labels=labels, submitted_by=_mine(args, client)
        )
    )
    cancelled = 0
    for job in unfinished:  # listed first: the cancels change what a listing would give
        try:
            _print_job(client.cancel(job["id"]), keys=keys)
        except ClientError as exc:  # it ended, or was deleted, since it was listed
            if exc.status not in (404, 409):  # (review 32b: the rest were left queued)
                raise
            print(f"hwnas: job {job['id']} passed over: {exc}", file=sys.stderr)
            continue
        cancelled += 1
    print(f"hwnas: {cancelled} job{'' if cancelled == 1 else 's'} cancelled", file=sys.stderr)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """Set ``NAME=VALUE`` labels and remove ``--remove NAME`` ones; prints the job's id
    and labels as changed."""
    changes = parse_labels(args.labels, values=True, option="label")
    for name in args.remove or []:
        if name in changes:
            raise InvalidInput(f"label {name} is both set and removed", field="label")
        changes[name] = None
    if not changes:
        raise InvalidInput("give NAME=VALUE labels to set, or --remove NAME", field="label")
    job = _client(args).label(args.job_id, changes)
    _print_job(job, keys=("id", "labels"))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _client(args).delete(args.job_id)
    print(f"deleted {args.job_id}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete, on the database itself (as ``db-upgrade`` works), every job that ended more
    than ``--older-than`` days ago, with its exported files, and exports of cache versions
    this version no longer serves; with ``--dry-run``, print their ids (oldest first) and
    delete nothing."""
    from api.retention import prune
    from store.db import check_migrated, make_engine, make_session_factory
    from store.jobs import counted

    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        check_migrated(engine)
        pruned = prune(
            make_session_factory(engine), Path(settings.data_dir), args.older_than,
            dry_run=args.dry_run,
        )  # fmt: skip
    except InvalidInput:
        raise InvalidInput(f"--older-than {args.older_than:g}: too many days") from None
    finally:
        engine.dispose()
    ids, stale = pruned.job_ids, pruned.old_cache_versions
    data = Path(settings.data_dir).resolve()
    if not data.is_dir():  # a prune run where the server's data directory is not (one
        # with no export yet, a fresh install's, is no reason to say anything: review 29)
        print(
            f"hwnas: no data directory at {data}: if the server keeps its exported files "
            "elsewhere, set HWNAS_DATA_DIR as for it (the files of the jobs deleted are left "
            "there until a prune with it)",
            file=sys.stderr,
        )
    if args.dry_run:
        print(f"would delete {counted(len(ids), 'job')} that ended over "
              f"{args.older_than:g} days ago"
              + (f"; would remove {counted(stale, 'old export cache folder')}"
                 if stale else ""),
              file=sys.stderr)  # fmt: skip
        print("\n".join(ids), end="\n" if ids else "")
        return 0
    print(
        f"deleted {counted(len(ids), 'job')} that ended over {args.older_than:g} days ago"
        + (f"; removed {counted(stale, 'old export cache folder')}" if stale else "")
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Queue a calibration; with ``--no-wait`` print its job id, else follow the job and
    print the predictor version it stored (exit 1 unless it succeeded)."""
    client = _client(args)
    body = {"supernet": args.supernet, "seed": args.seed}
    if args.samples is not None:  # else the server's default (50, or its cap when lower)
        body["n_samples"] = args.samples
    if args.kind:
        body["kind"] = args.kind
    if args.label:  # only then: a server before labels refuses the key (422)
        body["labels"] = parse_labels(args.label, values=True)
    queued = _queued(args, partial(client.calibrate, args.device, body))
    if args.no_wait:
        print(queued["id"])
        return 0
    job, ended = _follow(client, queued["id"], args.timeout)
    if job["status"] != "succeeded":
        _print_job(job)
        return 1 if ended else TIMED_OUT
    (stored,) = client.calibrations(args.device, job_id=job["id"])
    keys = ("device", "supernet", "version", "kind", "n_measurements", "metrics", "job_id")
    print(json.dumps({k: stored.get(k) for k in (*keys, "steers_searches")}))
    if stored.get("steers_searches") is False:  # stored, but searches will pass it over
        print(
            f"hwnas: predictor v{stored['version']} cross-validated too poorly to screen a "
            "search's proposals; searches keep to the newest version that does, if any "
            "(more --samples, or another --kind, may do better)",
            file=sys.stderr,
        )
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """The file; its path on stdout, unless stdout is where the file went (``-o -``)."""
    client = _client(args)
    fmt = _download_format(args.format, args.output)
    if args.output == "-":
        client.download(args.job_id, args.subnet, fmt, sys.stdout.buffer)
        return 0
    _make_named_folder(args.output)  # the file goes in it
    path = client.download(args.job_id, args.subnet, fmt, Path(args.output))
    if path is not None and path.is_file() and not _is_stdout(path):
        print(path)
    return 0


def _names_folder(path: str) -> bool:
    """Whether a path argument names a folder by its ending (``models/``)."""
    return path.endswith(("/", os.sep))


def _make_named_folder(path: str) -> None:
    """The folder a path argument names by its ending, made if need be (``-o models/``
    for a folder not there yet wrote a file named "models")."""
    if _names_folder(path):
        Path(path).mkdir(parents=True, exist_ok=True)


#: The built-in formats' file name suffixes (the service names its files so).
FORMAT_OF_SUFFIX = {".onnx": "onnx", ".pt": "torchscript", ".zip": "state_dict"}


def _download_format(asked: str | None, output: str) -> str:
    """The format to download: ``--format``, else the one ``-o``'s suffix names (``.onnx``,
    ``.pt``, ``.zip``), else onnx. A ``--format`` that another built-in format's suffix
    contradicts is refused: ``-o model.onnx --format torchscript`` wrote a TorchScript file
    named .onnx, without a word (audit 28)."""
    named = None
    a_file = output != "-" and not _names_folder(output) and not Path(output).is_dir()
    if a_file:
        named = FORMAT_OF_SUFFIX.get(Path(output).suffix.lower())
    if asked is None:
        if named is None and a_file and Path(output).suffix:
            print(  # model.pth was written as ONNX without a word (review 29)
                f"hwnas: {Path(output).suffix} names no format: downloading ONNX (--format "
                "torchscript or state_dict for the others)",
                file=sys.stderr,
            )
        return named or "onnx"
    if named is not None and named != asked:
        own = [suffix for suffix, fmt in FORMAT_OF_SUFFIX.items() if fmt == asked]
        rename = f"name the file {own[0]}" if own else "name the file for its format"
        raise InvalidInput(
            f"-o {output}: a {Path(output).suffix} file is {named}, but --format is {asked}: "
            f"{rename}, or leave --format out to download {named}",
            field="format",
        )
    return asked


def _is_stdout(path: Path) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):  # stdout closed or not a file
        return False


def cmd_pareto(args: argparse.Namespace) -> int:
    """The front as it stands; exit code 1 once the job ended without succeeding (failed or
    cancelled: the front is what it measured before), as ``wait`` says; 3 when it succeeded
    with nothing feasible; a note on stderr while it still runs."""
    pareto = _client(args).pareto(args.job_id)
    print(json.dumps(pareto) if args.json else format_front(pareto))
    status, message = pareto["status"], pareto.get("message") or ""
    if status in ("queued", "running"):
        print(f"hwnas: job {args.job_id} is {status}: the front so far", file=sys.stderr)
        return 0
    if status in ("failed", "cancelled"):  # its message begins with that word, or says more
        said = message if message.startswith(status) else f"{status}: {message}".rstrip(": ")
        print(f"hwnas: job {args.job_id} {said}", file=sys.stderr)
        return 1
    if not pareto["data"]:
        print(f"hwnas: job {args.job_id} found nothing feasible: {message}", file=sys.stderr)
        return NOTHING_FEASIBLE
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Migrate the database to the newest schema, saying from which revision to which
    (it said "database at head" whatever it did: ops audit 29)."""
    from api.auth import server_keys
    from store.db import (
        current_revision,
        make_engine,
        make_session_factory,
        renew_database_id,
        upgrade,
    )

    settings = get_settings()
    # keys the new version refuses, said before the point of no return: a server of this
    # version would not start on the migrated database (upgrade audit 34 L1)
    server_keys(settings)
    url = settings.database_url
    before = upgrade(url, wait_s=settings.migration_wait_s)  # read under the migration lock
    engine = make_engine(url)
    try:
        after = current_revision(engine)
        if before == after:
            print(f"database at head: schema revision {after}, nothing to migrate")
        else:
            print(f"database migrated from schema revision {before or '(none)'} to {after}")
        if args.new_identity:
            print(f"database identity {renew_database_id(make_session_factory(engine))}")
    finally:
        engine.dispose()
    return 0


def cmd_db_backup(args: argparse.Namespace) -> int:
    """A consistent copy of the SQLite database (``store.backup``), taken while servers
    run; prints its path, and on stderr what it holds."""
    from store.backup import backup_sqlite

    _make_named_folder(args.path)  # the backup goes in it
    made = backup_sqlite(get_settings().database_url, Path(args.path))
    print(
        f"backed up {made.jobs} jobs, {made.evaluations} evaluations (schema revision "
        f"{made.revision})",
        file=sys.stderr,
    )
    print(made.path)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A Celery worker that serves exactly the given devices (one queue each)."""
    from hardware_profiles.configured import device_profile, named_devices, servable
    from models.registry import check_checkpoints
    from store.db import check_migrated, make_engine
    from workers import reaper
    from workers.celery_app import celery_app

    if get_settings().is_embedded:
        raise InvalidInput(
            "a worker needs the broker the API publishes to: set HWNAS_BROKER_URL "
            "(e.g. redis://127.0.0.1:6379/0), and HWNAS_DATABASE_URL to the API's database",
            field="HWNAS_BROKER_URL",
        )
    check_checkpoints()  # loads the plugins: one that does not load is a PluginError now
    devices = named_devices(args.devices, field="--devices")
    if not devices:
        raise InvalidInput("--devices names no device", field="--devices")
    profiles = [device_profile(d) for d in devices]
    if missing := [p.id for p in profiles if not servable(p)]:
        raise InvalidInput(
            f"this machine cannot run {', '.join(missing)} (its runtime or device is not "
            "available here): a worker for them would fail every job it takes",
            field="--devices",
        )
    check_migrated(make_engine(get_settings().database_url))  # refuse an un-migrated DB
    queues = [p.queue for p in profiles]
    reaper.SERVED_DEVICES[:] = devices
    label = "+".join(devices) if len(devices) <= 3 else f"{len(devices)}-devices"
    name = args.name or f"hwnas-{label}@%h"
    # The app's pool (worker_pool): solo, one job at a time, so measurements never overlap.
    celery_app.worker_main(
        [
            "worker",
            "-Q",
            ",".join(queues),
            "-n",
            name,
            "--loglevel",
            args.loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from api.demo import run_demo

    return run_demo(args)


def _client(args: argparse.Namespace) -> HwnasClient:
    return HwnasClient(args.url, api_key=args.api_key)


def _mine(args: argparse.Namespace, client: HwnasClient) -> str | None:
    """With ``--mine``: the label of the client's API key (jobs it submitted), else None."""
    if not args.mine:
        return None
    if client.key_label is None:
        raise InvalidInput("--mine needs an API key (--api-key, HWNAS_API_KEY)", field="mine")
    return client.key_label


_Column = tuple[str, Callable[[dict[str, Any]], Any], int, str]
#: The front table's columns every job has, by metric: (heading, the point's value, width,
#: format). Latency in significant digits: a small network's 0.0037 and 0.0042 ms both
#: showed 0.004 (plugin audit 32). MACs counted, as a constraint on them is given (a column
#: of millions, "MMACs", read 2.664: `macs<=3` was taken for 3 million, help audit 34).
_COLUMNS: dict[str, _Column] = {
    "accuracy": ("accuracy", lambda p: p["accuracy"], 8, ".4f"),
    "latency_ms": ("latency_ms", lambda p: p["latency_ms"], 10, "#.4g"),
    "macs": ("macs", lambda p: p["macs"], 10, "d"),
    "params": ("params", lambda p: p["params"], 8, "d"),
}


def format_front(pareto: dict[str, Any]) -> str:
    """The front as a table: the job's objectives first, in order, then the usual columns
    it does not name (a first objective shown last, after accuracy that no objective
    named: plugin audit 32), then any other metric a constraint names; best first by the
    first objective; under it, each objective's direction and the constraints every row
    meets (multi-objective audit 33 L3: neither was shown)."""
    rows = pareto["data"]
    if not rows:
        return f"(empty front) {pareto.get('message') or ''}"
    objectives: dict[str, str] = pareto.get("objectives") or {}
    constraints: dict[str, dict[str, float | None]] = pareto.get("constraints") or {}
    others = [n for n in constraints if n not in objectives and n not in _COLUMNS]
    columns = (
        [
            _COLUMNS.get(name)
            or (name, lambda p, name=name: p["metrics"].get(name), max(10, len(name)), ".4g")
            for name in objectives
        ]
        + [column for name, column in _COLUMNS.items() if name not in objectives]
        + [
            (name, lambda p, name=name: p["metrics"].get(name), max(10, len(name)), ".4g")
            for name in others
        ]
    )
    ids = max(48, *(len(r["subnet_id"]) for r in rows))
    header = " ".join([f"{'subnet_id':<{ids}}", *(f"{h:>{w}}" for h, _, w, _ in columns)])
    lines = [header, "-" * len(header)]
    for p in sorted(rows, key=best_first(objectives)):
        cells = (_cell(value(p), width, spec) for _, value, width, spec in columns)
        lines.append(" ".join([f"{p['subnet_id']:<{ids}}", *cells]))
    if objectives:
        aims = ", then ".join(f"{name} ({sense})" for name, sense in objectives.items())
        bounds = ", ".join(f"{name} {_bound_text(bound)}" for name, bound in constraints.items())
        lines.append(f"best first by {aims}" + (f"; every row meets {bounds}" if bounds else ""))
    return "\n".join(lines)


def _bound_text(bound: dict[str, float | None]) -> str:
    """``{"min": 1, "max": 2}`` as ``>= 1 and <= 2``."""
    parts = [f"{op} {bound[side]:g}" for side, op in (("min", ">="), ("max", "<=")) if
             bound.get(side) is not None]  # fmt: skip
    return " and ".join(parts)


def best_first(objectives: dict[str, str]) -> Callable[[dict[str, Any]], tuple[float, ...]]:
    """Sort key that puts the best point first: the first objective in its direction, the
    next ones breaking ties in order; a point without a value counts as the worst."""

    def key(point: dict[str, Any]) -> tuple[float, ...]:
        metrics = point["metrics"]
        return tuple(
            math.inf
            if metrics.get(name) is None
            else -metrics[name]
            if sense == "max"
            else metrics[name]
            for name, sense in objectives.items()
        )

    return key


def _cell(value: float | None, width: int, spec: str) -> str:
    """``value`` right-aligned in ``width``; '-' where the supernet has no such number
    (recorded supernets report no MACs or params). Significant digits (``#.4g``: trailing
    zeros kept, 10.00 beside 20.14) go plain from 10,000 (not 1.235e+04: review 32a)."""
    if value is None:
        return f"{'-':>{width}}"
    if spec.endswith("g") and abs(value) >= 1e4:
        spec = ".0f"
    return f"{format(value, spec):>{width}}"


def _add_job_args(parser: argparse.ArgumentParser, default_constraint: str = "none") -> None:
    parser.add_argument("--supernet", help=f"(default: {DEFAULT_SUPERNET}; hwnas supernets)")
    parser.add_argument("--device", default="cpu-1t", help="(default: %(default)s; hwnas devices)")
    parser.add_argument(
        "--objective",
        action="append",
        help="NAME=min|max (repeatable: the ones given replace the default, accuracy=max and "
        "latency_ms=min, so name each objective wanted)",
    )
    parser.add_argument(
        "--constraint",
        action="append",
        help="NAME<=V or NAME>=V (repeatable): latency_ms in milliseconds, macs and params "
        "counted (3e6, not 3), model_size_mb in MB, accuracy 0..1, or a metric of the "
        f"supernet (hwnas supernets); default: {default_constraint}",
    )
    parser.add_argument(
        "--budget", type=int, help="new measurements (default: 60, or the server's cap if lower)"
    )
    parser.add_argument(
        "--failures",
        type=int,
        help="failed measurements skipped before one fails the job (default: half the "
        "budget, at least 3; 0: the first fails it)",
    )
    parser.add_argument("--strategy", default="linas", help="linas (default), random, nsga2 or tpe")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument(
        "--no-warm-start", action="store_true", help="measure everything anew (no reuse)"
    )
    parser.add_argument(
        "--no-latency-prior",
        action="store_true",
        help="no calibrated latency predictor screens the first proposals (a seed then "
        "reproduces the job whatever was calibrated since, as long as it is not resumed)",
    )
    parser.add_argument(
        "--validation-data", default=None, help="a file or image directory under the data roots"
    )
    _add_label_arg(parser)


def _add_label_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--label",
        action="append",
        help="NAME=VALUE: a label of the job (repeatable), which hwnas jobs --label lists by",
    )


def _port(text: str) -> int:
    """``--port``: a TCP port number (getaddrinfo took 70000 as 4464)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port


def _amount(unit: str) -> Callable[[str], float]:
    """An argument's parser: a finite number of ``unit``, not negative."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit} (0 or more)")
        return value

    return parse


_seconds, _days = _amount("seconds"), _amount("days")


def _count(text: str) -> int:
    """An argument's parser: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0 or more)")
    return value


def _version() -> str:
    try:
        return importlib.metadata.version("hwnas")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout not installed
        return "(not installed)"


#: What a subcommand's own --help says besides its one line (help audit 34: only usage).
_MORE = {
    "calibrate": " Optional: a search measures latency on the device itself. A calibration "
    "measures a sample of sub-networks there and fits a latency predictor, which then screens "
    "later searches' proposals on that device and supernet before they are measured (fewer "
    "measurements spent on sub-networks over a latency bound). hwnas calibrations DEVICE "
    "lists a device's, and whether each steers searches.",
    "run": " The embedded mode on its own: SQLite and files under ./var (HWNAS_DATA_DIR, "
    "HWNAS_DATABASE_URL), the worker in-process, the best sub-network's file in --output-dir.",
    "serve": " Data under ./var by default (HWNAS_DATA_DIR, HWNAS_DATABASE_URL); without "
    "HWNAS_BROKER_URL a worker in the process serves this machine's devices (which: "
    "HWNAS_EMBEDDED_DEVICES).",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwnas",
        description="hwnas: serve the API, submit and follow jobs, download sub-networks.",
        epilog="exit codes: 0 done; 1 the job did not succeed; 2 an error (bad arguments, a "
        "request refused, a service not reached); 3 a search that succeeded with nothing "
        "feasible; 4 a wait that timed out (the job goes on); 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
        "serve": (cmd_serve, "run the HTTP API (embedded worker unless HWNAS_BROKER_URL)"),
        "submit": (cmd_submit, "submit a search job; prints its id"),
        "wait": (cmd_wait, "follow a job; exits 0 once it succeeded with a front (codes below)"),
        "jobs": (cmd_jobs, "list the newest jobs"),
        "show": (cmd_show, "print a job: status, progress, timing, labels (JSON)"),
        "evaluations": (cmd_evaluations, "list a job's measured sub-networks and metrics"),
        "supernets": (cmd_supernets, "list the supernets that can be searched"),
        "devices": (cmd_devices, "list the devices and whether a worker serves each"),
        "label": (cmd_label, "set or remove a job's labels, in any status"),
        "cancel": (
            cmd_cancel,
            "cancel a job, or all with --label (a running one stops after its evaluation)",
        ),
        "delete": (cmd_delete, "delete a job that ended, its evaluations and exported files"),
        "pareto": (cmd_pareto, "print a job's Pareto front"),
        "download": (cmd_download, "download a measured sub-network"),
        "calibrate": (cmd_calibrate, "fit a device's latency predictor (a job on its queue)"),
        "calibrations": (cmd_calibrations, "list a device's latency predictors (calibrate)"),
        "run": (cmd_run, "start the embedded service, run a real search, export the best"),
        "db-upgrade": (cmd_db_upgrade, "migrate the database to the newest schema"),
        "db-backup": (cmd_db_backup, "copy the embedded mode's database, while servers run"),
        "prune": (cmd_prune, "delete the jobs that ended over N days ago (on the database)"),
        "worker": (cmd_worker, "a Celery worker for some devices (distributed mode)"),
    }
    for name, (func, help_text) in commands.items():
        description = f"{help_text[0].upper()}{help_text[1:]}.{_MORE.get(name, '')}"
        p = sub.add_parser(name, help=help_text, description=description)
        p.set_defaults(func=func, command_parser=p)
        if name not in ("serve", "db-upgrade", "db-backup", "prune", "worker", "run"):
            p.add_argument(
                "--url", default=DEFAULT_URL, help=f"the service (default: $HWNAS_URL or {_URL})"
            )
            p.add_argument(
                "--api-key", default=DEFAULT_API_KEY, help="default: $HWNAS_API_KEY (if set)"
            )
    sub.choices["db-upgrade"].add_argument(
        "--new-identity",
        action="store_true",
        help="give the database a new random identity (a restored or cloned copy: README)",
    )
    sub.choices["db-backup"].add_argument(
        "path", help="a new file, or a folder (the file is named hwnas-<UTC time>.db there)"
    )
    sub.choices["serve"].add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)"
    )
    sub.choices["serve"].add_argument(
        "--port", type=_port, default=8000, help="the port to listen on (default: 8000)"
    )
    sub.choices["worker"].add_argument(
        "--devices",
        required=True,
        help="comma-separated hardware profile ids or patterns (nb201-* for every recorded "
        "NAS-Bench-201 device)",
    )
    sub.choices["worker"].add_argument(
        "--name",
        default=None,
        help="its Celery node name (default: hwnas-<its devices joined by +, or N-devices "
        "for over 3>@<host>)",
    )
    sub.choices["worker"].add_argument(
        "--loglevel", default="info", help="Celery's log level (default: %(default)s)"
    )
    _add_job_args(sub.choices["submit"])
    for name in ("submit", "calibrate"):
        sub.choices[name].add_argument(
            "--idempotency-key",
            help="any string unique to this submission (a pipeline's run id and attempt): "
            "submitting again with it (and the same API key: each key's are its own) prints "
            "the job it created, whatever its outcome (default: a new random key, which "
            "covers this command's own retries)",
        )
    _add_job_args(
        sub.choices["run"],
        "latency_ms <= halfway between the smallest and the largest sub-network's, measured "
        "first (any --constraint replaces it)",
    )
    sub.choices["run"].add_argument(
        "--output-dir",
        default="out",
        help="where the best sub-network's file goes (default: out)",
    )
    sub.choices["run"].add_argument(
        "--format", default="onnx", help="onnx (default), torchscript or state_dict"
    )
    calibrate = sub.choices["calibrate"]
    calibrate.add_argument("device", help="hardware profile id")
    calibrate.add_argument(
        "--supernet", default="fmnist-ofa-cnn", help="whose latency (default: fmnist-ofa-cnn)"
    )
    calibrate.add_argument(
        "--samples", type=int, help="sub-networks to measure (default: 50, or the server's cap)"
    )
    calibrate.add_argument(
        "--seed", type=int, default=0, help="seeds the sample of sub-networks (default: 0)"
    )
    calibrate.add_argument(
        "--kind", default=None, help="lut, scaled-lut, ridge or gbrt (default: the server's)"
    )
    calibrate.add_argument("--no-wait", action="store_true", help="print the job id and exit")
    _add_label_arg(calibrate)
    for name in ("wait", "show", "evaluations", "label", "delete", "pareto", "download"):
        sub.choices[name].add_argument("job_id", help="the job's id (hwnas jobs lists them)")
    cancel = sub.choices["cancel"]
    cancel.add_argument("job_id", nargs="?", help="the job (or give --label)")
    cancel.add_argument(
        "--label",
        action="append",
        help="NAME=VALUE, or NAME for any value: every queued or running job carrying it "
        "(repeatable: all of them); hwnas jobs --status queued --status running --label "
        "... lists them first",
    )
    for name in ("cancel", "jobs"):
        sub.choices[name].add_argument(
            "--mine",
            action="store_true",
            help="only jobs submitted with this API key (on a server that several teams "
            "share, every key sees every job unless it runs with HWNAS_JOB_VISIBILITY=own)",
        )
    for name in ("evaluations", "supernets", "devices", "calibrations"):
        sub.choices[name].add_argument("--json", action="store_true", help="the API's JSON")
    sub.choices["calibrations"].add_argument("device", help="hardware profile id (hwnas devices)")
    sub.choices["calibrations"].add_argument("--supernet", help="only this supernet's")
    label = sub.choices["label"]
    label.add_argument("labels", nargs="*", metavar="NAME=VALUE", help="labels to set")
    label.add_argument(
        "--remove", action="append", metavar="NAME", help="a label to remove (repeatable)"
    )
    jobs = sub.choices["jobs"]
    statuses = ["queued", "running", "succeeded", "failed", "cancelled"]
    jobs.add_argument(
        "--status", choices=statuses, action="append", help="only these (repeatable: any of them)"
    )
    jobs.add_argument("--kind", choices=["search", "calibration"], help="only these")
    jobs.add_argument(
        "--limit", type=_count, default=20, help="the newest this many (default 20; 0: all)"
    )
    jobs.add_argument("--json", action="store_true", help="one job per line, the API's JSON")
    jobs.add_argument(
        "--label",
        action="append",
        help="NAME=VALUE, or NAME for any value: only jobs carrying it (repeatable: all)",
    )
    sub.choices["prune"].add_argument(
        "--older-than", type=_days, required=True, metavar="DAYS", help="days since a job ended"
    )
    sub.choices["prune"].add_argument(
        "--dry-run", action="store_true", help="print the ids it would delete; delete nothing"
    )
    for name in ("wait", "calibrate"):
        sub.choices[name].add_argument(
            "--timeout",
            type=_seconds,
            help=f"give up after this many seconds (exit {TIMED_OUT}; the job goes on)",
        )
    sub.choices["pareto"].add_argument(
        "--json", action="store_true", help="the front as the API's JSON, for scripts"
    )
    sub.choices["download"].add_argument(
        "--subnet", required=True, help="a subnet_id of the job's front (hwnas pareto)"
    )
    sub.choices["download"].add_argument(
        "--format",
        help="onnx, torchscript or state_dict; by default the one -o's suffix names "
        "(.onnx, .pt, .zip), else onnx",
    )
    sub.choices["download"].add_argument(
        "-o",
        "--output",
        required=True,
        help="a file (replaced once the download is whole), a folder (the file gets the "
        "service's name for it), or - for stdout",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 1 the job did not succeed (``wait``, ``calibrate``, ``pareto``
    of an ended job); 4 ``wait`` or ``calibrate`` timed out (``TIMED_OUT``); 2 an error
    (bad arguments, the service refused the request or could not be reached, or answered
    what is not hwnas's); 3 a search succeeded with nothing feasible (``wait``, ``pareto``)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the list of every command (help audit 34)
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:  # Ctrl+C: a job followed goes on in the service
        job = getattr(args, "job_id", None) if args.command == "wait" else None
        going_on = f"; job {job} goes on (hwnas cancel {job} stops it)" if job else ""
        print(f"\nhwnas: interrupted{going_on}", file=sys.stderr)
        return 130
    except (ClientError, HwnasError) as exc:
        if args.command == "serve" and _json_logs():  # a line of its log, as the others
            logging.getLogger("api.cli").error("%s", _with_variable(exc))
        else:
            print(f"hwnas: {_with_variable(exc)}{_next_step(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `hwnas pareto JOB | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    except OSError as exc:  # a local file it cannot write (download -o to a folder, ...)
        print(f"hwnas: {exc}", file=sys.stderr)
        return 2


def _next_step(exc: Exception) -> str:
    """What to do after a 404 (help audit 34: "not found", and no more): a job's id that is
    none lists the jobs; a path the service does not have is a --url with a path."""
    if not isinstance(exc, ClientError) or exc.status != 404:
        return ""
    if exc.error == "NotFound" and re.search(r": job '[^']*' not found$", str(exc)):
        return " (hwnas jobs lists the jobs)"
    if exc.error is None:  # the framework's own 404: no such path
        return " (--url is the service's root, such as http://127.0.0.1:8000, no /v1)"
    return ""


def _json_logs() -> bool:
    """Whether ``HWNAS_LOG_FORMAT`` asks for JSON lines, read before the settings are (a
    setting they refuse is said in that format too)."""
    return os.environ.get("HWNAS_LOG_FORMAT", "text").strip().lower() == "json"


def _with_variable(exc: Exception) -> str:
    """The error, naming the ``HWNAS_*`` variable at fault where it does not already
    (``HWNAS_EMBEDDED_DEVICES=cpu-1tt`` said only "unknown device")."""
    field = getattr(exc, "field", None)
    if isinstance(field, str) and field.startswith("HWNAS_") and field not in str(exc):
        return f"{field}: {exc}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
