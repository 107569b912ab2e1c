"""Loading and looking up hardware profiles (YAML files, one profile per file).

The built-in profiles ship in ``hardware_profiles/profiles/``; deployments add their own
with ``extra_dirs``. Every error names the file, the field path and what was expected.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from core.errors import InvalidInput, UnknownName

from .schema import HardwareProfile

BUILTIN_DIR = Path(__file__).resolve().parent / "profiles"
_SUFFIXES = (".yaml", ".yml")


def load_profile(path: str | Path) -> HardwareProfile:
    """Read and validate one profile file; raises ``InvalidInput`` naming file and field."""
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise InvalidInput(f"{path.name}: expected a mapping of profile fields at the top level")
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as exc:
        raise _invalid(path, exc) from None


def list_profiles(extra_dirs: Iterable[str | Path] = ()) -> dict[str, HardwareProfile]:
    """All profiles by id: the built-ins, then each of ``extra_dirs``; duplicate ids raise."""
    if isinstance(extra_dirs, (list, tuple)) and not extra_dirs:
        return dict(_builtins_by_id())  # a copy: the caller may change it
    found: dict[str, tuple[Path, HardwareProfile]] = dict(_builtin_profiles())
    for directory in extra_dirs:
        for path in _profile_files(Path(directory)):
            _add(found, path, load_profile(path))
    return {profile_id: profile for profile_id, (_, profile) in found.items()}


def get_profile(profile_id: str, extra_dirs: Iterable[str | Path] = ()) -> HardwareProfile:
    """The profile called ``profile_id``; raises ``UnknownName`` listing the known ids."""
    profiles = list_profiles(extra_dirs)
    if profile_id not in profiles:
        raise UnknownName("device", profile_id, profiles, field="device")
    return profiles[profile_id]


def is_available(profile: HardwareProfile) -> bool:
    """Whether this process can measure ``profile`` live (recorded profiles: never)."""
    return profile.kind != "recorded" and unavailable_because(profile) is None


def unavailable_because(profile: HardwareProfile) -> str | None:
    """Why this process cannot measure the live ``profile`` (None: it can), such as "no
    CUDA device here"."""
    if profile.kind == "cuda" and not _cuda_device_present(profile):
        return f"it needs CUDA device {profile.torch_device}, which this machine lacks"
    if profile.runtime == "onnxruntime" and not _onnxruntime_present(profile):
        needs = "with CUDAExecutionProvider " if profile.kind == "cuda" else ""
        return f"it needs onnxruntime {needs}installed"
    return None


@lru_cache(maxsize=1)
def _builtin_profiles() -> tuple[tuple[str, tuple[Path, HardwareProfile]], ...]:
    # Package data never changes while the process runs; the API asks on every request.
    found: dict[str, tuple[Path, HardwareProfile]] = {}
    for path in _profile_files(BUILTIN_DIR):
        _add(found, path, load_profile(path))
    return tuple(found.items())


@lru_cache(maxsize=1)
def _builtins_by_id() -> dict[str, HardwareProfile]:
    return {profile_id: profile for profile_id, (_, profile) in _builtin_profiles()}


def _profile_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise InvalidInput(f"{directory}: not a directory of hardware profiles")
    return sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def _add(
    found: dict[str, tuple[Path, HardwareProfile]], path: Path, profile: HardwareProfile
) -> None:
    if profile.id in found:
        first = found[profile.id][0]
        raise InvalidInput(
            f"{path.name}: id: {profile.id!r} is already defined by {first}", field="id"
        )
    found[profile.id] = (path, profile)


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"{path.name}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(f"{path.name}: {where}invalid YAML: {problem}") from None


def _invalid(path: Path, exc: ValidationError) -> InvalidInput:
    """All validation errors in one message: ``file: field.path: what was expected``."""
    errors = exc.errors(include_url=False)
    fields = [".".join(str(part) for part in error["loc"]) or "(profile)" for error in errors]
    details = "; ".join(
        f"{field}: {error['msg']}" for field, error in zip(fields, errors, strict=True)
    )
    return InvalidInput(f"{path.name}: {details}", field=fields[0])


def _cuda_device_present(profile: HardwareProfile) -> bool:
    import torch  # only here: listing profiles must not pay for importing torch

    if not torch.cuda.is_available():
        return False
    index = torch.device(profile.torch_device).index or 0
    return index < torch.cuda.device_count()


def _onnxruntime_present(profile: HardwareProfile) -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    if profile.kind != "cuda":
        return True
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
