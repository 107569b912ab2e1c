"""How ``hwnas serve`` logs: uvicorn's own lines as uvicorn formats them, and hwnas's with
the time, level and logger.

Nothing configured hwnas's loggers under ``serve``: Python's last-resort handler printed
warnings as bare messages, with no time or level, and dropped every INFO line, such as a
job resumed after a restart (operator probe, session 22). uvicorn applies this dictionary in
each of its processes (``HWNAS_API_PROCESSES``), so all of them log alike. The Celery worker
logs through Celery's own set-up.
"""

from __future__ import annotations

import copy
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


def serve_log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration, with a handler on the root logger (standard
    error): hwnas's packages' records from INFO up reach it, other libraries' from WARNING
    (the packages' own loggers keep propagating, so a handler added to the root, such as
    pytest's, sees their records too)."""
    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["hwnas"] = {"format": FORMAT}
    config["handlers"]["hwnas"] = {
        "class": "logging.StreamHandler",
        "formatter": "hwnas",
        "stream": "ext://sys.stderr",
    }
    for name in PACKAGES:
        config["loggers"][name] = {"level": "INFO"}
    config["root"] = {"handlers": ["hwnas"], "level": "WARNING"}
    return config
