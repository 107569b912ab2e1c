"""User supernet plugins: entry points and HWNAS_SUPERNET_PLUGINS, with the docs' example."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from core.errors import PluginError
from core.settings import get_settings
from models import plugins, registry
from models.export import export_subnet
from models.registry import create_supernet, list_supernets

DOC = Path(__file__).parents[2] / "docs" / "plugins.md"


def example_source() -> str:
    """The plugin module of docs/plugins.md's worked example, verbatim."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return next(block for block in blocks if "class TinyMLP(Supernet)" in block)


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private copy of the registry (built-ins loaded), plugins not yet loaded."""
    list_supernets()
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "_INSTANCES", {})
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(plugins, "_ORIGINS", {})
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def write_package(root: Path, source: str) -> str:
    """A package with one module holding ``source``, under a unique name; returns the name."""
    package = f"hwnas_plugin_{uuid.uuid4().hex[:8]}"
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "tiny_mlp.py").write_text(source)
    return package


def write_dist_info(site: Path, package: str, entry: str) -> None:
    """What an installed distribution leaves behind, as importlib.metadata reads it."""
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hwnas.supernets]\n{entry}\n")


def installed_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_name: str = "tiny-mlp"
) -> str:
    """The worked example as an installed distribution whose entry point ``entry_name``
    names its class, importable for this test; returns the package's name."""
    site = tmp_path / "site"
    package = write_package(site, example_source())
    write_dist_info(site, package, f"{entry_name} = {package}.tiny_mlp:TinyMLP")
    monkeypatch.syspath_prepend(str(site))
    return package


def round_trip(name: str, tmp_path: Path) -> None:
    """Create, sample, extract, evaluate and export without a job."""
    net = create_supernet(name, seed=0)
    rng = random.Random(0)
    arch = net.canonical({gene: rng.choice(c) for gene, c in net.space().items()})
    assert net.decode(net.encode(arch)) == arch
    module = net.extract(arch)
    accuracy = net.evaluate(arch, module)["accuracy"]
    assert 0.0 <= accuracy <= 1.0
    assert sum(p.numel() for p in module.parameters()) == net.complexity(arch).params
    path = export_subnet(net, arch, "onnx", tmp_path / "plugin.onnx")
    x = net.example_input(arch, 3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module(x).numpy()
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - expected).max() <= 1e-5


def test_entry_point_plugin_is_listed_and_round_trips(
    fresh_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed_example(tmp_path, monkeypatch)
    assert "tiny-mlp" in list_supernets()
    round_trip("tiny-mlp", tmp_path)
    assert plugins.load_plugins() == []  # idempotent: already registered from that origin


def test_setting_names_an_importable_class(
    fresh_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = write_package(tmp_path / "src", example_source())
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setenv("HWNAS_SUPERNET_PLUGINS", f" {package}.tiny_mlp:TinyMLP ")
    get_settings.cache_clear()
    assert "tiny-mlp" in list_supernets()
    round_trip("tiny-mlp", tmp_path)


def test_pip_installed_plugin_package(
    fresh_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real install of a plugin package, into a private --target directory."""
    project = tmp_path / "project"
    package = write_package(project, example_source())
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{package}"\nversion = "0.1"\n'
        '[project.entry-points."hwnas.supernets"]\n'
        f'tiny-mlp = "{package}.tiny_mlp:TinyMLP"\n'
        f'[tool.setuptools]\npackages = ["{package}"]\n'
    )
    site = tmp_path / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    command += ["--no-build-isolation", "--target", str(site), str(project)]
    subprocess.run(command, check=True, capture_output=True, timeout=240)
    monkeypatch.syspath_prepend(str(site))
    assert "tiny-mlp" in list_supernets()
    round_trip("tiny-mlp", tmp_path)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("hwnas_no_such_module_x:Net", "cannot import.*ModuleNotFoundError"),
        ("models.base:NoSuchClass", "cannot import.*AttributeError"),
        ("collections:OrderedDict", "not a subclass of models.base.Supernet"),
        ("models.base:Supernet", "does not implement.*canonical"),
        ("models.base", "expected 'package.module:ClassName'"),
        ("models.fmnist_cnn:FmnistOFACNN", "'fmnist-ofa-cnn' is already registered by hwnas"),
    ],
)
def test_bad_plugins_raise_a_plugin_error_naming_them(
    fresh_registry: None, spec: str, reason: str
) -> None:
    with pytest.raises(PluginError, match=reason) as caught:
        plugins.load_plugins(specs=[spec])
    assert spec in str(caught.value)


def test_two_plugins_cannot_share_a_name(
    fresh_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_package(tmp_path, example_source())
    second = write_package(tmp_path, example_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    specs = [f"{first}.tiny_mlp:TinyMLP", f"{second}.tiny_mlp:TinyMLP"]
    with pytest.raises(PluginError, match=rf"already registered by plugin '{first}"):
        plugins.load_plugins(specs=specs)


def test_one_class_named_by_an_entry_point_and_the_setting_is_registered_once(
    fresh_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As while moving a plugin from the setting to a package: it stopped the server."""
    package = installed_example(tmp_path, monkeypatch)
    spec = f"{package}.tiny_mlp:TinyMLP"
    monkeypatch.setenv("HWNAS_SUPERNET_PLUGINS", f"{spec},{spec}")
    get_settings.cache_clear()
    assert "tiny-mlp" in list_supernets()
    assert plugins.load_plugins() == []


def test_entry_point_name_must_be_the_supernet_name(
    fresh_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed_example(tmp_path, monkeypatch, entry_name="other-name")
    with pytest.raises(PluginError, match="hwnas.supernets:other-name.*'tiny-mlp'"):
        list_supernets()
    with pytest.raises(PluginError):  # still refused on the next use, not half-loaded
        list_supernets()


def test_concurrent_first_uses_all_see_the_plugin(
    fresh_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed_example(tmp_path, monkeypatch)
    with ThreadPoolExecutor(4) as pool:
        listings = list(pool.map(lambda _: list_supernets(), range(8)))
    assert all("tiny-mlp" in names for names in listings)


def test_a_plugin_that_lets_load_state_dict_fail_is_answered_with_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Loads:
        def __init__(self) -> None:
            torch.nn.Linear(3, 4).load_state_dict({"weight": torch.zeros(5, 3)}, strict=False)

    monkeypatch.setitem(registry._FACTORIES, "test-loads", Loads)
    with pytest.raises(
        ValueError, match=r"could not be built: RuntimeError: .* size mismatch for weight"
    ):
        registry.create_supernet("test-loads")
