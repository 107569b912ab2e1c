"""Export an extracted sub-network: ONNX, TorchScript, or state_dict + architecture JSON.

Each format is a registered writer; the exported file holds the same module the search
measured (``Supernet.extract`` is deterministic), so its outputs and accuracy match.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from core.errors import UnknownName
from core.tracing import TRACING

from .base import Arch, Supernet
from .user_images import image_file_stage

#: (module, example input, path, the architecture card). Each format carries the card, so
#: whoever gets the file alone knows its input and preprocessing: ONNX in its metadata
#: (``hwnas.card``), TorchScript as an extra file and the zip as a member (both
#: ``architecture.json``).
Writer = Callable[[nn.Module, torch.Tensor, Path, dict[str, Any]], None]
#: Runs a writer on its arguments: ``export_subnet``'s ``isolate``.
Isolate = Callable[..., None]
_WRITERS: dict[str, tuple[str, Writer, bool]] = {}

#: Where the card is in each file.
CARD_KEY, CARD_FILE = "hwnas.card", "architecture.json"


def register_format(name: str, suffix: str, leaks: bool = False) -> Callable[[Writer], Writer]:
    """``leaks``: the writer leaves memory in torch for the life of the process (TorchScript:
    a traced module's types and graphs stay in torch's JIT registry), so ``export_subnet``
    runs it through its ``isolate`` (a child process)."""

    def decorate(writer: Writer) -> Writer:
        _WRITERS[name] = (suffix, writer, leaks)
        return writer

    return decorate


def list_formats() -> list[str]:
    return sorted(_WRITERS)


def suffix_of(fmt: str) -> str:
    return _writer(fmt)[0]


def _writer(fmt: str) -> tuple[str, Writer, bool]:
    try:
        return _WRITERS[fmt]
    except KeyError:
        raise UnknownName("format", fmt, _WRITERS, field="format") from None


def _axis_names(spec: dict[str, Any]) -> list[str]:
    """What the ONNX file calls each axis of the input (``InputSpec`` as a dict): its
    ``axis_names``, else ``batch`` and ``dim<axis>``."""
    return list(
        spec.get("axis_names") or ["batch", *(f"dim{a}" for a in range(1, len(spec["shape"])))]
    )


@register_format("onnx", ".onnx")
def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path, card: dict) -> None:
    spec = card["input"]
    names = _axis_names(spec)
    variable = (0, *spec["variable_axes"])  # the batch, and e.g. a sequence's length
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {a: names[a] for a in variable}, "logits": {0: names[0]}},
        opset_version=17,
        dynamo=False,
    )
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = CARD_KEY, json.dumps(card)
    onnx.save(model, str(path))


@register_format("torchscript", ".pt", leaks=True)
def _write_torchscript(module: nn.Module, example: torch.Tensor, path: Path, card: dict) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(module, example)
    traced.save(str(path), _extra_files={CARD_FILE: json.dumps(card, indent=2)})


@register_format("state_dict", ".zip")
def _write_state_dict(module: nn.Module, _example: torch.Tensor, path: Path, card: dict) -> None:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("state_dict.pt", buffer.getvalue())
        archive.writestr(CARD_FILE, json.dumps(card, indent=2))


def export_subnet(
    supernet: Supernet,
    arch: Arch,
    fmt: str,
    path: Path,
    extra: dict[str, Any] | None = None,
    isolate: Isolate | None = None,
) -> Path:
    """Write ``arch`` of ``supernet`` to ``path`` in ``fmt``; returns the path written.

    The architecture card (supernet, encoding, genes, input spec with its preprocessing,
    ``extra`` such as the measured metrics) goes into the file (see ``Writer``), and beside
    it as ``<name>.json``. A format whose writer ``leaks`` is written by
    ``isolate(writer, *its arguments)`` where one is given (a long-lived service passes
    ``hardware_profiles.isolated.run_once``: 11 MB a TorchScript file otherwise stays in
    its memory for good); the others here.
    """
    _suffix, writer, leaks = _writer(fmt)
    module = supernet.extract(arch).eval()
    example = supernet.example_input(arch, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under its own name in a folder of its own, then moved: TorchScript names the
    # archive's root folder after the file (it was "<name>.pt.1a2b3c4d" inside).
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    scratch.mkdir()
    tmp = scratch / path.name
    batch = _axis_names(asdict(supernet.input_spec(supernet.canonical(arch))))[0]
    card = architecture_card(supernet, arch, extra, _output_of(supernet, module, example, batch))
    try:
        if leaks and isolate is not None:  # where the arguments cannot be sent, here
            isolate(_quiet, writer, module, example, tmp, card)
        else:
            _quiet(writer, module, example, tmp, card)
        tmp.replace(path)
    finally:  # a failed export leaves nothing behind
        shutil.rmtree(scratch, ignore_errors=True)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2))
    return path


def _quiet(writer: Writer, *args: Any) -> None:
    """``writer(*args)``: one tracer at a time (``core.tracing``), deprecations silenced."""
    with TRACING, warnings.catch_warnings():
        # torch marks TorchScript and its ONNX exporter deprecated; both are still the
        # formats deployment runtimes load, and the torch.export path needs onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        writer(*args)


def architecture_card(
    supernet: Supernet,
    arch: Arch,
    extra: dict[str, Any] | None,
    output: dict[str, Any] | None = None,
) -> dict:
    canonical = supernet.canonical(arch)
    return {
        "supernet": supernet.name,
        "subnet_id": supernet.encode(canonical),
        "arch": canonical,
        "input": _input_of(supernet, canonical),
        **({"output": output} if output else {}),
        **({"warning": warning} if (warning := supernet.quality_warning()) else {}),
        **(extra or {}),
    }


def _input_of(supernet: Supernet, arch: Arch) -> dict[str, Any]:
    """The card's ``input``: the supernet's ``input_spec``, and where it measured on a
    directory of images, how an image file became the pixels that spec starts from
    (``image_file``, and first in ``preprocess``). ``shape`` is what was measured (batch 1);
    ``file_shape`` the shape the exported file takes, each axis of any size by its name, the
    batch first (MLOps audit L3: a deployer read batch 1 as the file's), and ``onnx_name``
    the ONNX file's name for it, as the output's."""
    spec = asdict(supernet.input_spec(arch))
    names, variable = _axis_names(spec), (0, *spec["variable_axes"])
    spec["file_shape"] = [names[a] if a in variable else n for a, n in enumerate(spec["shape"])]
    spec["onnx_name"] = "input"
    image_format = supernet.image_format()
    if supernet.given_data is None or image_format is None or not supernet.given_data.is_dir():
        return spec
    stage = image_file_stage(image_format)
    spec["image_file"] = {key: value for key, value in stage.items() if key != "text"}
    spec["preprocess"] = f"{stage['text']}; then {spec['preprocess']}"
    return spec


def _output_of(
    supernet: Supernet, module: nn.Module, example: torch.Tensor, batch: str = "batch"
) -> dict[str, Any]:
    """What the file's output is: its shape (the batch first, named ``batch``, as the ONNX
    file names it), the ONNX output's name, and the class of each index where the supernet
    names them (a deployer had to find the label order elsewhere, user probe of session
    21)."""
    with torch.no_grad():
        out = module(example)
    if not isinstance(out, torch.Tensor):
        return {}
    output: dict[str, Any] = {"shape": [batch, *out.shape[1:]], "onnx_name": "logits"}
    classes = supernet.output_classes()
    if classes is not None and out.dim() == 2 and len(classes) == out.shape[1]:
        output["classes"] = list(classes)
    return output
