"""User supernet plugins: register a supernet without forking hwnas (see docs/plugins.md).

Two ways to name a plugin, both pointing at a :class:`~models.base.Supernet` subclass:

- an entry point in the group ``hwnas.supernets`` of an installed distribution, whose name is
  the supernet's ``name`` (``my-net = my_pkg.nets:MyNet`` in ``pyproject.toml``);
- ``HWNAS_SUPERNET_PLUGINS="my_pkg.nets:MyNet,other.mod:Other"`` (importable classes).

The class is the factory: ``create_supernet(name, **kw)`` calls ``MyNet(**kw)``. Plugins are
loaded once per process, after the built-in supernets, the first time the registry is used.
A plugin that cannot be imported, is not a concrete Supernet subclass, or takes a name that
another class registered raises :class:`~core.errors.PluginError` naming the plugin; the same
class named twice (by an entry point and the setting) is registered once.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from core.errors import PluginError
from core.settings import comma_list, get_settings

from .base import Supernet

GROUP = "hwnas.supernets"
#: Supernet name -> where its plugin came from (the entry point or setting that named it).
_ORIGINS: dict[str, str] = {}


def load_plugins(*, specs: Sequence[str] | None = None, group: str = GROUP) -> list[str]:
    """Register every plugin of the entry-point ``group`` and of ``specs`` (default: the
    ``HWNAS_SUPERNET_PLUGINS`` setting); returns the names registered by this call.

    Idempotent: a class already registered under its name is skipped.
    """
    if specs is None:
        specs = comma_list(get_settings().supernet_plugins)
    found: list[tuple[str | None, str]] = [
        (point.name, point.value) for point in entry_points(group=group)
    ]
    found += [(None, spec) for spec in specs]
    registered = []
    for expected_name, spec in found:
        origin = f"plugin {spec!r}"
        if expected_name is not None:
            origin = f"entry point {group}:{expected_name} ({spec})"
        cls = _import_class(spec, origin)
        if _register(cls, expected_name, origin):
            registered.append(cls.name)
    return registered


def _import_class(spec: str, origin: str) -> type[Supernet]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PluginError(f"{origin}: expected 'package.module:ClassName', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # any failure inside user code is reported, not propagated
        raise PluginError(f"{origin}: cannot import {spec!r}: {type(exc).__name__}: {exc}") from exc
    if not (inspect.isclass(obj) and issubclass(obj, Supernet)):
        raise PluginError(f"{origin}: {spec!r} is not a subclass of models.base.Supernet")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise PluginError(f"{origin}: {spec!r} does not implement {missing}")
    if not isinstance(getattr(obj, "name", None), str) or not obj.name:
        raise PluginError(f"{origin}: {spec!r} needs a class attribute 'name' (a string)")
    return obj


def _register(cls: type[Supernet], expected_name: str | None, origin: str) -> bool:
    from .registry import _FACTORIES, register_supernet

    name = cls.name
    if expected_name is not None and expected_name != name:
        raise PluginError(f"{origin}: entry point name must equal the class's name {name!r}")
    if _FACTORIES.get(name) is cls:  # the same class named again (an entry point and the
        return False  # setting, while moving from one to the other): registered once
    if name in _FACTORIES:
        taken_by = _ORIGINS.get(name, "hwnas itself")
        raise PluginError(f"{origin}: supernet name {name!r} is already registered by {taken_by}")
    register_supernet(name)(cls)
    _ORIGINS[name] = origin
    return True
