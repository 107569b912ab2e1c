"""The source of a plugin's modules as this process loaded them, for its child processes.

A child process (``hardware_profiles.isolated``: TorchScript exports, ``cpu-ts`` timings)
imports a plugin's modules afresh from disk: edited while the service runs, the child
exported or timed the new code's network under the old code's fingerprint (review 29c).
The service remembers each plugin module's source digest when it registers the plugin
(:func:`remember`, from ``models.base.code_version``) and sends them with each request; the
child, having loaded the modules it needs, answers with the names of those whose source
differs (:func:`changed`) instead of running anything.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

#: Module name -> a digest of its source file as this process first remembered it.
_AS_LOADED: dict[str, str] = {}
_lock = threading.Lock()


def source_file(module: ModuleType) -> Path | None:
    """The Python source file ``module`` was loaded from, None where it has none to read
    (a built-in or compiled module, one made at run time)."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    return Path(file)


def _digest(path: Path | None) -> str | None:
    """A digest of the file at ``path``; None where there is none to read (gone since)."""
    if path is None:
        return None
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=12).hexdigest()
    except OSError:
        return None


def remember(modules: Iterable[ModuleType]) -> None:
    """Keep the source digest of each of ``modules`` not remembered yet: the code this
    process runs, read as close to its import as the caller can (in a child, when a
    request first needs the module)."""
    for module in modules:
        if module.__name__ not in _AS_LOADED and (found := _digest(source_file(module))):
            with _lock:
                _AS_LOADED.setdefault(module.__name__, found)


def remember_files(files: Mapping[str, Path]) -> None:
    """Keep the digest of each module's file of ``files`` (module name -> path), as read
    now, replacing one remembered before: at a plugin's registration, the code this process
    loaded or will load (a plugin reloaded and registered again was refused by the children
    under its old digest: review 30)."""
    for name, path in files.items():
        if found := _digest(path):
            with _lock:
                _AS_LOADED[name] = found


def as_loaded() -> dict[str, str]:
    """The digests remembered, by module name (sent with each request to a child)."""
    with _lock:
        return dict(_AS_LOADED)


def changed(expected: Mapping[str, str]) -> list[str]:
    """The modules of ``expected`` loaded in this process whose source is not the one
    ``expected`` gives, by the file each was loaded from (empty: the same code runs here)."""
    remember(sys.modules[name] for name in expected if name in sys.modules)
    with _lock:
        names = [name for name, found in expected.items() if _AS_LOADED.get(name, found) != found]
    return sorted(str(source_file(sys.modules[name]) or name) for name in names)
