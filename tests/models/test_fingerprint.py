"""``Supernet.fingerprint``: what tells measurements made alike (weights, data, code)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import models.base as models_base
from core import loaded_code
from core.errors import InvalidInput
from core.settings import get_settings
from models import registry
from models.base import code_version, digest, earlier_code_versions, files_digest
from models.registry import get_supernet
from models.text_transformer import TextTransformerSupernet
from store import job_keys

from .fifo import raised_without_waiting

NAME = "test-no-inputs"


class NoInputs(TextTransformerSupernet):
    """A plugin that takes a weights file and data but gives no ``quality_inputs``."""

    name = NAME

    def quality_inputs(self) -> Sequence[Any]:
        return ()


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """NoInputs registered, its weights file configured (returned) and data roots set."""
    path = tmp_path / "weights.pt"
    torch.save(NoInputs().module.state_dict(), path)
    roots = tmp_path / "data"
    roots.mkdir()
    monkeypatch.setitem(registry._FACTORIES, NAME, NoInputs)
    monkeypatch.setenv("HWNAS_SUPERNET_CHECKPOINTS", f"{NAME}={path}")
    monkeypatch.setenv("HWNAS_DATA_ROOTS", str(roots))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()
    registry._INSTANCES.pop(NAME, None)
    for key in [key for key in registry._DATA_INSTANCES if key[0] == NAME]:
        del registry._DATA_INSTANCES[key]


def _rewrite(path: Path, shift: float) -> None:
    """Other weights in ``path``, its modification time moved on (apart within a tick)."""
    state = torch.load(path, weights_only=True)
    torch.save({k: v + shift if v.is_floating_point() else v for k, v in state.items()}, path)
    later = time.time_ns() + 2_000_000_000
    os.utime(path, ns=(later, later))


def test_a_plugin_without_quality_inputs_is_told_by_its_weights_file(plugin: Path) -> None:
    """Its fingerprint was None: a replaced checkpoint went unnoticed, and an export of an
    earlier job carried the old weights' metrics (audit 29: 0.996 on the card, 0.23 measured)."""
    first = get_supernet(NAME).fingerprint()
    assert first is not None
    _rewrite(plugin, 0.5)
    second = get_supernet(NAME).fingerprint()
    assert second not in (None, first)
    shutil.copy(plugin, plugin.with_name("copy.pt"))  # the same content, named otherwise
    registry._INSTANCES.pop(NAME)
    os.environ["HWNAS_SUPERNET_CHECKPOINTS"] = f"{NAME}={plugin.with_name('copy.pt')}"
    get_settings.cache_clear()
    assert get_supernet(NAME).fingerprint() == second


def test_and_by_its_validation_data_by_content(plugin: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    tokens = np.ones((4, 8), np.int64)
    np.savez(data / "v.npz", inputs=tokens, labels=np.arange(4) % 2)
    shutil.copy(data / "v.npz", data / "same.npz")
    np.savez(data / "other.npz", inputs=tokens, labels=np.arange(4) % 2 * 0)
    own = get_supernet(NAME).fingerprint()
    on_v = get_supernet(NAME, validation_data="v.npz").fingerprint()
    assert on_v not in (None, own)
    assert get_supernet(NAME, validation_data="./same.npz").fingerprint() == on_v
    assert get_supernet(NAME, validation_data="other.npz").fingerprint() not in (None, on_v)


_PLUGIN_SOURCE = """
from models.text_transformer import TextTransformerSupernet


class Edited(TextTransformerSupernet):
    name = "test-edited"
{body}
"""


def _load(
    monkeypatch: pytest.MonkeyPatch, folder: Path, module: str, body: str
) -> type[TextTransformerSupernet]:
    """The class ``Edited`` of a plugin module written with ``body`` in ``folder``,
    imported as ``module`` (in ``sys.modules`` for the test, as a plugin's stays)."""
    path = folder / f"{module}.py"
    path.write_text(_PLUGIN_SOURCE.format(body=body))
    spec = importlib.util.spec_from_file_location(module, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module, loaded)
    spec.loader.exec_module(loaded)
    cls: type[TextTransformerSupernet] = loaded.Edited
    return cls


def test_a_plugin_is_told_by_its_source_unless_it_sets_a_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fixed bug in a plugin's evaluate left the buggy accuracies to the next job's warm
    start (audit 29: 0.274 copied, 0.998 measured)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = _load(monkeypatch, tmp_path / "a", "plugin_a", "    pass")
    after = _load(monkeypatch, tmp_path / "b", "plugin_b", "    pass  # the preprocessing fixed")
    same = _load(monkeypatch, tmp_path / "b", "plugin_c", "    pass")  # same text, other file
    assert before().code_fingerprint() not in (None, after().code_fingerprint())
    assert before().code_fingerprint() == same().code_fingerprint()
    # the weights' and data's fingerprint is what it was (review 29: folding the code into
    # it made every job a plugin stored before unexportable)
    assert before().fingerprint() == after().fingerprint() == digest(before().quality_inputs())
    versioned = [
        _load(monkeypatch, tmp_path / "a", "plugin_d", '    version = "2"'),
        _load(monkeypatch, tmp_path / "b", "plugin_e", '    version = "2"  # no new version'),
    ]
    assert code_version(versioned[0]) == code_version(versioned[1]) == "version 2"
    assert versioned[0]().code_fingerprint() == versioned[1]().code_fingerprint()
    # a method or a property named version: its text names a memory address, new in each
    # process (review 29); passed over for the source
    for body in ("    def version(self):\n        return 3", "    version = property(lambda s: 3)"):
        odd = _load(monkeypatch, tmp_path / "a", "plugin_f", body)
        assert (code_version(odd) or "").startswith("source ")


def test_hwnas_s_own_supernets_are_told_by_their_quality_inputs_alone() -> None:
    """Their fingerprints are those stored before: the jobs stored keep being reused."""
    supernet = TextTransformerSupernet()
    assert code_version(TextTransformerSupernet) is None and supernet.code_fingerprint() is None
    assert supernet.fingerprint() == digest(supernet.quality_inputs())


def test_a_data_folder_is_hashed_through_its_links(tmp_path: Path) -> None:
    """rglob did not follow a class folder linked in from elsewhere: the folder hashed as an
    empty one, whatever its images (review 29)."""
    (tmp_path / "real" / "cat").mkdir(parents=True)
    (tmp_path / "real" / "cat" / "1.png").write_bytes(b"a")
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "cat").symlink_to(tmp_path / "real" / "cat")
    (tmp_path / "val" / "cat" / "loop").symlink_to(tmp_path / "val")  # a link back up: once
    (tmp_path / "empty").mkdir()
    first = files_digest([tmp_path / "val"])
    assert first != files_digest([tmp_path / "empty"])
    (tmp_path / "real" / "cat" / "1.png").write_bytes(b"b")
    assert files_digest([tmp_path / "val"]) != first
    second = files_digest([tmp_path / "val"])
    (tmp_path / "val" / "dog").symlink_to(tmp_path / "real" / "cat")  # one folder linked twice
    assert files_digest([tmp_path / "val"]) != second  # both taken (review 29b)


def test_the_code_is_read_once_per_class_as_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read at each build, a file edited before the restart gave the old code's jobs the
    new code's fingerprint (review 29b)."""
    loaded = _load(monkeypatch, tmp_path, "plugin_g", "    pass")
    first = code_version(loaded)
    (tmp_path / "plugin_g.py").write_text("# edited, not loaded yet\n")
    assert code_version(loaded) == first and loaded().code_fingerprint() == first


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[list[Path]]:
    """The files each call of ``files_digest`` hashes, in order."""
    calls: list[list[Path]] = []
    real = files_digest

    def recording(paths: Sequence[Path]) -> str | None:
        calls.append(list(paths))
        return real(paths)

    monkeypatch.setattr("models.base.files_digest", recording)
    return calls


def test_the_code_hashed_is_the_plugin_package_s_not_a_library_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashed: list[list[Path]]
) -> None:
    """A base from torch (``nn.Module``) was hashed: an upgrade of torch refused every
    export of the plugin (review 29b); a mixin of the plugin's own package is its code."""
    package = tmp_path / "pkgx"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mixins.py").write_text("class Evaluating:\n    pass\n")
    (package / "net.py").write_text(
        "import torch\n"
        "from models.text_transformer import TextTransformerSupernet\n"
        "from pkgx.mixins import Evaluating\n\n\n"
        "class Net(Evaluating, TextTransformerSupernet, torch.nn.Module):\n"
        '    name = "test-pkgx"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    net = importlib.import_module("pkgx.net")
    try:
        code_version(net.Net)
    finally:
        for name in ("pkgx", "pkgx.net", "pkgx.mixins"):
            sys.modules.pop(name, None)
    net_and_mixin = [(package / "net.py").resolve(), (package / "mixins.py").resolve()]
    # then its package's other modules; and how hwnas hashed it before (session 30)
    assert hashed == [[*net_and_mixin, (package / "__init__.py").resolve()], net_and_mixin]


def _import_fresh(monkeypatch: pytest.MonkeyPatch, folder: Path, name: str) -> Any:
    """Module ``name`` from ``folder``, imported afresh: the modules of ``_FRESH`` that an
    earlier call imported are forgotten first (``fresh`` forgets them after the test)."""
    monkeypatch.syspath_prepend(str(folder))
    _forget_fresh()
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _forget_fresh() -> None:
    for loaded in [key for key in sys.modules if key.partition(".")[0] in _FRESH]:
        del sys.modules[loaded]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The modules the test imports with ``_import_fresh``, and the source digests their
    registration remembers, forgotten after it."""
    monkeypatch.setattr(loaded_code, "_AS_LOADED", {})
    yield
    _forget_fresh()


#: The top-level names of the plugins ``_import_fresh`` imports.
_FRESH = ("pkgl", "solo_net", "solo_layers", "pkgv_base", "pkgv_sub", "solo_vbase", "solo_vsub")
_NET_USING_LAYERS = (
    "from models.text_transformer import TextTransformerSupernet\n"
    "from {layers} import Block\n\n\n"
    "class Net(TextTransformerSupernet):\n"
    '    name = "test-layers"\n'
    "    block = Block\n"
)


def test_a_plugin_s_other_modules_are_its_code_as_it_loaded_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: None
) -> None:
    """A plugin whose layers live in a module of their own (not a base of its supernet
    class): an edit of their forward went unnoticed, its jobs' accuracies mixed (session
    30). The fingerprint before session 30 is given as the same code's, so that jobs it
    recorded stay exportable."""
    fingerprints = []
    for n, forward in enumerate(("return x", "return x * 2")):
        package = tmp_path / str(n) / "pkgl"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "layers.py").write_text(
            f"class Block:\n    def forward(self, x):\n        {forward}\n"
        )
        (package / "net.py").write_text(_NET_USING_LAYERS.format(layers="pkgl.layers"))
        net = _import_fresh(monkeypatch, tmp_path / str(n), "pkgl.net").Net
        fingerprints.append((code_version(net), earlier_code_versions(net)))
    (first, [first_earlier]), (second, [second_earlier]) = fingerprints
    assert first != second  # the layers' edit is seen
    assert first_earlier == second_earlier != first  # before: only net.py was hashed
    assert (
        job_keys.measuring_change(
            {job_keys.MEASURED_WITH: None, job_keys.MEASURED_CODE: first_earlier},
            None,
            (second, second_earlier),
        )
        is None
    )
    assert (
        job_keys.measuring_change(
            {job_keys.MEASURED_WITH: None, job_keys.MEASURED_CODE: first},
            None,
            (second, second_earlier),
        )
        == "code"
    )
    assert loaded_code.as_loaded()["pkgl.layers"]  # remembered for the child processes


def test_a_version_set_in_another_package_does_not_cover_a_subclass_s_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: None
) -> None:
    """Plugin audit 32: a subclass in a package of its own inherited its base's
    ``version``; an edit of its metric went unseen and the next job's front mixed the old
    values (0.82) with the new (0.41). Its base's version covers the base's package alone;
    a job that recorded the version alone is still exported and resumed, not reused."""
    (tmp_path / "pkgv_base").mkdir()
    (tmp_path / "pkgv_base" / "__init__.py").write_text("")
    (tmp_path / "pkgv_base" / "net.py").write_text(
        "from models.text_transformer import TextTransformerSupernet\n\n\n"
        "class Base(TextTransformerSupernet):\n"
        '    name = "test-versioned-base"\n'
        '    version = "2"\n'
    )
    fingerprints = []
    for n, factor in enumerate(("1.0", "0.5")):
        package = tmp_path / str(n) / "pkgv_sub"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "net.py").write_text(
            "from pkgv_base.net import Base\n\n\n"
            "class Sub(Base):\n"
            '    name = "test-versioned-sub"\n'
            f"    factor = {factor}\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        sub = _import_fresh(monkeypatch, tmp_path / str(n), "pkgv_sub.net").Sub
        base = importlib.import_module("pkgv_base.net").Base
        fingerprints.append((code_version(sub), earlier_code_versions(sub)))
        assert (code_version(base), earlier_code_versions(base)) == ("version 2", ())
    (first, first_earlier), (second, second_earlier) = fingerprints
    assert first != second and first.startswith("version 2, source ")
    assert first_earlier == second_earlier == ("version 2",)  # what an earlier hwnas gave

    # a plugin that sets its own version over another package's class: its version covers
    # its package, edits of its helpers included (review 32a: they changed it)
    own = []
    for n, helper in enumerate(("X = 1", "X = 2")):
        package = tmp_path / f"own{n}" / "pkgv_sub"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "helpers.py").write_text(helper + "\n")
        (package / "net.py").write_text(
            "from pkgv_base.net import Base\n\n\n"
            "class Sub(Base):\n"
            '    name = "test-versioned-own"\n'
            '    version = "5"\n'
        )
        sub = _import_fresh(monkeypatch, tmp_path / f"own{n}", "pkgv_sub.net").Sub
        own.append((code_version(sub), earlier_code_versions(sub)))
    assert own == [("version 5", ())] * 2

    # a single module deriving from a versioned module beside it is a plugin of its own:
    # its edits are seen (review 32c: taken as one plugin, they were not)
    singles = []
    for n, (factor, base_edit) in enumerate((("1.0", ""), ("0.5", ""), ("0.5", "  # fixed"))):
        folder = tmp_path / f"single{n}"
        folder.mkdir()
        (folder / "solo_vbase.py").write_text(
            "from models.text_transformer import TextTransformerSupernet\n\n\n"
            "class Base(TextTransformerSupernet):\n"
            '    name = "test-solo-base"\n'
            f'    version = "7"{base_edit}\n'
        )
        (folder / "solo_vsub.py").write_text(
            "from solo_vbase import Base\n\n\n"
            f'class Sub(Base):\n    name = "test-solo-sub"\n    factor = {factor}\n'
        )
        singles.append(code_version(_import_fresh(monkeypatch, folder, "solo_vsub").Sub))
    assert singles[0] != singles[1] and singles[0].startswith("version 7, source ")
    assert singles[1] == singles[2]  # an edit of the base's module, its version kept: its own
    # version covers it (review 32d: it was hashed with the subclass)


def test_a_single_module_plugin_s_modules_beside_it_are_its_code_unless_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashed: list[list[Path]], fresh: None
) -> None:
    """Beside a module of its own, the modules it names are the plugin's; among installed
    libraries (site-packages), those beside it are other libraries' (an upgrade of one
    would have refused the plugin's exports)."""
    (tmp_path / "solo_layers.py").write_text("class Block:\n    pass\n")
    (tmp_path / "solo_net.py").write_text(_NET_USING_LAYERS.format(layers="solo_layers"))
    net = _import_fresh(monkeypatch, tmp_path, "solo_net").Net
    code_version(net)
    solo_net, solo_layers = (
        (tmp_path / "solo_net.py").resolve(),
        (tmp_path / "solo_layers.py").resolve(),
    )
    assert hashed == [[solo_net, solo_layers], [solo_net]]
    hashed.clear()
    monkeypatch.setattr("models.base._library_folders", lambda: {tmp_path.resolve()})
    installed = _import_fresh(monkeypatch, tmp_path, "solo_net").Net
    assert code_version(installed) == earlier_code_versions(net)[0]  # net.py's alone
    assert earlier_code_versions(installed) == () and hashed == [[solo_net]]


def test_a_data_folder_s_hash_is_linear_in_its_folders_and_skips_hidden_ones(
    tmp_path: Path,
) -> None:
    """Sixteen levels of two links each to one folder took 76 s (65,536 paths); an
    unreadable hidden folder (a ``.Trash``) failed the hash where the loader skips it
    (review 29c)."""
    below = tmp_path / "level16"
    below.mkdir()
    (below / "x.png").write_bytes(b"x")
    for level in range(15, -1, -1):
        folder = tmp_path / f"level{level}"
        folder.mkdir()
        for name in ("a", "b"):
            (folder / name).symlink_to(below)
        below = folder
    started = time.monotonic()
    first = files_digest([below])
    assert time.monotonic() - started < 2.0
    (below / ".Trash-1000").mkdir()
    (below / ".Trash-1000" / "deleted.png").write_bytes(b"y")
    assert files_digest([below]) == first  # hidden: not the data's
    (tmp_path / "level16" / "x.png").write_bytes(b"z")
    assert files_digest([below]) != first


def test_a_single_module_plugin_s_mixin_beside_it_is_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashed: list[list[Path]]
) -> None:
    """Two top-level modules side by side: the mixin's edit went unnoticed (review 29c)."""
    (tmp_path / "sib_mixin.py").write_text("class Evaluating:\n    pass\n")
    (tmp_path / "sib_net.py").write_text(
        "from models.text_transformer import TextTransformerSupernet\n"
        "from sib_mixin import Evaluating\n\n\n"
        "class Net(Evaluating, TextTransformerSupernet):\n"
        '    name = "test-sib"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        code_version(importlib.import_module("sib_net").Net)
    finally:
        for name in ("sib_net", "sib_mixin"):
            sys.modules.pop(name, None)
    assert hashed == [[(tmp_path / "sib_net.py").resolve(), (tmp_path / "sib_mixin.py").resolve()]]


def test_a_package_plugin_s_code_is_its_files_whatever_was_imported_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The modules of the package loaded at registration were hashed: naming another plugin
    of the package first changed the fingerprint, no file changed (review 30); a module's
    file gone since its import failed every supernet's registration (review 30)."""
    package = tmp_path / "pkgl"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text("class Block:\n    pass\n")
    (package / "other.py").write_text("X = 1\n")  # another plugin's module, or a helper
    (package / "net.py").write_text(_NET_USING_LAYERS.format(layers="pkgl.layers"))
    alone = code_version(_import_fresh(monkeypatch, tmp_path, "pkgl.net").Net)
    _import_fresh(monkeypatch, tmp_path, "pkgl.other")
    after_other = code_version(importlib.import_module("pkgl.net").Net)
    assert alone == after_other
    assert set(loaded_code.as_loaded()) >= {"pkgl", "pkgl.layers", "pkgl.other", "pkgl.net"}
    (tmp_path / "elsewhere").mkdir()  # a sub-package linked in: its files are the plugin's
    (tmp_path / "elsewhere" / "__init__.py").write_text("")
    (tmp_path / "elsewhere" / "blocks.py").write_text("Y = 1\n")
    (package / "linked").symlink_to(tmp_path / "elsewhere")
    with_link = code_version(_import_fresh(monkeypatch, tmp_path, "pkgl.net").Net)
    assert "pkgl.linked.blocks" in loaded_code.as_loaded() and with_link != alone
    (tmp_path / "elsewhere" / "blocks.py").write_text("Y = 2\n")
    assert code_version(_import_fresh(monkeypatch, tmp_path, "pkgl.net").Net) != with_link
    (tmp_path / "solo_layers.py").write_text("class Block:\n    pass\n")
    (tmp_path / "solo_net.py").write_text(_NET_USING_LAYERS.format(layers="solo_layers"))
    solo = _import_fresh(monkeypatch, tmp_path, "solo_net").Net
    (tmp_path / "solo_layers.py").unlink()  # imported, then gone (a generated module)
    with caplog.at_level("WARNING", logger="models.base"):
        assert code_version(solo) is not None  # it failed every supernet's registration
    assert "solo_layers.py cannot be read: its code fingerprint leaves it out" in caplog.text


def test_only_hwnas_s_own_packages_are_its_code(tmp_path: Path) -> None:
    """Every folder with an __init__.py beside models/ was taken for hwnas's own: a plugin
    package put in the checkout (a Docker image's /app/myplug) was hashed as nothing."""
    checkout = Path(models_base.__file__).resolve().parent.parent
    assert models_base._is_own(checkout / "models" / "base.py")
    assert not models_base._is_own(checkout / "myplug" / "net.py")


def test_a_fifo_among_the_files_hashed_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Review 31: a plugin's data fingerprint (its files, where it gives no
    ``quality_inputs``) opened a FIFO and waited for a writer for ever."""
    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    refused = raised_without_waiting(fifo, lambda: files_digest([fifo]))
    assert isinstance(refused, InvalidInput) and "not a regular file" in str(refused), refused
