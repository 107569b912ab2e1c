"""How ``hwnas serve`` logs: uvicorn's own lines as uvicorn formats them, after the time,
and hwnas's with the time, level and logger; or every line as one JSON object
(``HWNAS_LOG_FORMAT=json``).

Nothing configured hwnas's loggers under ``serve``: Python's last-resort handler printed
warnings as bare messages, with no time or level, and dropped every INFO line, such as a
job resumed after a restart (operator probe, session 22). uvicorn applies this dictionary in
each of its processes (``HWNAS_API_PROCESSES``), so all of them log alike. The Celery worker
logs through Celery's own set-up.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

#: hwnas's packages, and Alembic's migration runner (which says what it migrates), at INFO.
PACKAGES = (
    "api",
    "workers",
    "store",
    "models",
    "hardware_profiles",
    "search",
    "core",
    "alembic.runtime.migration",
)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


#: ``JsonFormatter`` by name: the configuration travels to uvicorn's processes as text.
JSON_FORMATTER = "api.log_config.JsonFormatter"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``; an access line's ``client``, ``method``, ``path`` and ``status`` as fields
    of their own; ``exception``, a traceback's text, where there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, _version, status = args
            entry.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def serve_log_config(log_format: str = "text") -> dict[str, Any]:
    """uvicorn's default logging configuration, with a handler on the root logger (standard
    error): hwnas's packages' records from INFO up reach it, other libraries' from WARNING
    (the packages' own loggers keep propagating, so a handler added to the root, such as
    pytest's, sees their records too). uvicorn's own lines (its start, the access log) get
    the time too (they had none: ops audit 29); ``log_format`` "json" makes every line one
    JSON object (``JsonFormatter``, ``HWNAS_LOG_FORMAT``)."""
    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = "%(asctime)s " + formatter["fmt"]
    if log_format == "json":
        config["formatters"] = {name: {"()": JSON_FORMATTER} for name in ("default", "access")}
    config["formatters"]["hwnas"] = (
        {"()": JSON_FORMATTER} if log_format == "json" else {"format": FORMAT}
    )
    config["handlers"]["hwnas"] = {
        "class": "logging.StreamHandler",
        "formatter": "hwnas",
        "stream": "ext://sys.stderr",
    }
    for name in PACKAGES:
        config["loggers"][name] = {"level": "INFO"}
    config["root"] = {"handlers": ["hwnas"], "level": "WARNING"}
    return config
