"""Checkpoint compatibility with Once-for-All itself (the ``ofa`` package, a dev dependency).

Their supernet is built with random weights (every tensor perturbed, so BatchNorm statistics
and kernel-transform matrices are not identities that would hide a slicing mistake), its
state_dict goes through a file into ours, both are set to the same sub-network, and the
outputs must agree. Their code imports torchvision, Pillow and ``torch._six`` (gone from
torch 2) at module level but uses none of them for the networks: stand-ins are put in
``sys.modules`` for the import only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from models.ofa_common import OFASupernet
from models.ofa_mbv3 import OFAMobileNetV3
from models.ofa_resnet import OFAResNet50

STUBBED = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
STUBBED += ("torchvision.datasets", "PIL", "PIL.Image", "torch._six")


def _stand_in(name: str) -> types.ModuleType:
    """A module whose every public attribute is an empty class (enough to be imported,
    subclassed and used as a dict key at import time)."""
    module = types.ModuleType(name)
    module.__path__ = []

    def attribute(attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (), {"__init__": lambda self, *args, **kwargs: None})

    module.__getattr__ = attribute  # type: ignore[method-assign]
    return module


def import_ofa_networks() -> types.ModuleType | None:
    """``ofa``'s elastic network module, or None when the package is not installed."""
    if importlib.util.find_spec("ofa") is None:
        return None
    saved = {name: sys.modules.get(name) for name in STUBBED}
    try:
        for name in STUBBED:
            if name in sys.modules or _importable(name):
                continue
            sys.modules[name] = _stand_in(name)
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, sys.modules[name])
        return importlib.import_module("ofa.imagenet_classification.elastic_nn.networks")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


OFA = import_ofa_networks()
if OFA is None:
    if os.environ.get("CI") == "true":
        pytest.fail("the ofa package (dev dependency) is not installed", pytrace=False)
    pytest.skip(
        "the ofa package is not installed (pip install -e '.[dev]')", allow_module_level=True
    )


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor moved away from PyTorch's default initialisation."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        noise = torch.randn(value.shape, generator=g)
        if not value.is_floating_point():
            out[key] = value
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key.endswith("_matrix"):
            out[key] = value + 0.1 * noise
        elif value.dim() == 1:  # BatchNorm scale / shift, running mean, biases
            out[key] = (1.0 if key.endswith("bn.weight") else 0.0) + 0.1 * noise
        else:
            out[key] = value
    return out


class Pair:
    """Their supernet and ours, holding the same weights (ours read from a file)."""

    def __init__(self, theirs: nn.Module, ours: Callable[..., OFASupernet], tmp: Path) -> None:
        state = perturbed(theirs.state_dict(), seed=1)
        theirs.load_state_dict(state)
        torch.save(state, tmp / "ofa.pt")
        self.theirs, self.ours = theirs.eval(), ours(checkpoint=tmp / "ofa.pt")

    def outputs(self, arch: dict[str, Any], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        config = self.ours.ofa_config(arch)  # type: ignore[attr-defined]
        self.theirs.set_active_subnet(**{k: v for k, v in config.items() if k != "r"})
        with torch.no_grad():
            theirs = self.theirs(x)
            ours_super = self.ours.module(x, self.ours.canonical(arch))
            ours_subnet = self.ours.extract(arch)(x)
        return theirs, ours_super, ours_subnet


@pytest.fixture(scope="module", params=["w1.0", "w1.2", "resnet50"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    assert OFA is not None
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "resnet50":
        theirs = OFA.OFAResNets(
            dropout_rate=0,
            depth_list=[0, 1, 2],
            expand_ratio_list=[0.2, 0.25, 0.35],
            width_mult_list=[0.65, 0.8, 1.0],
        )
        return Pair(theirs, OFAResNet50, tmp)
    mult = float(request.param[1:])
    theirs = OFA.OFAMobileNetV3(
        dropout_rate=0,
        width_mult=mult,
        ks_list=[3, 5, 7],
        expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4],
    )
    return Pair(theirs, lambda **kw: OFAMobileNetV3(width_mult=mult, **kw), tmp)


def configs(net: OFASupernet, n: int) -> list[dict[str, Any]]:
    space, rng = net.space(), random.Random(7)
    out = [{g: c[0] for g, c in space.items()}, {g: c[-1] for g, c in space.items()}]
    out += [{g: rng.choice(c) for g, c in space.items()} for _ in range(n)]
    return [dict(arch, r=128 + 4 * i) for i, arch in enumerate(out)]


def test_our_subnetworks_equal_theirs_for_the_same_weights(pair: Pair) -> None:
    g = torch.Generator().manual_seed(0)
    logits = []
    for arch in configs(pair.ours, 1):
        x = torch.randn(2, 3, arch["r"], arch["r"], generator=g)
        theirs, ours_super, ours_subnet = pair.outputs(arch, x)
        assert (ours_super - theirs).abs().max().item() <= 1e-5, pair.ours.encode(arch)
        assert (ours_subnet - theirs).abs().max().item() <= 1e-5, pair.ours.encode(arch)
        logits.append(theirs[:, :10])
    # the comparison can tell sub-networks apart: equal outputs are not an accident
    assert (logits[0] - logits[1]).abs().max().item() > 1e-3


def test_extracted_weights_match_their_subnetwork_layout(pair: Pair) -> None:
    arch = configs(pair.ours, 1)[-1]
    pair.outputs(arch, torch.zeros(1, 3, 128, 128))  # sets their active sub-network
    theirs = pair.theirs.get_active_subnet(preserve_weight=True).state_dict()
    ours = pair.ours.extract(arch).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_legacy_checkpoint_layouts_load_to_the_same_weights(pair: Pair, tmp_path: Path) -> None:
    """Older Once-for-All files: ``mobile_inverted_conv`` blocks, flat dynamic ops, and the
    ``{"state_dict": ...}`` wrapper of the published checkpoints."""
    state = pair.theirs.state_dict()
    legacy = {}
    for key, value in state.items():
        name = re.sub(r"^blocks\.(\d+)\.conv\.", r"blocks.\1.mobile_inverted_conv.", key)
        for nested, flat in (
            (".bn.bn.", ".bn."),
            (".conv.conv.", ".conv."),
            (".linear.linear.", ".linear."),
        ):
            name = name.replace(nested, flat)
        if not key.endswith("num_batches_tracked"):
            legacy[name] = value
    assert set(legacy) != set(state)
    torch.save({"state_dict": legacy}, tmp_path / "legacy.pt")
    loaded = type(pair.ours)(
        checkpoint=tmp_path / "legacy.pt",
        **({"width_mult": pair.ours.width_mult} if isinstance(pair.ours, OFAMobileNetV3) else {}),
    )
    expected = pair.ours.module.state_dict()
    got = loaded.module.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected if "num_batches" not in k)
