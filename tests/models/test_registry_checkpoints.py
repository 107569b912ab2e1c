"""HWNAS_SUPERNET_CHECKPOINTS: the service's supernet instances load the operator's weights."""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from core.errors import CheckpointMismatch, InvalidInput
from core.settings import get_settings
from models import registry
from models.base import Supernet
from models.registry import configured_weights, create_supernet, get_supernet
from models.text_transformer import TextTransformerSupernet

NAME = "text-transformer-synth"


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    def set_checkpoints(value: str) -> None:
        monkeypatch.setenv("HWNAS_SUPERNET_CHECKPOINTS", value)
        get_settings.cache_clear()
        registry._INSTANCES.pop(NAME, None)

    yield set_checkpoints
    monkeypatch.delenv("HWNAS_SUPERNET_CHECKPOINTS", raising=False)
    get_settings.cache_clear()
    registry._INSTANCES.pop(NAME, None)


def test_the_shared_instance_loads_the_configured_file(configure, tmp_path: Path) -> None:
    trained = create_supernet(NAME).module.state_dict()
    trained = {k: v + 0.25 if v.is_floating_point() else v for k, v in trained.items()}
    path = tmp_path / "trained.pt"
    torch.save(trained, path)
    configure(f"fmnist-ofa-cnn=/elsewhere.pt, {NAME}={path}")
    assert configured_weights(NAME) == {"weights": str(path)}
    loaded = get_supernet(NAME).module.state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_a_checkpoint_replaced_while_the_service_runs_is_loaded_again(
    configure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared instance kept the first file's weights for the process's life, while
    instances for user data were made with the new file: one server measured with both,
    and jobs without data reused what the old weights had measured (plugin probe,
    session 20). Now both kinds are made again, and their fingerprint changes."""
    import numpy as np

    base = create_supernet(NAME).module.state_dict()
    path = tmp_path / "trained.pt"

    def save(shift: float, when: int) -> None:
        torch.save({k: v + shift if v.is_floating_point() else v for k, v in base.items()}, path)
        os.utime(path, ns=(when, when))  # apart even within one tick of the file system clock

    now = time.time_ns() - 60_000_000_000
    save(0.25, now)
    configure(f"{NAME}={path}")
    roots = tmp_path / "data"
    roots.mkdir()
    tokens = np.ones((4, 8), np.int64)
    np.savez(roots / "v.npz", inputs=tokens, labels=np.arange(4) % 2)
    monkeypatch.setenv("HWNAS_DATA_ROOTS", str(roots))
    get_settings.cache_clear()
    first, first_on_data = get_supernet(NAME), get_supernet(NAME, validation_data="v.npz")
    assert get_supernet(NAME) is first  # unchanged: not loaded again
    save(0.5, now + 1_000_000_000)
    second, second_on_data = get_supernet(NAME), get_supernet(NAME, validation_data="v.npz")
    assert second is not first and second_on_data is not first_on_data
    weight = next(k for k, v in base.items() if v.is_floating_point())
    assert torch.equal(second.module.state_dict()[weight], base[weight] + 0.5)
    assert torch.equal(second_on_data.module.state_dict()[weight], base[weight] + 0.5)
    assert second.fingerprint() != first.fingerprint()


def test_a_bad_file_or_a_supernet_without_weights_is_refused(configure, tmp_path: Path) -> None:
    path = tmp_path / "wrong.pt"
    torch.save({"embedding.weight": torch.zeros(3, 3)}, path)
    configure(f"{NAME}={path}")
    with pytest.raises(CheckpointMismatch):
        get_supernet(NAME)
    configure("nb201-cifar10=/some/file.pt")
    with pytest.raises(InvalidInput, match="takes no weights file") as refused:
        configured_weights("nb201-cifar10")
    assert "takes none of the keywords checkpoint, weights" in str(refused.value)  # audit 29


@pytest.mark.parametrize("supernet", ["ofa_mbv3_d234_e346_k357_w1.0", "ofa_resnet50"])
def test_a_class_that_hands_keywords_to_its_base_takes_the_file(configure, supernet: str) -> None:
    """MobileNetV3 names only ``width_mult`` and passes ``**kwargs`` to the OFA base class,
    whose ``checkpoint`` is the keyword (only the keyword is checked: no file is read)."""
    configure(f"{supernet}=/ckpt/ofa.pth")
    assert configured_weights(supernet) == {"checkpoint": "/ckpt/ofa.pth"}


def test_init_keywords_follow_kwargs_up_the_hierarchy_and_stop_without_them() -> None:
    class Base:
        def __init__(self, *, checkpoint: str = "", seed: int = 0) -> None: ...

    class Passes(Base):
        def __init__(self, size: int = 1, *args: int, **kwargs: object) -> None:
            super().__init__(**kwargs)

    class Inherits(Passes): ...

    class Stops(Base):
        def __init__(self, *, size: int = 1) -> None:
            super().__init__()

    assert registry.init_keywords(Inherits) == {"size", "checkpoint", "seed"}
    assert registry.init_keywords(Stops) == {"size"}


def test_the_built_in_cnn_names_the_first_mismatching_key(tmp_path: Path) -> None:
    """HWNAS_SUPERNET_CHECKPOINTS gives a str: its message once failed on ``path.name``."""
    path = tmp_path / "other.pt"
    torch.save(create_supernet(NAME).module.state_dict(), path)
    with pytest.raises(CheckpointMismatch, match=r"^other\.pt: missing key '.+' \(expected shape"):
        create_supernet("fmnist-ofa-cnn", weights=str(path))


class Broken(TextTransformerSupernet):
    """A plugin whose constructor fails as plain Python code does with a bad weights file."""

    name = "test-broken-weights"
    built = 0

    def __init__(self, *, weights: str | None = None, **kwargs: object) -> None:
        type(self).built += 1
        if weights is not None:
            raise RuntimeError(f"Error(s) in loading state_dict from {weights}\nsize mismatch")
        super().__init__(**kwargs)  # type: ignore[arg-type]


class LoadsItsWeights(TextTransformerSupernet):
    """A plugin that loads its weights file with torch.load(weights_only=True) itself."""

    name = "test-loads-its-weights"

    def __init__(self, *, weights: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if weights is not None:
            self.module.load_state_dict(torch.load(weights, weights_only=True))


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"garbage\n", "not a file torch.save wrote, or a damaged one (Unsupported operand"),
        (None, "it holds Python objects besides tensors (Unsupported global: GLOBAL "),
    ],
)
def test_a_weights_file_torch_refuses_is_said_without_torch_s_unsafe_advice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes | None, said: str
) -> None:
    """Plugin audit 32 L5: a damaged file gave torch's first line, which advises loading
    with weights_only=False (running the file's code), and not what was wrong."""
    path = tmp_path / "w.pt"
    if content is None:
        torch.save({"x": torch.zeros(1), "o": argparse.Namespace(a=1)}, path)
    else:
        path.write_bytes(content)
    monkeypatch.setitem(registry._FACTORIES, LoadsItsWeights.name, LoadsItsWeights)
    with pytest.raises(InvalidInput) as caught:
        create_supernet(LoadsItsWeights.name, weights=str(path))
    text = str(caught.value)
    assert text.startswith(
        f"supernet {LoadsItsWeights.name!r} could not be built: UnpicklingError: {said}"
    ), text
    assert "weights_only` set to `False" not in text


def test_a_plugin_that_fails_to_build_is_an_input_error_kept_until_its_file_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not a 500 in the catalog and the submissions: ``InvalidInput`` on ``supernet`` with
    the error's type and first line; asked again, the same error without reading the file
    again, until the file changed on disk."""
    monkeypatch.setitem(registry._FACTORIES, Broken.name, Broken)
    monkeypatch.setattr(registry, "_FAILED", {})
    monkeypatch.setattr(Broken, "built", 0)
    path = tmp_path / "w.pt"
    path.write_bytes(b"first")
    monkeypatch.setenv("HWNAS_SUPERNET_CHECKPOINTS", f"{Broken.name}={path}")
    get_settings.cache_clear()
    try:
        for _ in range(3):
            with pytest.raises(InvalidInput) as caught:
                get_supernet(Broken.name)
            assert caught.value.field == "supernet"
            assert str(caught.value) == (
                f"supernet {Broken.name!r} could not be built: RuntimeError: "
                f"Error(s) in loading state_dict from {path}"
            )
        assert Broken.built == 1
        # kept as text: the error's traceback would keep what the build had loaded alive
        assert not any(isinstance(part, BaseException) for part in registry._FAILED[Broken.name])
        later = time.monotonic() + registry.FAILED_RETRY_S + 1
        monkeypatch.setattr(registry, "_monotonic", lambda: later)
        for _ in range(2):
            with pytest.raises(InvalidInput, match="could not be built"):
                get_supernet(Broken.name)  # kept no longer: built again, by one caller only
        assert Broken.built == 2
        path.write_bytes(b"second, longer")
        with pytest.raises(InvalidInput, match="could not be built"):
            get_supernet(Broken.name)
        assert Broken.built == 3
        monkeypatch.delenv("HWNAS_SUPERNET_CHECKPOINTS")
        get_settings.cache_clear()
        assert isinstance(get_supernet(Broken.name), Broken)  # configured without: built
        assert Broken.built == 4 and Broken.name not in registry._FAILED
    finally:
        get_settings.cache_clear()
        registry._INSTANCES.pop(Broken.name, None)


def test_a_system_error_names_its_file_without_the_folders() -> None:
    """The catalog and a 422 show the text to API clients; a descriptor is no name."""
    assert registry._reason(FileNotFoundError(2, "No such file or directory", "/srv/w/a.pt")) == (
        "FileNotFoundError: No such file or directory: a.pt"
    )
    assert registry._reason(OSError(9, "Bad file descriptor", 7)) == (
        "OSError: Bad file descriptor"
    )


class Slow(TextTransformerSupernet):
    """A plugin whose weights take a while to load."""

    name = "test-slow-weights"
    built = 0

    def __init__(self, **kwargs: object) -> None:
        type(self).built += 1
        time.sleep(0.3)  # long enough for every caller to ask meanwhile
        super().__init__(**kwargs)  # type: ignore[arg-type]


def test_callers_asking_together_for_a_supernet_build_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests that first ask for a supernet together (a server's start: the catalog and
    submissions) each loaded its weights; now one builds it and the others take it."""
    monkeypatch.setitem(registry._FACTORIES, Slow.name, Slow)
    monkeypatch.setattr(Slow, "built", 0)
    barrier = threading.Barrier(4)

    def ask() -> Supernet:
        barrier.wait()
        return get_supernet(Slow.name)

    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: ask(), range(4)))
        assert Slow.built == 1 and all(instance is got[0] for instance in got)
    finally:
        registry._INSTANCES.pop(Slow.name, None)


class AsksForItself(TextTransformerSupernet):
    """A plugin whose constructor asks the registry for its own supernet."""

    name = "test-asks-for-itself"

    def __init__(self, **kwargs: object) -> None:
        get_supernet(self.name)
        super().__init__(**kwargs)  # type: ignore[arg-type]


def test_a_supernet_asking_for_itself_while_built_fails_and_does_not_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The build's lock is re-entrant: the call fails as it did before the lock (review 26c
    M1: a plain lock hung it, and every later caller of the name with it)."""
    monkeypatch.setitem(registry._FACTORIES, AsksForItself.name, AsksForItself)
    monkeypatch.setattr(registry, "_FAILED", {})
    outcome: list[BaseException | Supernet] = []

    def ask() -> None:
        try:
            outcome.append(get_supernet(AsksForItself.name))
        except BaseException as exc:  # what the caller gets
            outcome.append(exc)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "get_supernet hung"
    assert isinstance(outcome[0], InvalidInput), outcome  # "could not be built: RecursionError"
    registry._INSTANCES.pop(AsksForItself.name, None)
