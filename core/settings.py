"""The one settings object, read from ``HWNAS_*`` environment variables."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import InvalidInput

log = logging.getLogger(__name__)

#: ``HWNAS_*`` variables read by the command-line client, or by the registry's contract
#: test for a plugin's data (docs/plugins.md: it was warned of as "not an hwnas setting",
#: docs audit 32), not by the service's settings; and the prefix of the test suite's own
#: (``HWNAS_TEST_PG_ADMIN_URL``).
NOT_SETTINGS = frozenset({"HWNAS_URL", "HWNAS_API_KEY", "HWNAS_CONTRACT_VALIDATION_DATA"})
TEST_PREFIX = "HWNAS_TEST_"


class Settings(BaseSettings):
    """Service configuration. Defaults give the embedded mode: SQLite + in-process worker."""

    # Not NaN or infinity: "nan" for HWNAS_HEARTBEAT_S was refused as "not greater than 0",
    # and HWNAS_MAX_DATA_FILE_MB=inf accepted (operator probe, session 22).
    model_config = SettingsConfigDict(env_prefix="HWNAS_", extra="ignore", allow_inf_nan=False)

    database_url: str = "sqlite:///./var/hwnas.db"
    # Empty broker URL: jobs run on the in-process executor (embedded mode).
    broker_url: str = ""
    data_dir: Path = Path("./var")
    # Devices the in-process executor serves (comma separated); empty = every local profile.
    # Run `alembic upgrade head` at start-up (embedded default); compose migrates in an init step.
    auto_migrate: bool = True
    embedded_devices: str = ""
    # Extra directories of hardware-profile YAML files (comma separated).
    profile_dirs: str = ""
    # User validation data: directories a data path may point into (comma separated; empty =
    # user data paths refused), the largest tensor file accepted (unpacked size, MiB; for an
    # image directory, the images' total size) and the most images an image directory may
    # hold (decoded images stay in memory: 192 KiB each at the OFA supernets' 256 x 256 RGB).
    data_roots: str = ""
    max_data_file_mb: PositiveFloat = 256.0
    max_data_images: PositiveInt = 10_000
    # User supernet plugins besides the `hwnas.supernets` entry points: "pkg.module:Class,...".
    supernet_plugins: str = ""
    # Weights users bring for supernets that take them: "name=/path/to/file,...", loaded with
    # torch.load(weights_only=True) by the supernet (e.g. Once-for-All's published
    # state_dict for ofa_mbv3_d234_e346_k357_w1.0). Set by the operator, like the data roots.
    supernet_checkpoints: str = ""
    # API keys (comma separated): when set, every API request but /healthz and the docs must
    # send "Authorization: Bearer <one of them>"; empty = no authentication (the embedded
    # default, on 127.0.0.1). The CLI and client send HWNAS_API_KEY.
    api_keys: str = ""
    # Keys (comma separated, as HWNAS_API_KEYS, and taken as well as them) that see and
    # change every team's jobs where HWNAS_JOB_VISIBILITY is "own": an operator's.
    admin_api_keys: str = ""
    # Whose jobs a key sees: "all" (every key sees, changes and exports every job), or "own"
    # (those it submitted; another's is 404, its listing leaves them out; its searches
    # warm-start from its own jobs only): needs API keys.
    job_visibility: Literal["all", "own"] = "all"
    # Jobs (searches and calibrations) one API key may have queued or running at once: a
    # submission past it is 429 until one ends, so one team cannot fill the queue. Without
    # API keys, the whole server's. 0: no limit.
    max_active_jobs_per_key: NonNegativeInt = 0
    # The API's URL as its clients reach it ("https://nas.example.com", a proxy's path
    # included): job URLs and Location headers are built on it. Empty: on the request's own
    # scheme, Host header and root path, which any client can set to a host of its choosing.
    public_url: str = ""
    embedded_workers: PositiveInt = 1
    max_budget: PositiveInt = 10_000
    heartbeat_s: Annotated[float, Field(gt=0, le=86_400)] = 5.0
    # A running job whose worker has not heartbeated for this long is orphaned (picked up
    # again, a cancel ends it at once): at least twice heartbeat_s; 0 (tests): every one is.
    stale_after_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = 60.0
    max_attempts: PositiveInt = 3
    # How long a running job waits out an unreachable database before giving up its attempt.
    db_retry_s: NonNegativeFloat = 60.0
    # How long a migration (`hwnas db-upgrade`, a server's start with auto_migrate) waits for
    # another process's migration of the same database before it fails, naming the lock.
    migration_wait_s: NonNegativeFloat = 600.0
    # Warm start: at most this many earlier measurements of the same supernet on the same
    # device are reused by a new job (0 turns warm starts off for every job).
    warm_start_max: NonNegativeInt = 2000
    # Jobs that ended more than this many days ago are deleted by the API itself, with
    # their exported files, at its start and every hour (as `hwnas prune --older-than`);
    # 0 (the default): nothing is removed on its own.
    retention_days: Annotated[float, Field(ge=0, le=36_500)] = 0.0
    # Threads the API runs request handlers on (each holds one DB connection while it runs).
    # A few more than the cores is enough: handlers wait on the database, not on Python.
    api_threads: PositiveInt = 16
    # uvicorn processes for `hwnas serve` (distributed mode only: the embedded worker and
    # its SQLite file belong to one process). uvicorn's per-request access log is on by
    # default; HWNAS_ACCESS_LOG=false turns it off.
    api_processes: PositiveInt = 1
    access_log: bool = True
    # How `hwnas serve` writes its log lines: "text" (time, level, logger, message) or
    # "json" (one object a line, for a log collector).
    log_format: Literal["text", "json"] = "text"
    # uvicorn's event loop for `hwnas serve`: "asyncio", "uvloop", or "auto" (the default:
    # asyncio for one process, uvloop for more). One process, 100 clients keeping it busy:
    # uvloop served some connections seconds late (p99 1.2 s, 2 s client timeouts), asyncio
    # served all in turn (p99 97 ms) at the same throughput. Several processes: asyncio does
    # not set TCP_NODELAY on the socket uvicorn shares between them (Nagle + delayed ACKs,
    # 2,250 req/s for a bare app against 15,260 on uvloop). BENCHMARKS.md, API under load.
    api_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # An HWNAS_* variable that no setting reads (a misspelt one) is warned of; with
    # HWNAS_STRICT_SETTINGS=true it is an error: the service does not start, a command fails.
    strict_settings: bool = False

    @field_validator("public_url")
    @classmethod
    def _public_url_is_a_base(cls, value: str) -> str:
        """An http(s) URL with a host, no query or fragment; kept without a final /."""
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL such as https://nas.example.com: {value!r}")
        if any(c in value for c in "?#@ ") or not (value.isascii() and value.isprintable()):
            raise ValueError(f"must hold no query, fragment, user or space: {value!r}")
        return value.rstrip("/")

    @field_validator("broker_url")
    @classmethod
    def _broker_is_a_url(cls, value: str) -> str:
        """kombu reads a string without a scheme as an AMQP host name and retries it for
        minutes; a typo such as ``redis//host`` is refused at once instead."""
        if value and "://" not in value:
            raise ValueError(f"must be a URL such as redis://127.0.0.1:6379/0, got {value!r}")
        return value

    @model_validator(mode="after")
    def _stale_after_two_heartbeats(self) -> Settings:
        """Below two heartbeats a live worker's job counted as orphaned between its beats:
        "waiting: its worker stopped heartbeating", a cancel ended it as dead, another
        worker could take it over (operator probe, session 22)."""
        if 0 < self.stale_after_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"HWNAS_STALE_AFTER_S ({self.stale_after_s:g}) must be at least twice "
                f"HWNAS_HEARTBEAT_S ({self.heartbeat_s:g}): a live worker's jobs would count "
                "as orphaned between its heartbeats"
            )
        return self

    @property
    def is_embedded(self) -> bool:
        return not self.broker_url

    @property
    def serve_loop(self) -> Literal["asyncio", "uvloop"]:
        """The event loop ``hwnas serve`` runs (``api_loop`` with "auto" resolved)."""
        if self.api_loop != "auto":
            return self.api_loop
        return "uvloop" if self.api_processes > 1 else "asyncio"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment; a bad value is ``InvalidInput`` naming its
    variable (the CLI prints it on one line, the API refuses to start with it)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = [_problem(e) for e in exc.errors()]
        field = problems[0].partition(":")[0] if exc.errors()[0]["loc"] else None
        raise InvalidInput(f"bad settings: {'; '.join(problems)}", field=field) from None
    unknown = unknown_variables(os.environ)
    if unknown and settings.strict_settings:  # ops audit 29: a typo only warned
        said = "; ".join(warning.replace(": ignored", "") for warning in unknown)
        raise InvalidInput(
            f"{said} (HWNAS_STRICT_SETTINGS is true: correct or unset it)",
            field=unknown[0].partition(" ")[0],
        )
    for warning in unknown:
        log.warning("%s", warning)
    return settings


def _problem(error: Any) -> str:
    """One pydantic error as "HWNAS_X: what is wrong" (a rule across settings names its
    variables itself)."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"HWNAS_{'_'.join(map(str, error['loc'])).upper()}: {message}"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``HWNAS_*`` variable that no setting reads: a misspelt
    ``HWNAS_BROKER_ULR`` silently gave the embedded mode (operator probe, session 22)."""
    known = {f"HWNAS_{name.upper()}" for name in Settings.model_fields} | NOT_SETTINGS
    warnings = []
    for name in sorted(v for v in environ if v.upper().startswith("HWNAS_")):
        if name.upper() in known or name.upper().startswith(TEST_PREFIX):
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.85)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{name} is not an hwnas setting: ignored{hint}")
    return warnings


def comma_list(text: str) -> list[str]:
    """A comma-separated setting's entries, stripped, empty ones dropped (``"a, b,"`` is
    ``["a", "b"]``): every list-valued ``HWNAS_*`` setting is read this way, but
    ``HWNAS_API_KEYS``, where an empty entry stops the start-up (``api.auth``)."""
    return [part.strip() for part in text.split(",") if part.strip()]
