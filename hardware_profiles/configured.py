"""Hardware profiles as the service is configured: built-ins plus ``HWNAS_PROFILE_DIRS``
(the API validates job devices against them; workers measure on them)."""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from core.errors import InvalidInput, UnknownName
from core.settings import comma_list, get_settings

from .registry import get_profile, is_available, list_profiles
from .schema import HardwareProfile


def _extra_dirs() -> list[str]:
    return comma_list(get_settings().profile_dirs)


def device_profiles() -> dict[str, HardwareProfile]:
    return list_profiles(_extra_dirs())


def device_profile(profile_id: str) -> HardwareProfile:
    return get_profile(profile_id, _extra_dirs())


def named_devices(names: str, *, field: str) -> list[str]:
    """The profile ids a comma-separated list names, in order, once each; an entry may be a
    shell-style pattern (``nb201-*``). An entry that names no profile is an error (a typo
    would leave a device's jobs waiting for a worker that never takes them)."""
    profiles = sorted(device_profiles())
    chosen: list[str] = []
    for entry in (e.strip() for e in names.split(",")):
        if not entry:
            continue
        matched = [pid for pid in profiles if fnmatchcase(pid, entry)]
        if not matched and any(c in entry for c in "*?["):
            raise InvalidInput(
                f"device pattern {entry!r} matches no profile; known: {', '.join(profiles)}",
                field=field,
            )
        if not matched:
            raise UnknownName("device", entry, profiles, field=field)
        chosen.extend(pid for pid in matched if pid not in chosen)
    return chosen


def servable(profile: HardwareProfile) -> bool:
    """Whether a worker in this process can evaluate on ``profile`` (recorded: a lookup)."""
    return profile.kind == "recorded" or is_available(profile)


def measures(profile: HardwareProfile, supernet: object) -> bool:
    """Whether ``profile`` gives latencies of ``supernet``: a recorded profile those of the
    recorded supernets built on its table, a live one those of trained (not recorded) ones."""
    recorded = bool(getattr(supernet, "recorded", False))
    if profile.kind == "recorded":
        return recorded and getattr(supernet, "source", None) == profile.source
    return not recorded


def check_measures(
    device_id: str,
    supernet: object,
    *,
    field: str = "device",
    profiles: Mapping[str, HardwareProfile] | None = None,
) -> None:
    """``InvalidInput`` naming the devices that can, unless ``device_id`` measures ``supernet``
    (``profiles``: ``device_profiles()``, when the caller has it already)."""
    profiles = device_profiles() if profiles is None else profiles
    profile = profiles[device_id]
    if measures(profile, supernet):
        return
    fitting = sorted(pid for pid, p in profiles.items() if measures(p, supernet))
    kind = "recorded" if getattr(supernet, "recorded", False) else "trained"
    raise InvalidInput(
        f"{device_id!r} ({profile.kind}) cannot evaluate the {kind} supernet "
        f"{getattr(supernet, 'name', supernet)!r}; devices that can: {', '.join(fitting)}",
        field=field,
    )
