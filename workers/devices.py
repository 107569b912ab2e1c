"""Hardware profiles as the service sees them: built-ins plus ``HWNAS_PROFILE_DIRS``."""

from __future__ import annotations

from core.settings import get_settings
from hardware_profiles import HardwareProfile, get_profile, is_available, list_profiles


def _extra_dirs() -> list[str]:
    return [d for d in get_settings().profile_dirs.split(",") if d.strip()]


def device_profiles() -> dict[str, HardwareProfile]:
    return list_profiles(_extra_dirs())


def device_profile(profile_id: str) -> HardwareProfile:
    return get_profile(profile_id, _extra_dirs())


def servable(profile: HardwareProfile) -> bool:
    """Whether a worker in this process can evaluate on ``profile`` (recorded: a lookup)."""
    return profile.kind == "recorded" or is_available(profile)
