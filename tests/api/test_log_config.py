"""``api.log_config``: how ``hwnas serve`` writes its lines."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from api.cli import main
from api.log_config import serve_log_config
from core.settings import Settings, get_settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig replaces the handlers of the loggers it names: put them back after."""
    names = ["", "uvicorn", "uvicorn.access", "uvicorn.error", "api", "workers"]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names}
    propagate = {n: logging.getLogger(n).propagate for n in names}
    yield
    for name, (handlers, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate[name]


def _lines(config: dict) -> list[str]:
    """What an access line and an hwnas line become under ``config``, on one stream."""
    stream = io.StringIO()
    logging.config.dictConfig(config)
    for name in ("uvicorn.access", ""):
        for handler in logging.getLogger(name).handlers:
            assert isinstance(handler, logging.StreamHandler)
            handler.setStream(stream)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200
    )
    logging.getLogger("api.test").warning("answered 503: %s", "database is locked")
    return stream.getvalue().splitlines()


def test_the_access_log_has_the_time_first(restore_logging: None) -> None:
    """uvicorn's lines had no time: they could not be put beside the jobs' (ops audit 29)."""
    access, hwnas = _lines(serve_log_config())
    assert access[:4].isdigit() and access.endswith('"GET /healthz HTTP/1.1" 200 OK')
    assert hwnas[:4].isdigit() and hwnas.endswith(
        " WARNING api.test: answered 503: database is locked"
    )


def test_json_lines_carry_the_access_fields(restore_logging: None) -> None:
    access, hwnas = (json.loads(line) for line in _lines(serve_log_config("json")))
    assert access["logger"] == "uvicorn.access" and access["level"] == "INFO"
    assert (access["client"], access["method"], access["path"], access["status"]) == (
        "127.0.0.1:5000",
        "GET",
        "/healthz",
        200,
    )
    assert access["time"].endswith("+00:00")
    assert hwnas["message"] == "answered 503: database is locked" and hwnas["logger"] == "api.test"


def test_another_log_format_is_refused() -> None:
    with pytest.raises(ValidationError, match="log_format"):
        Settings(log_format="xml")  # type: ignore[arg-type]


def test_serve_s_fatal_error_is_a_json_line_too(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that could not start said why in plain text among its JSON lines (ops
    audit 29)."""
    monkeypatch.setenv("HWNAS_LOG_FORMAT", "json")
    monkeypatch.setenv("HWNAS_API_PROCESSES", "2")  # refused in the embedded mode
    monkeypatch.delenv("HWNAS_BROKER_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert main(["serve", "--port", "0"]) == 2
    finally:
        get_settings.cache_clear()
    [line] = capsys.readouterr().err.splitlines()
    said = json.loads(line)
    assert said["level"] == "ERROR" and said["logger"] == "api.cli"
    assert said["message"].startswith("HWNAS_API_PROCESSES > 1 needs the distributed mode")
