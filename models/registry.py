"""Registry of supernets: ``@register_supernet``, ``list_supernets``, ``create_supernet``."""

from __future__ import annotations

import functools
import inspect
import logging
import numbers
import os
import pickle
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from core.errors import HwnasError, InvalidInput, UnknownName, first_line
from core.settings import comma_list, get_settings

from .base import Supernet, code_version
from .check_memo import SKIPPED, CheckMemo
from .user_data import (
    configured_roots,
    confine,
    data_signature,
    file_state,
    recent,
    torch_load_reason,
)
from .user_images import check_class_count, check_class_order, class_names

_FACTORIES: dict[str, Callable[..., Supernet]] = {}
_INSTANCES: dict[str, Supernet] = {}
#: Instances bound to a user's validation data, by (name, data path), least recent first,
#: with the data's signature when they were made (``models.user_data.data_signature``).
_DATA_INSTANCES: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], Supernet]] = OrderedDict()
DATA_INSTANCES_MAX = 4
_data_lock = threading.Lock()
#: One lock per supernet name for building its default instance: requests that first ask
#: for it together (a server's start, the catalog and submissions at once) loaded its
#: weights file once each. Re-entrant: a plugin's code may ask for its own supernet while it
#: is built (it gets the error it got before, not a hang).
_DEFAULT_LOCKS: dict[str, threading.RLock] = {}
_default_locks_lock = threading.Lock()


def _default_lock(name: str) -> threading.RLock:
    with _default_locks_lock:
        return _DEFAULT_LOCKS.setdefault(name, threading.RLock())


F = TypeVar("F", bound=Callable[..., Supernet])
log = logging.getLogger(__name__)


def register_supernet(name: str) -> Callable[[F], F]:
    """Register a factory under ``name``; re-registering warns and replaces."""

    def decorate(factory: F) -> F:
        if name in _FACTORIES:
            warnings.warn(f"supernet {name!r} registered again; replacing", stacklevel=2)
            _INSTANCES.pop(name, None)
            _CLASSES.pop(name, None)
            _UNBUILT.pop(name, None)
            _FAILED.pop(name, None)
            for key in [key for key in _DATA_INSTANCES if key[0] == name]:
                del _DATA_INSTANCES[key]
        _FACTORIES[name] = factory
        if isinstance(factory, type):  # its code as loaded, not as a later edit reads
            code_version(factory)
        return factory

    return decorate


def list_supernets() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def create_supernet(name: str, **kwargs: Any) -> Supernet:
    """A new supernet instance; unknown names raise an error listing the known ones. A
    factory that fails with anything but an ``HwnasError`` (a plugin's ``FileNotFoundError``
    for its weights, ``load_state_dict``'s ``RuntimeError``) is answered as ``InvalidInput``
    on ``supernet`` with the error's type and first line; its traceback is logged."""
    factory = _factory(name)
    try:
        return factory(**kwargs)
    except HwnasError:
        raise
    except Exception as exc:
        log.warning("supernet %r could not be built", name, exc_info=True)
        reason = _reason(exc)
        if isinstance(exc, pickle.UnpicklingError):  # torch's text advises unsafe loading
            reason = f"{type(exc).__name__}: {torch_load_reason(exc)}"
        raise InvalidInput(
            f"supernet {name!r} could not be built: {reason}", field="supernet"
        ) from exc


def _factory(name: str) -> Callable[..., Supernet]:
    _load_builtins()
    try:
        return _FACTORIES[name]
    except KeyError:
        raise UnknownName("supernet", name, _FACTORIES, field="supernet") from None


def _reason(exc: BaseException) -> str:
    """The error's class and first line; a system error's file by its name only (the
    catalog and a 422 show it to API clients, not the operator's directories)."""
    if isinstance(exc, OSError) and exc.strerror:
        filename = exc.filename
        named = ""
        if isinstance(filename, str | bytes | os.PathLike):
            named = f": {os.path.basename(os.fsdecode(filename))}"
        return f"{type(exc).__name__}: {exc.strerror}{named}"
    return f"{type(exc).__name__}: {first_line(exc)}"


def get_supernet(name: str, *, validation_data: str | None = None) -> Supernet:
    """The shared, default-configured instance (weights loaded once per process, and again
    when the configured weights file changed on disk: ``weights_state``).

    With ``validation_data`` (a data path, see ``models.user_data``): the instance that
    measures accuracy on that data, one per (name, path), made again when the data changed
    on disk (its ``data_signature``); the ``DATA_INSTANCES_MAX`` most recently used are
    kept. A job's runner and its export must both ask for it, so that the exported file is
    the sub-network that was measured (BatchNorm may be recalibrated on the file's
    calibration samples).
    """
    weights = weights_state(name)
    if validation_data is None:
        if name not in _INSTANCES or _WEIGHTS_LOADED.get(name) != weights:
            _raise_if_kept(name, weights)  # at once, not after another caller's retry
            with _default_lock(name):  # one build: the others wait, then take it
                weights = weights_state(name)  # the file may have changed meanwhile
                if name not in _INSTANCES or _WEIGHTS_LOADED.get(name) != weights:
                    _INSTANCES[name] = _default_instance(name)
                    _WEIGHTS_LOADED[name] = weights
        return _INSTANCES[name]
    key = (name, validation_data)
    signature = _made_with(name, validation_data, weights)  # outside the lock: a walk
    with _data_lock:
        held = _DATA_INSTANCES.get(key)
        if held is None or held[0] != signature:  # never loaded, or the data changed since
            if not takes_validation_data(name):
                raise InvalidInput(
                    f"supernet {name!r} does not measure accuracy on user data",
                    field="validation_data",
                )
            given = configured_weights(name)
            instance = _given(
                create_supernet(name, validation_data=validation_data, **given),
                given,
                *_found(validation_data),
            )
            _DATA_INSTANCES[key] = held = (signature, instance)
            while len(_DATA_INSTANCES) > DATA_INSTANCES_MAX:
                _DATA_INSTANCES.popitem(last=False)
        _DATA_INSTANCES.move_to_end(key)
        return held[1]


def _made_with(
    name: str, validation_data: str, weights: tuple[Any, ...] | None = None
) -> tuple[Any, ...]:
    """What an instance of ``name`` on ``validation_data`` was made with: the data's and
    the configured weights file's state (``_DATA_INSTANCES``' signatures)."""
    weights = weights_state(name) if weights is None else weights
    return data_signature(validation_data), weights


#: Supernets whose default instance failed: name -> (the weights file's state then, when
#: to try again, the error's class, text and field). The error itself is not kept: its
#: traceback would keep whatever the failed build had loaded (a checkpoint) alive.
_FAILED: dict[str, tuple[tuple[Any, ...], float, type[HwnasError], str, str | None]] = {}
#: How long a failed build is answered from ``_FAILED`` before it is tried again (a cause
#: other than the weights file, say a file system that was away, may have cleared).
FAILED_RETRY_S = 30.0
_monotonic = time.monotonic  # the tests move this clock


def _default_instance(name: str) -> Supernet:
    """``name``'s instance with its configured weights. When that fails, the error is
    answered again without building anew for ``FAILED_RETRY_S``, or until the weights file
    changes on disk: the catalog and every submission naming it ask (a checkpoint may take
    seconds to read)."""
    weights = configured_weights(name)
    state = weights_state(name)
    _raise_if_kept(name, state)
    if (failed := _FAILED.get(name)) is not None and failed[0] == state:
        # this caller builds again; the others meanwhile are answered as before
        _FAILED[name] = (state, _monotonic() + FAILED_RETRY_S, *failed[2:])
    try:
        instance = _given(create_supernet(name, **weights), weights)
    except UnknownName:
        raise
    except HwnasError as exc:
        field = exc.field if isinstance(exc, InvalidInput) else None
        _FAILED[name] = (state, _monotonic() + FAILED_RETRY_S, type(exc), str(exc), field)
        raise
    _FAILED.pop(name, None)
    return instance


def _given(instance: Supernet, weights: Mapping[str, str], *data: Path) -> Supernet:
    """``instance``, told the files it was built with (``Supernet.given_files``: what its
    fingerprint hashes when it gives no ``quality_inputs``)."""
    instance.given_files = (*(Path(path) for path in weights.values()), *data)
    if data:  # else a plugin's own attribute of that name stands, if it has one
        instance.given_data = data[0]
    return instance


def _found(validation_data: str) -> tuple[Path, ...]:
    """The file or directory ``validation_data`` names, if it is there (when it is not,
    the instance cannot measure: its ``evaluate``, or its fingerprint, then says why)."""
    try:
        return (confine(validation_data, configured_roots()),)
    except InvalidInput:
        return ()


def _raise_if_kept(name: str, state: tuple[Any, ...]) -> None:
    """Raise ``name``'s kept build error (``_FAILED``) while it holds for the weights file's
    ``state`` (a caller retrying it meanwhile pushes its time on: the others are answered at
    once, not after that build)."""
    failed = _FAILED.get(name)
    if failed is not None and failed[0] == state and _monotonic() < failed[1]:
        raise _renewed(*failed[2:])


def _renewed(cls: type[HwnasError], text: str, field: str | None) -> HwnasError:
    """A new error like the one kept (raised from several threads, one object would share
    its traceback between them)."""
    try:
        return cls(text, field=field) if issubclass(cls, InvalidInput) else cls(text)  # type: ignore[call-arg]
    except TypeError:  # a class of other arguments (none such is kept today)
        return InvalidInput(text, field=field or "supernet")


#: ``check_validation_data``'s answers, by (supernet, resolved path).
_DATA_CHECKS = CheckMemo(64)


def check_validation_data(
    name: str, validation_data: str, guard: AbstractContextManager[Any] | None = None
) -> None:
    """Raise ``InvalidInput`` when supernet ``name`` could not measure on the data at
    ``validation_data`` (its ``Supernet.check_data``), without its weights: the data is
    read on an instance made with it alone, or on the instance ``get_supernet`` holds for
    it. The answer for a (name, file), a pass or the error, is given again without reading
    the file until its ``data_signature`` changes, whatever path names it
    (``models.check_memo``); ``guard`` is held while the file is read. A supernet class
    that does not override ``check_data`` is not checked. A directory of images is held
    only to the supernet's ``num_outputs``, by its class names (its layout is
    ``check_path``'s): decoding thousands of images would hold a submission for seconds to
    minutes; a bad image fails the job instead."""
    roots = configured_roots()
    resolved = confine(validation_data, roots)
    if resolved.is_dir():
        outputs, classes = _num_outputs(name), class_names(resolved, roots=roots)
        if outputs is not None:
            check_class_count(resolved, classes, outputs)
        if (known := _output_classes(name)) is not None:
            check_class_order(resolved, classes, known)
        return
    if supernet_class(name).check_data is Supernet.check_data:
        return
    check = partial(_check_data, name, validation_data)
    state = file_state(resolved)
    _DATA_CHECKS.run((name, str(resolved)), None if recent(state) else state, check, guard)


def _output_classes(name: str) -> Sequence[str] | None:
    """The class names the shared instance of ``name`` gives (``output_classes``); None
    where it names none, or its plugin's code breaks (logged, as ``_num_outputs``)."""
    try:
        known = get_supernet(name).output_classes()
    except Exception as exc:  # a plugin's code
        log.warning("supernet %r: output_classes() failed: %s", name, _reason(exc))
        return None
    return known if isinstance(known, Sequence) and not isinstance(known, str) else None


def _num_outputs(name: str) -> int | None:
    """The shared instance's ``num_outputs`` (built already: the ``supernet`` field's check
    made it); a plugin's that breaks, or gives no whole number >= 1, checks nothing (logged:
    the worker's load holds the data to what the network computes)."""
    try:
        outputs = get_supernet(name).num_outputs()
    except Exception as exc:  # a plugin's code
        log.warning("supernet %r: num_outputs() failed: %s", name, _reason(exc))
        return None
    if outputs is None:
        return None
    if isinstance(outputs, numbers.Integral) and not isinstance(outputs, bool) and outputs >= 1:
        return int(outputs)  # numpy's integers too
    log.warning("supernet %r: num_outputs() gave %r, not an int >= 1: ignored", name, outputs)
    return None


def _check_data(name: str, validation_data: str) -> object:
    key = (name, validation_data)
    with _data_lock:
        held = _DATA_INSTANCES.get(key)
    if held is not None and held[0] == _made_with(name, validation_data):  # loaded for a job
        instance = held[1]
    elif _needs_more_than_data(_factory(name)):  # its weights, say: the job's worker checks
        return SKIPPED
    else:
        try:
            instance = create_supernet(name, validation_data=validation_data)
        except InvalidInput as exc:
            if exc.field == "validation_data":  # a class that reads its data when built
                raise
            log.info("supernet %r: the data check could not build it: %s", name, exc)
            return SKIPPED
    try:
        instance.check_data()
    except InvalidInput:
        raise
    except Exception as exc:  # a plugin's check that breaks is the user's to see
        raise InvalidInput(
            f"supernet {name!r} could not check the validation data: {_reason(exc)}",
            field="validation_data",
        ) from exc
    return None


def _needs_more_than_data(factory: Callable[..., Supernet]) -> bool:
    """Whether ``factory(validation_data=...)`` lacks an argument the factory requires."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    required = (p for p in parameters if p.default is p.empty and p.name != "validation_data")
    return any(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in required)


#: The keyword a supernet class takes its weights file by, in order of preference.
WEIGHTS_KEYWORDS = ("checkpoint", "weights")


def configured_weights(name: str) -> dict[str, str]:
    """The weights file ``HWNAS_SUPERNET_CHECKPOINTS`` names for ``name``, as the keyword its
    class takes ({} when none is configured)."""
    path = checkpoint_paths(get_settings().supernet_checkpoints).get(name)
    if not path:
        return {}
    # Factories may take **kwargs: the keywords are those of the class they build.
    keywords = init_keywords(supernet_class(name))
    for keyword in WEIGHTS_KEYWORDS:
        if keyword in keywords:
            return {keyword: path}
    raise InvalidInput(
        f"HWNAS_SUPERNET_CHECKPOINTS names supernet {name!r}, which takes no weights file "
        f"(its class's __init__ takes none of the keywords {', '.join(WEIGHTS_KEYWORDS)})",
        field="HWNAS_SUPERNET_CHECKPOINTS",
    )


@functools.lru_cache(maxsize=8)
def checkpoint_paths(text: str) -> Mapping[str, str]:
    """``HWNAS_SUPERNET_CHECKPOINTS``'s text (``name=path,...``) as {name: path} (read-only:
    the answer is shared)."""
    entries = (item.split("=", 1) for item in comma_list(text) if "=" in item)
    return MappingProxyType({key.strip(): value.strip() for key, value in entries})


def check_checkpoints() -> None:
    """Refuse an ``HWNAS_SUPERNET_CHECKPOINTS`` entry that is not ``name=path``, names no
    registered supernet (a typo, ``tab_mlp=`` for ``tab-mlp=``, was ignored, and the supernet
    searched with its built-in or random weights) or a file that does not exist. Loads the
    plugins."""
    text = get_settings().supernet_checkpoints
    known = list_supernets()
    for item in comma_list(text):
        name, equals, path = (part.strip() for part in item.partition("="))
        if not equals or not name or not path:
            raise InvalidInput(
                f"HWNAS_SUPERNET_CHECKPOINTS: {item!r} is not <supernet>=<weights file>",
                field="HWNAS_SUPERNET_CHECKPOINTS",
            )
        if name not in known:
            raise InvalidInput(
                f"HWNAS_SUPERNET_CHECKPOINTS names supernet {name!r}, which is not registered; "
                f"known: {', '.join(known)}",
                field="HWNAS_SUPERNET_CHECKPOINTS",
            )
        configured_weights(name)  # one that takes no weights file
        if not Path(path).is_file():  # the start went on with the supernet broken (operator
            raise InvalidInput(  # probe, session 22)
                f"HWNAS_SUPERNET_CHECKPOINTS: the weights file of {name!r}, {path!r}, is not "
                "a file that exists",
                field="HWNAS_SUPERNET_CHECKPOINTS",
            )


def weights_state(name: str) -> tuple[Any, ...]:
    """The state on disk (``file_state``) of the weights file configured for ``name``:
    instances made before it changed are made again (a checkpoint replaced while the
    service runs: jobs then record the new weights' fingerprint, so none reuses what the
    old ones measured). ``()`` when none is configured."""
    path = checkpoint_paths(get_settings().supernet_checkpoints).get(name)
    return file_state(Path(path)) if path else ()


#: The ``weights_state`` each of ``_INSTANCES`` was made with.
_WEIGHTS_LOADED: dict[str, tuple[Any, ...]] = {}


def takes_validation_data(name: str) -> bool:
    """Whether the supernet ``name`` takes a ``validation_data`` path (its class's keyword)."""
    return "validation_data" in init_keywords(supernet_class(name))


def supernet_class(name: str) -> type[Supernet]:
    """The class ``name``'s factory builds (its class attributes: ``recorded``, ``source``):
    the factory itself when it is a class (plugins); otherwise the type of the shared
    instance, or of one made for this, once (the built-ins' factories are functions: a
    supernet whose configured weights fail would otherwise be built anew at every look-up;
    one that cannot be built at all raises its error again without building)."""
    factory = _factory(name)
    if isinstance(factory, type):
        return factory
    held = _INSTANCES.get(name)
    if held is not None:
        return type(held)
    if name in _UNBUILT:  # a traceback of its own each raise: each raise of the one object
        raise _UNBUILT[name].with_traceback(None)  # added its frames to the kept ones
    if name not in _CLASSES:
        try:
            _CLASSES[name] = type(create_supernet(name))
        except Exception as exc:
            _UNBUILT[name] = exc
            raise
    return _CLASSES[name]


#: The classes of function factories found by ``supernet_class`` (cleared when re-registered).
_CLASSES: dict[str, type[Supernet]] = {}
#: Those whose factory raised instead (cleared when re-registered, as ``_CLASSES``).
_UNBUILT: dict[str, Exception] = {}


def init_keywords(cls: type) -> set[str]:
    """The keywords ``cls(...)`` accepts by name: its signature's, and where that takes
    ``**kwargs``, those of the ``__init__`` methods further up the class's MRO (taken to
    receive them through ``super().__init__(**kwargs)``), up to one without ``**kwargs``
    or one whose signature cannot be read."""
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):  # a signature Python cannot read (some C classes)
        return set()
    names = _by_name(parameters)
    owner = next((k for k in cls.__mro__ if "__init__" in vars(k)), object)
    for klass in cls.__mro__[cls.__mro__.index(owner) + 1 :]:
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        try:
            parameters = list(inspect.signature(init).parameters.values())[1:]  # no self
        except (TypeError, ValueError):
            break
        names |= _by_name(parameters)
    return names


def _by_name(parameters: list[inspect.Parameter]) -> set[str]:
    return {p.name for p in parameters if p.kind not in _NOT_BY_NAME}


_NOT_BY_NAME = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.VAR_POSITIONAL,
    inspect.Parameter.VAR_KEYWORD,
)


def _load_builtins() -> None:
    # Imported lazily so that importing the registry does not load torch models eagerly.
    from . import fmnist_cnn, ofa_mbv3, ofa_resnet, recorded, text_transformer  # noqa: F401

    _load_plugins_once()


_plugins_loaded = False
_plugins_loading = False  # only ever seen True by the loading thread (the lock holds others)
_plugins_lock = threading.RLock()  # re-entrant: a plugin module may itself use the registry


def _load_plugins_once() -> None:
    """User plugins (entry points, HWNAS_SUPERNET_PLUGINS) after the built-ins; a failing
    plugin raises PluginError on every use until it is fixed."""
    global _plugins_loaded, _plugins_loading
    if _plugins_loaded:
        return
    from .plugins import load_plugins

    with _plugins_lock:
        if _plugins_loaded or _plugins_loading:
            return
        _plugins_loading = True
        try:
            load_plugins()
            _plugins_loaded = True
        finally:
            _plugins_loading = False
