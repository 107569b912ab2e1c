"""Start-up builds every registered supernet, so the first job submission naming one does
not hold the event loop for it; one that cannot be built does not stop the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app, started_line
from core.errors import InvalidInput
from models import registry
from models.registry import list_supernets

from ..conftest import embedded_settings


def test_start_up_builds_each_supernet_once_and_survives_a_broken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    list_supernets()  # built-ins and plugins registered
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "_INSTANCES", {})
    monkeypatch.setattr(registry, "_FAILED", {})
    monkeypatch.setattr(registry, "_UNBUILT", {})
    calls: list[None] = []

    def broken(**_kwargs: Any) -> Any:
        calls.append(None)
        raise RuntimeError("weights missing")

    registry._FACTORIES["broken-probe"] = broken
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        built = set(registry._INSTANCES)  # before any request
        assert built == set(list_supernets()) - {"broken-probe"}
        said = "could not be built: RuntimeError: weights missing"  # the class, not a traceback
        assert f"supernet broken-probe not preloaded: supernet 'broken-probe' {said}" in caplog.text
        assert client.get("/healthz").status_code == 200
        before = len(calls)
        for _ in range(3):  # the devices' supernets: built once at most to find its class
            devices = client.get("/v1/devices").json()
            assert all("broken-probe" not in d["supernets"] for d in devices)
        assert len(calls) <= before + 1
        for _ in range(20):  # a look-up per request, for the server's life
            with pytest.raises(InvalidInput, match="could not be built: RuntimeError"):
                registry.supernet_class("broken-probe")
        frames, tb = 0, registry._UNBUILT["broken-probe"].__traceback__
        while tb is not None:
            frames, tb = frames + 1, tb.tb_next
        assert frames < 10  # raised again, not grown by each look-up's frames


def test_the_start_up_line_says_the_mode(tmp_path: Path) -> None:
    embedded = embedded_settings(tmp_path)
    assert started_line(embedded).startswith(
        "hwnas: embedded mode (1 in-process worker), database "
    )
    distributed = embedded.model_copy(update={"broker_url": "redis://:pw@127.0.0.1:6379/3"})
    assert ", broker redis://:***@127.0.0.1:6379/3, " in started_line(distributed)


def test_the_start_up_line_says_where_the_files_are_and_what_guards_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said neither where a relative database path led, nor the data directory, nor
    whether keys were required or old jobs deleted (ops audit 29)."""
    monkeypatch.chdir(tmp_path)
    default = embedded_settings(
        tmp_path, database_url="sqlite:///./var/hwnas.db", data_dir=Path("var"), embedded_workers=2
    )
    assert started_line(default) == (
        f"hwnas: embedded mode (2 in-process workers), database sqlite:///{tmp_path}/var/hwnas.db, "
        f"data {tmp_path}/var, no API keys (anyone who reaches it may use it), nothing deleted "
        "on its own"
    )
    guarded = default.model_copy(
        update={"api_keys": f"{'k' * 32},{'j' * 32}", "retention_days": 30.0}
    )
    line = started_line(guarded)
    assert line.endswith("API keys required (2), jobs deleted 30 days after they end")
    assert "k" * 32 not in line
