"""models.export: exports from several threads at once (the API serves downloads from a
thread pool) each write a whole, loadable file."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch

from models.export import export_subnet
from models.registry import get_supernet


def test_exports_from_many_threads_at_once_all_succeed(tmp_path: Path) -> None:
    supernet = get_supernet("fmnist-ofa-cnn")
    rng = random.Random(0)
    space = supernet.space()
    archs = [
        supernet.canonical({gene: rng.choice(choices) for gene, choices in space.items()})
        for _ in range(2)
    ]
    # each format of each of two sub-networks, three times over (the same sub-network's
    # download asked for by several clients at once)
    jobs = [(fmt, arch) for arch in archs for fmt in ("onnx", "torchscript")] * 3
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []
    paths: list[Path] = []

    def export(index: int, fmt: str, arch: dict) -> None:
        start.wait()
        try:
            suffix = ".onnx" if fmt == "onnx" else ".pt"
            paths.append(export_subnet(supernet, arch, fmt, tmp_path / f"{index}{suffix}"))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [
        threading.Thread(target=export, args=(i, fmt, arch)) for i, (fmt, arch) in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(paths) == len(jobs)
    for path in paths:
        if path.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(path)))
        else:
            torch.jit.load(str(path))


def test_a_torchscript_archive_is_named_after_its_file_and_a_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its root folder was named after the temporary file ("<name>.pt.1a2b3c4d")."""
    import zipfile

    import models.export

    supernet = get_supernet("fmnist-ofa-cnn")
    arch = supernet.canonical({gene: choices[0] for gene, choices in supernet.space().items()})
    path = export_subnet(supernet, arch, "torchscript", tmp_path / "r24-small.pt")
    roots = {name.split("/")[0] for name in zipfile.ZipFile(path).namelist()}
    assert roots == {"r24-small"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r24-small.json", "r24-small.pt"]

    def broken(*_args: object) -> None:
        raise RuntimeError("exporter failed")

    monkeypatch.setitem(models.export._WRITERS, "onnx", (".onnx", broken, False))
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_subnet(supernet, arch, "onnx", tmp_path / "r24-small.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r24-small.json", "r24-small.pt"]


def test_an_export_traces_under_the_process_tracing_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The latency runners that trace take the same lock (core.tracing)."""
    import models.export
    from core.tracing import TRACING

    held: list[bool] = []

    def writer(_module: object, _example: object, path: Path, *_rest: object) -> None:
        held.append(TRACING.locked())
        path.write_bytes(b"x")

    monkeypatch.setitem(models.export._WRITERS, "onnx", (".onnx", writer, False))
    supernet = get_supernet("fmnist-ofa-cnn")
    arch = supernet.canonical({gene: choices[0] for gene, choices in supernet.space().items()})
    export_subnet(supernet, arch, "onnx", tmp_path / "a.onnx")
    assert held == [True] and not TRACING.locked()


def test_every_format_carries_its_card(tmp_path: Path) -> None:
    """The card (input shape, mean/std, preprocessing) was only beside the file on the
    server's disk and in the zip: whoever downloaded ONNX or TorchScript had no way to
    know how the measured accuracy's inputs were prepared."""
    import json
    import zipfile

    supernet = get_supernet("fmnist-ofa-cnn")
    arch = supernet.canonical({gene: choices[0] for gene, choices in supernet.space().items()})
    for fmt, name in [("onnx", "a.onnx"), ("torchscript", "a.pt"), ("state_dict", "a.zip")]:
        path = export_subnet(supernet, arch, fmt, tmp_path / name, extra={"device": "cpu-1t"})
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["device"] == "cpu-1t" and "resized to 20 x 20" in card["input"]["preprocess"]
        # and the output: nothing said what its ten numbers were (user probe, session 21)
        output = card["output"]
        assert output["shape"] == ["batch", 10] and output["onnx_name"] == "logits"
        assert output["classes"][0] == "T-shirt/top" and output["classes"][9] == "Ankle boot"
        if fmt == "onnx":
            inside = {p.key: p.value for p in onnx.load(str(path)).metadata_props}["hwnas.card"]
        elif fmt == "torchscript":
            extra = {"architecture.json": ""}
            torch.jit.load(str(path), _extra_files=extra)
            inside = extra["architecture.json"]
        else:
            inside = zipfile.ZipFile(path).read("architecture.json").decode()
        assert json.loads(inside) == card, fmt


def test_only_a_format_that_leaks_is_written_through_isolate(tmp_path: Path) -> None:
    """TorchScript's tracing leaves 11 MB a file in torch for good: a service writes it in a
    child process (``isolate``); the other formats are written here."""
    supernet = get_supernet("fmnist-ofa-cnn")
    arch = supernet.canonical({gene: choices[0] for gene, choices in supernet.space().items()})
    isolated: list[str] = []

    def isolate(function: Callable[..., None], *args: object) -> None:
        isolated.append(args[-2].name)  # the file it writes
        function(*args)

    for name in ("a.onnx", "a.pt", "a.zip"):
        fmt = {".onnx": "onnx", ".pt": "torchscript", ".zip": "state_dict"}[Path(name).suffix]
        export_subnet(supernet, arch, fmt, tmp_path / name, isolate=isolate)
    assert isolated == ["a.pt"]
    torch.jit.load(str(tmp_path / "a.pt"))
