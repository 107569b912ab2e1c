"""docker-compose.yml, checked by reading (no Docker engine on these machines): every
`hwnas` command in it parses, and each worker names devices that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from api.cli import build_parser
from hardware_profiles.configured import device_profiles, named_devices

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def _services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_hwnas_command_parses_and_workers_cover_the_builtin_devices() -> None:
    served: list[str] = []
    for name, service in _services().items():
        command = service.get("command")
        if not command or command[0] != "hwnas":
            continue
        args = build_parser().parse_args(command[1:])
        if args.command == "worker":
            devices = named_devices(args.devices, field=f"{name}.command")
            assert devices, name
            assert not set(devices) & set(served), f"{name} serves a device twice"
            served.extend(devices)
    assert set(served) == set(device_profiles()), "a built-in device no worker serves"


def test_workers_get_time_to_hand_their_job_back() -> None:
    for name, service in _services().items():
        if name.startswith("worker-"):
            assert "stop_grace_period" in service, name


def test_every_long_running_service_restarts_when_it_exits() -> None:
    """Chaos drill 32: a worker killed (or started while the database was away, when it
    exits) stayed down, and every job of its devices waited for someone to start it."""
    for name, service in _services().items():
        if name != "migrate":  # a one-shot step
            assert service.get("restart") == "unless-stopped", name
