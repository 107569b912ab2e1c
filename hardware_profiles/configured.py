"""Hardware profiles as the service is configured: built-ins plus ``HWNAS_PROFILE_DIRS``
(the API validates job devices against them; workers measure on them)."""

from __future__ import annotations

from core.settings import get_settings

from .registry import get_profile, is_available, list_profiles
from .schema import HardwareProfile


def _extra_dirs() -> list[str]:
    return [d for d in get_settings().profile_dirs.split(",") if d.strip()]


def device_profiles() -> dict[str, HardwareProfile]:
    return list_profiles(_extra_dirs())


def device_profile(profile_id: str) -> HardwareProfile:
    return get_profile(profile_id, _extra_dirs())


def servable(profile: HardwareProfile) -> bool:
    """Whether a worker in this process can evaluate on ``profile`` (recorded: a lookup)."""
    return profile.kind == "recorded" or is_available(profile)
