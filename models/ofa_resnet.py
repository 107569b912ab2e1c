"""Once-for-All ResNet50 supernet: ``ofa_resnet50`` (elastic depth, expand ratio, width).

Search space (Once-for-All's ``ofa_resnet50_d0-1-2_e0.2-0.25-0.35_w0.65-0.8-1.0``), genes:
  ``r``                  input resolution, 128..224 in steps of 4
  ``d0``                 stem depth: 2 keeps the stem's residual 3x3 conv, 0 skips it
  ``w0`` / ``w1``        width multiplier (0.65, 0.8, 1.0) of stem convs 1-2 / stem conv 3
  ``d1`` .. ``d4``       extra blocks per stage (0, 1, 2) on top of 2, 2, 4, 2
  ``w2`` .. ``w5``       width multiplier of stages 1..4 (widths 256, 512, 1024, 2048 x w)
  ``e{s}_{b}``           bottleneck ratio (0.2, 0.25, 0.35) of block b of stage s

Encoding (the de-duplication key): ``r224-s2.w65.w100-w100.e35.e25.e20-w80.e20.e20-...``:
the resolution; the stem group (``s<d0>``, then ``w0`` and ``w1`` in percent); then per
stage its width in percent and one ``e<percent>`` per *active* block. Genes of inactive
blocks have no effect (``canonical`` sets them to 0.2), and ``w0`` = 0.8 builds the same
24-channel stem as 0.65, so ``canonical`` writes 0.65.

Network (Once-for-All's ResNet50-D style): three 3x3 stem convs (the first stride 2, the second
residual) -> 3x3/2 max pool -> bottleneck blocks (1x1, 3x3 with the stride, 1x1; the first
block of a stage has an average-pool + 1x1 conv shortcut) -> global pool -> linear.

Weights: the state_dict of the ``ofa`` package's ``OFAResNets`` with depth_list [0, 1, 2],
expand_ratio_list [0.2, 0.25, 0.35], width_mult_list [0.65, 0.8, 1.0] loads as is (bare or as
``{"state_dict": ...}``): pass its path as ``checkpoint``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import InvalidInput

from .base import Arch, Complexity
from .ofa_common import DynConv, DynStage, ElasticNet, OFASupernet, make_divisible, seq
from .registry import register_supernet

RESOLUTIONS = tuple(range(128, 225, 4))
STEM_DEPTHS = (0, 2)
DEPTHS = (0, 1, 2)
EXPANDS = (0.2, 0.25, 0.35)
WIDTH_MULTS = (0.65, 0.8, 1.0)
BASE_DEPTHS = (2, 2, 4, 2)
STAGE_WIDTHS = (256, 512, 1024, 2048)
STRIDES = (1, 2, 2, 2)
STEM_WIDTH = 64
_ENCODING = re.compile(r"^r(\d+)-s(\d+)\.w(\d+)\.w(\d+)((?:-w\d+(?:\.e\d+)+){4})$")


def stem_widths(w0: float, w1: float) -> tuple[int, int]:
    """Channels of stem convs 1-2 and of stem conv 3."""
    return make_divisible(make_divisible(STEM_WIDTH * w0) // 2), make_divisible(STEM_WIDTH * w1)


def stage_width(stage: int, mult: float) -> int:
    return make_divisible(STAGE_WIDTHS[stage - 1] * mult)


def _pct(value: float) -> int:
    return round(value * 100)


@dataclass(frozen=True)
class BlockSpec:
    stage: int
    index: int
    cin: int
    cout: int
    expand: float
    stride: int

    @property
    def mid(self) -> int:
        return make_divisible(round(self.cout * self.expand))

    @property
    def downsample(self) -> bool:
        return self.index == 1  # every stage's first block changes the width


def active_blocks(arch: Arch) -> list[BlockSpec]:
    blocks, cin = [], stem_widths(arch["w0"], arch["w1"])[1]
    for s in range(1, len(BASE_DEPTHS) + 1):
        cout = stage_width(s, arch[f"w{s + 1}"])
        for b in range(1, BASE_DEPTHS[s - 1] + arch[f"d{s}"] + 1):
            stride = STRIDES[s - 1] if b == 1 else 1
            blocks.append(BlockSpec(s, b, cin, cout, arch[f"e{s}_{b}"], stride))
            cin = cout
    return blocks


# --- static layers (an extracted sub-network; keys as the ofa package's ResNets) --------------


class Bottleneck(nn.Module):
    def __init__(
        self, conv1: nn.Module, conv2: nn.Module, conv3: nn.Module, downsample: nn.Module | None
    ) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.downsample = conv1, conv2, conv3, downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.downsample(x) if self.downsample is not None else x
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + residual)


class StemResidual(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


class ResNetSubnet(nn.Module):
    """A standalone sub-network: only the active weights, plain layers, exportable."""

    def __init__(self, stem: list[nn.Module], blocks: list[Bottleneck], classifier: nn.Module):
        super().__init__()
        self.input_stem = nn.ModuleList(stem)
        self.max_pooling = nn.MaxPool2d(3, 2, 1)
        self.blocks = nn.ModuleList(blocks)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.input_stem:
            x = layer(x)
        x = self.max_pooling(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x.mean(3).mean(2))


# --- elastic layers ---------------------------------------------------------------------------


def _stage(cin: int, cout: int, kernel: int = 1, stride: int = 1) -> DynStage:
    return DynStage(DynConv(cin, cout, kernel, stride), cout)


def _run(stage: DynStage, x: torch.Tensor, channels: int, relu: bool = True) -> torch.Tensor:
    y = stage.bn(stage.conv(x, channels))
    return F.relu(y) if relu else y


def _static(stage: DynStage, cout: int, cin: int, act: str | None = "relu") -> nn.Sequential:
    act_layer = nn.ReLU() if act is not None else None
    return seq(conv=stage.conv.static(cout, cin), bn=stage.bn.static(cout), act=act_layer)


class DynBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, downsample: bool) -> None:
        super().__init__()
        mid = make_divisible(round(cout * max(EXPANDS)))
        self.stride = stride
        self.conv1 = _stage(cin, mid)
        self.conv2 = _stage(mid, mid, 3, stride)
        self.conv3 = _stage(mid, cout)
        self.downsample = _stage(cin, cout) if downsample else None

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        residual = x
        if self.downsample is not None:
            if self.stride > 1:
                residual = F.avg_pool2d(x, self.stride, self.stride, 0, ceil_mode=True)
            residual = _run(self.downsample, residual, spec.cout, relu=False)
        y = _run(self.conv2, _run(self.conv1, x, spec.mid), spec.mid)
        return F.relu(_run(self.conv3, y, spec.cout, False) + residual)

    def static(self, spec: BlockSpec) -> Bottleneck:
        mid, cin, cout = spec.mid, spec.cin, spec.cout
        downsample = None
        if self.downsample is not None:
            pool = nn.AvgPool2d(self.stride, self.stride, 0, ceil_mode=True)
            downsample = seq(
                avg_pool=pool if self.stride > 1 else None,
                conv=self.downsample.conv.static(cout, cin),
                bn=self.downsample.bn.static(cout),
            )
        return Bottleneck(
            _static(self.conv1, mid, cin),
            _static(self.conv2, mid, mid),
            _static(self.conv3, cout, mid, act=None),
            downsample,
        )


class DynLinear(nn.Module):
    def __init__(self, max_in: int, out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(max_in, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.linear.weight[:, : x.shape[1]].contiguous(), self.linear.bias)


class StemBlock(nn.Module):
    """The stem's residual conv, keys ``conv.conv.conv.weight`` as in Once-for-All."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _stage(channels, channels, 3)


class ElasticResNet50(ElasticNet):
    """The supernet module (state_dict keys as ``ofa``'s ``OFAResNets``)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        mid, out = stem_widths(1.0, 1.0)
        self.input_stem = nn.ModuleList([_stage(3, mid, 3, 2), StemBlock(mid), _stage(mid, out, 3)])
        largest = {"w0": 1.0, "w1": 1.0} | {f"w{s + 1}": 1.0 for s in range(1, 5)}
        largest |= {f"d{s}": max(DEPTHS) for s in range(1, 5)}
        largest |= {f"e{s}_{b}": max(EXPANDS) for s in range(1, 5) for b in range(1, 7)}
        specs = active_blocks(largest)
        self.blocks = nn.ModuleList(
            DynBottleneck(s.cin, s.cout, s.stride, s.downsample) for s in specs
        )
        self.classifier = seq(linear=DynLinear(specs[-1].cout, num_classes))

    def _stem(self, i: int) -> DynStage:
        layer = self.input_stem[i]
        return cast(DynStage, layer.conv if isinstance(layer, StemBlock) else layer)

    def _block(self, spec: BlockSpec) -> DynBottleneck:
        first = sum(BASE_DEPTHS[: spec.stage - 1]) + max(DEPTHS) * (spec.stage - 1)
        return cast(DynBottleneck, self.blocks[first + spec.index - 1])

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        """Logits of sub-network ``arch`` for ``x`` (already at ``arch['r']``)."""
        mid, out = stem_widths(arch["w0"], arch["w1"])
        x = _run(self._stem(0), x, mid)
        if arch["d0"] == max(STEM_DEPTHS):
            x = _run(self._stem(1), x, mid) + x
        x = F.max_pool2d(_run(self._stem(2), x, out), 3, 2, 1)
        for spec in active_blocks(arch):
            x = self._block(spec)(x, spec)
        return self.classifier(x.mean(3).mean(2))

    def extract(self, arch: Arch) -> ResNetSubnet:
        mid, out = stem_widths(arch["w0"], arch["w1"])
        stem: list[nn.Module] = [_static(self._stem(0), mid, 3)]
        if arch["d0"] == max(STEM_DEPTHS):
            stem.append(StemResidual(_static(self._stem(1), mid, mid)))
        stem.append(_static(self._stem(2), out, mid))
        specs = active_blocks(arch)
        blocks = [self._block(spec).static(spec) for spec in specs]
        source = cast(DynLinear, cast(nn.Sequential, self.classifier).linear).linear
        linear = nn.Linear(specs[-1].cout, source.out_features)
        linear.weight.data.copy_(source.weight.data[:, : specs[-1].cout])
        linear.bias.data.copy_(source.bias.data)
        classifier = seq(linear=linear)
        return ResNetSubnet(stem, blocks, classifier).eval()


# --- the supernet -----------------------------------------------------------------------------


def _space() -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {"r": list(RESOLUTIONS), "d0": list(STEM_DEPTHS)}
    space |= {"w0": list(WIDTH_MULTS), "w1": list(WIDTH_MULTS)}
    for s in range(1, len(BASE_DEPTHS) + 1):
        space[f"d{s}"], space[f"w{s + 1}"] = list(DEPTHS), list(WIDTH_MULTS)
        for b in range(1, BASE_DEPTHS[s - 1] + max(DEPTHS) + 1):
            space[f"e{s}_{b}"] = list(EXPANDS)
    return space


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 'same' padding / ceil-mode pooling


class OFAResNet50(OFASupernet):
    """Once-for-All ResNet50 (d 0-1-2, e 0.2-0.25-0.35, w 0.65-0.8-1.0)."""

    name = "ofa_resnet50"

    def build(self) -> ElasticResNet50:
        return ElasticResNet50(self.num_classes)

    def space(self) -> dict[str, list[Any]]:
        return _space()

    def space_size(self) -> int:
        stem = len(STEM_DEPTHS) * len({stem_widths(w, 1.0)[0] for w in WIDTH_MULTS}) * 3
        size = len(RESOLUTIONS) * stem
        for base in BASE_DEPTHS:
            size *= len(WIDTH_MULTS) * sum(len(EXPANDS) ** (base + d) for d in DEPTHS)
        return size

    def canonical(self, arch: Arch) -> Arch:
        self.validate(arch)
        out = {gene: arch[gene] for gene in _space()}
        same_stem = [w for w in WIDTH_MULTS if stem_widths(w, 1.0) == stem_widths(arch["w0"], 1.0)]
        out["w0"] = same_stem[0]
        for s in range(1, len(BASE_DEPTHS) + 1):
            for b in range(BASE_DEPTHS[s - 1] + arch[f"d{s}"] + 1, BASE_DEPTHS[s - 1] + 3):
                out[f"e{s}_{b}"] = EXPANDS[0]
        return out

    def encode(self, arch: Arch) -> str:
        arch = self.canonical(arch)
        groups = [f"r{arch['r']}", f"s{arch['d0']}.w{_pct(arch['w0'])}.w{_pct(arch['w1'])}"]
        for s in range(1, len(BASE_DEPTHS) + 1):
            expands = [f"e{_pct(b.expand)}" for b in active_blocks(arch) if b.stage == s]
            groups.append(".".join([f"w{_pct(arch[f'w{s + 1}'])}", *expands]))
        return "-".join(groups)

    def decode(self, encoding: str) -> Arch:
        match = _ENCODING.match(encoding)
        try:
            assert match is not None
            widths = {_pct(w): w for w in WIDTH_MULTS}
            expands = {_pct(e): e for e in EXPANDS}
            arch: Arch = {"r": int(match.group(1)), "d0": int(match.group(2))}
            arch["w0"], arch["w1"] = widths[int(match.group(3))], widths[int(match.group(4))]
            for s, group in enumerate(match.group(5)[1:].split("-"), start=1):
                width, *blocks = group.split(".")
                arch[f"w{s + 1}"] = widths[int(width[1:])]
                arch[f"d{s}"] = len(blocks) - BASE_DEPTHS[s - 1]
                for b in range(1, BASE_DEPTHS[s - 1] + max(DEPTHS) + 1):
                    pct = int(blocks[b - 1][1:]) if b <= len(blocks) else _pct(EXPANDS[0])
                    arch[f"e{s}_{b}"] = expands[pct]
            return self.canonical(arch)
        except (AssertionError, KeyError, ValueError):
            raise InvalidInput(
                f"malformed architecture encoding {encoding!r}; expected e.g. "
                "'r224-s2.w65.w100-w100.e35.e25-w80.e20.e20-w100.e35.e35.e35.e35-w65.e20.e20'",
                field="arch",
            ) from None

    def complexity(self, arch: Arch) -> Complexity:
        """MACs of every convolution and the classifier at batch 1 (BatchNorm, ReLU and
        pooling are not multiply-accumulates); parameters of the extracted sub-network."""
        arch = self.canonical(arch)
        mid, out = stem_widths(arch["w0"], arch["w1"])
        size = _out(arch["r"], 2)
        layers = [(3, mid), (mid, mid)] if arch["d0"] == max(STEM_DEPTHS) else [(3, mid)]
        layers.append((mid, out))
        macs = sum(size * size * cin * cout * 9 for cin, cout in layers)
        params = sum(cin * cout * 9 + 2 * cout for cin, cout in layers)
        size = _out(size, 2)
        for b in active_blocks(arch):
            after = _out(size, b.stride)
            macs += size * size * b.cin * b.mid + after * after * (
                9 * b.mid * b.mid + b.mid * b.cout
            )
            params += b.cin * b.mid + 9 * b.mid * b.mid + b.mid * b.cout + 2 * (2 * b.mid + b.cout)
            if b.downsample:
                macs += after * after * b.cin * b.cout
                params += b.cin * b.cout + 2 * b.cout
            size = after
        cout = active_blocks(arch)[-1].cout
        macs += cout * self.num_classes
        params += cout * self.num_classes + self.num_classes
        return Complexity(macs=int(macs), params=int(params))

    def ofa_config(self, arch: Arch) -> dict[str, Any]:
        """``arch`` as arguments of ``OFAResNets.set_active_subnet`` (plus ``r``)."""
        arch = self.canonical(arch)
        expands = [
            arch[f"e{s}_{b}"]
            for s in range(1, len(BASE_DEPTHS) + 1)
            for b in range(1, BASE_DEPTHS[s - 1] + max(DEPTHS) + 1)
        ]
        return {
            "d": [arch[f"d{i}"] for i in range(len(BASE_DEPTHS) + 1)],
            "e": expands,
            "w": [WIDTH_MULTS.index(arch[f"w{i}"]) for i in range(len(BASE_DEPTHS) + 2)],
            "r": arch["r"],
        }


@register_supernet(OFAResNet50.name)
def _create_ofa_resnet50(**kwargs: Any) -> OFAResNet50:
    return OFAResNet50(**kwargs)
