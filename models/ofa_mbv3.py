"""Once-for-All MobileNetV3 supernets: ``ofa_mbv3_d234_e346_k357_w1.0`` and ``..._w1.2``.

Search space (Once-for-All's), genes in order:
  ``r``                        input resolution, 128..224 in steps of 4
  ``d1`` .. ``d5``             depth of each of the 5 elastic stages: 2, 3 or 4 blocks
  ``k{s}_{b}`` / ``e{s}_{b}``  kernel (3, 5, 7) and expand ratio (3, 4, 6) of block b of stage s

Encoding (the de-duplication key): ``r224-k3e4.k5e6-k7e3.k3e3-...`` with five stage groups:
the resolution, then one ``k<kernel>e<expand>`` per *active* block, groups separated by ``-``.
Genes of inactive blocks have no effect; ``canonical`` sets them to k3 / e3.

Network (Once-for-All's MobileNetV3, widths scaled by ``w`` and rounded to multiples of 8):
conv3x3/2 (16, h-swish) -> a fixed depthwise block (16) -> stages of inverted residual blocks,
widths 24, 40, 80, 112, 160, strides 2, 2, 2, 1, 2, ReLU in stages 1-2 and h-swish after,
squeeze-excite in stages 2, 4, 5 -> 1x1 conv to 960 -> global pool -> 1x1 conv to 1280
(h-swish, no BN) -> linear. A smaller kernel is the centre of the 7x7 kernel passed through
Once-for-All's learned kernel-transform matrices (``7to5_matrix``, ``5to3_matrix``).

Weights: the state_dict of the ``ofa`` package's ``OFAMobileNetV3`` (``ofa_net(...)`` builds
it with ks_list [3, 5, 7], expand_ratio_list [3, 4, 6], depth_list [2, 3, 4]) loads as is,
bare or as ``{"state_dict": ...}`` (Once-for-All's published files): pass its path as
``checkpoint``. Without one, the weights are a seeded random initialisation.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import InvalidInput

from .base import Arch, Complexity
from .ofa_common import (
    DynBN,
    DynConv,
    DynStage,
    ElasticNet,
    OFASupernet,
    activation,
    conv_bn_act,
    hard_sigmoid,
    make_divisible,
    seq,
)
from .registry import register_supernet

RESOLUTIONS = tuple(range(128, 225, 4))
DEPTHS = (2, 3, 4)
KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
STAGES = 5
BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)  # stem, first block, stages, head
STRIDES = (2, 2, 2, 1, 2)
ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
USE_SE = (False, True, False, True, True)
SE_REDUCTION = 4
_ENCODING = re.compile(r"^r(\d+)((?:-k\d+e\d+(?:\.k\d+e\d+)*){5})$")


@dataclass(frozen=True)
class Widths:
    stem: int
    first: int
    stages: tuple[int, ...]
    final_expand: int
    last: int


def widths(width_mult: float) -> Widths:
    scaled = [make_divisible(w * width_mult) for w in BASE_WIDTHS]
    return Widths(scaled[0], scaled[1], tuple(scaled[2:7]), scaled[7], scaled[8])


def _genes(stage: int, block: int) -> tuple[str, str]:
    return f"k{stage}_{block}", f"e{stage}_{block}"


@dataclass(frozen=True)
class BlockSpec:
    """One active inverted residual block of a sub-network."""

    stage: int
    index: int  # 1-based within the stage
    cin: int
    cout: int
    kernel: int
    expand: int
    stride: int

    @property
    def mid(self) -> int:
        return make_divisible(round(self.cin * self.expand))

    @property
    def se_mid(self) -> int:
        return make_divisible(self.mid // SE_REDUCTION)

    @property
    def act(self) -> str:
        return ACTS[self.stage - 1]

    @property
    def se(self) -> bool:
        return USE_SE[self.stage - 1]

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


def active_blocks(arch: Arch, w: Widths) -> list[BlockSpec]:
    blocks, cin = [], w.first
    for s in range(1, STAGES + 1):
        for b in range(1, arch[f"d{s}"] + 1):
            kg, eg = _genes(s, b)
            stride = STRIDES[s - 1] if b == 1 else 1
            blocks.append(BlockSpec(s, b, cin, w.stages[s - 1], arch[kg], arch[eg], stride))
            cin = w.stages[s - 1]
    return blocks


# --- static layers (an extracted sub-network; keys as the ofa package's MobileNetV3) ----------


class SqueezeExcite(nn.Module):
    def __init__(self, reduce: nn.Conv2d, expand: nn.Conv2d) -> None:
        super().__init__()
        self.fc = seq(reduce=reduce, relu=nn.ReLU(), expand=expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * hard_sigmoid(self.fc(x.mean(3, keepdim=True).mean(2, keepdim=True)))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> kxk depthwise [-> SE] -> 1x1 project."""

    def __init__(
        self, inverted_bottleneck: nn.Module | None, depth_conv: nn.Module, point_linear: nn.Module
    ) -> None:
        super().__init__()
        self.inverted_bottleneck = inverted_bottleneck
        self.depth_conv = depth_conv
        self.point_linear = point_linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class Residual(nn.Module):
    def __init__(self, conv: nn.Module, shortcut: bool) -> None:
        super().__init__()
        self.conv, self.shortcut = conv, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x if self.shortcut else self.conv(x)


class MobileNetV3Subnet(nn.Module):
    """A standalone sub-network: only the active weights, plain layers, exportable."""

    def __init__(self, first_conv: nn.Module, blocks: list[nn.Module], *head: nn.Module) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer, self.feature_mix_layer, self.classifier = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        x = self.final_expand_layer(x).mean(3, keepdim=True).mean(2, keepdim=True)
        return self.classifier(self.feature_mix_layer(x).flatten(1))


# --- elastic layers ---------------------------------------------------------------------------


class DynDepthwise(nn.Module):
    """Depthwise conv with elastic kernel: the centre of the largest kernel, transformed by a
    learned (k*k x k*k) matrix at every step down (7 -> 5 -> 3)."""

    def __init__(self, channels: int, kernels: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernels, self.stride = sorted(kernels), stride
        self.conv = nn.Conv2d(channels, channels, max(kernels), stride, groups=channels, bias=False)
        for small, big in zip(self.kernels, self.kernels[1:], strict=False):
            self.register_parameter(f"{big}to{small}_matrix", nn.Parameter(torch.eye(small**2)))

    def weight(self, channels: int, kernel: int) -> torch.Tensor:
        w = self.conv.weight[:channels]
        steps = [(b, s) for s, b in zip(self.kernels, self.kernels[1:], strict=False) if b > kernel]
        for big, small in reversed(steps):
            start = (big - small) // 2
            centre = w[:, :, start : start + small, start : start + small].reshape(-1, small**2)
            matrix = self.get_parameter(f"{big}to{small}_matrix")
            w = F.linear(centre, matrix).reshape(channels, 1, small, small)
        return w

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(
            x, self.weight(c, kernel).contiguous(), None, self.stride, kernel // 2, 1, c
        )


class DynSqueezeExcite(nn.Module):
    def __init__(self, max_channels: int) -> None:
        super().__init__()
        mid = make_divisible(max_channels // SE_REDUCTION)
        self.fc = nn.ModuleDict(
            {"reduce": nn.Conv2d(max_channels, mid, 1), "expand": nn.Conv2d(mid, max_channels, 1)}
        )

    def _convs(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        return cast(nn.Conv2d, self.fc["reduce"]), cast(nn.Conv2d, self.fc["expand"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, (reduce, expand) = x.shape[1], self._convs()
        mid = make_divisible(c // SE_REDUCTION)
        assert reduce.bias is not None and expand.bias is not None
        y = x.mean(3, keepdim=True).mean(2, keepdim=True)
        y = F.relu(F.conv2d(y, reduce.weight[:mid, :c].contiguous(), reduce.bias[:mid]))
        y = F.conv2d(y, expand.weight[:c, :mid].contiguous(), expand.bias[:c])
        return x * hard_sigmoid(y)

    def static(self, channels: int, mid: int) -> SqueezeExcite:
        (reduce, expand), (new_reduce, new_expand) = self._convs(), self._convs_of(channels, mid)
        assert reduce.bias is not None and expand.bias is not None
        assert new_reduce.bias is not None and new_expand.bias is not None
        new_reduce.weight.data.copy_(reduce.weight.data[:mid, :channels])
        new_reduce.bias.data.copy_(reduce.bias.data[:mid])
        new_expand.weight.data.copy_(expand.weight.data[:channels, :mid])
        new_expand.bias.data.copy_(expand.bias.data[:channels])
        return SqueezeExcite(new_reduce, new_expand)

    @staticmethod
    def _convs_of(channels: int, mid: int) -> tuple[nn.Conv2d, nn.Conv2d]:
        return nn.Conv2d(channels, mid, 1), nn.Conv2d(mid, channels, 1)


class DepthwiseStage(nn.Module):
    def __init__(self, channels: int, stride: int, act: str, se: bool) -> None:
        super().__init__()
        self.conv = DynDepthwise(channels, KERNELS, stride)
        self.bn = DynBN(channels)
        self.act = activation(act)
        self.se = DynSqueezeExcite(channels) if se else None

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x, kernel)))
        return self.se(x) if self.se is not None else x

    def static(self, spec: BlockSpec) -> nn.Sequential:
        mid, k = spec.mid, spec.kernel
        conv = nn.Conv2d(mid, mid, k, spec.stride, k // 2, groups=mid, bias=False)
        conv.weight.data.copy_(self.conv.weight(mid, k).data)
        se = self.se.static(mid, spec.se_mid) if self.se is not None else None
        return seq(conv=conv, bn=self.bn.static(mid), act=activation(spec.act), se=se)


class DynMBConv(nn.Module):
    """Inverted residual with elastic kernel and expand ratio (input width fixed)."""

    def __init__(self, cin: int, cout: int, stride: int, act: str, se: bool) -> None:
        super().__init__()
        max_mid = make_divisible(round(cin * max(EXPANDS)))
        self.cin, self.cout, self.stride, self.act_name = cin, cout, stride, act
        self.inverted_bottleneck = DynStage(DynConv(cin, max_mid), max_mid)
        self.depth_conv = DepthwiseStage(max_mid, stride, act, se)
        self.point_linear = DynStage(DynConv(max_mid, cout), cout)
        self.act = activation(act)

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        ib, pl = self.inverted_bottleneck, self.point_linear
        y = self.act(ib.bn(ib.conv(x, spec.mid)))
        y = self.depth_conv(y, spec.kernel)
        return pl.bn(pl.conv(y, self.cout))

    def static(self, spec: BlockSpec) -> MBConv:
        ib, pl, mid = self.inverted_bottleneck, self.point_linear, spec.mid
        expand = seq(
            conv=ib.conv.static(mid, spec.cin), bn=ib.bn.static(mid), act=activation(spec.act)
        )
        project = seq(conv=pl.conv.static(self.cout, mid), bn=pl.bn.static(self.cout))
        return MBConv(expand, self.depth_conv.static(spec), project)


class ElasticMobileNetV3(ElasticNet):
    """The supernet module (state_dict keys as ``ofa``'s ``OFAMobileNetV3``)."""

    def __init__(self, width_mult: float, num_classes: int) -> None:
        super().__init__()
        self.w = w = widths(width_mult)
        self.first_conv = conv_bn_act(3, w.stem, 3, 2, act="h_swish")
        depthwise = conv_bn_act(w.stem, w.stem, 3, act="relu", groups=w.stem)
        first = MBConv(None, depthwise, conv_bn_act(w.stem, w.first, 1))
        blocks: list[nn.Module] = [Residual(first, w.stem == w.first)]
        largest = {gene: max(choices) for gene, choices in _space().items()}
        for spec in active_blocks(largest, w):
            conv = DynMBConv(spec.cin, spec.cout, spec.stride, spec.act, spec.se)
            blocks.append(Residual(conv, spec.residual))
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = conv_bn_act(w.stages[-1], w.final_expand, 1, act="h_swish")
        mix = nn.Conv2d(w.final_expand, w.last, 1, bias=False)
        self.feature_mix_layer = seq(conv=mix, act=activation("h_swish"))
        self.classifier = seq(linear=nn.Linear(w.last, num_classes))

    def _block(self, spec: BlockSpec) -> Residual:
        index = 1 + (spec.stage - 1) * max(DEPTHS) + spec.index - 1
        return cast(Residual, self.blocks[index])

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        """Logits of sub-network ``arch`` for ``x`` (already at ``arch['r']``)."""
        x = self.blocks[0](self.first_conv(x))
        for spec in active_blocks(arch, self.w):
            block = self._block(spec)
            y = cast(DynMBConv, block.conv)(x, spec)
            x = y + x if block.shortcut else y
        x = self.final_expand_layer(x).mean(3, keepdim=True).mean(2, keepdim=True)
        return self.classifier(self.feature_mix_layer(x).flatten(1))

    def extract(self, arch: Arch) -> MobileNetV3Subnet:
        blocks: list[nn.Module] = [copy.deepcopy(self.blocks[0])]
        for spec in active_blocks(arch, self.w):
            conv = cast(DynMBConv, self._block(spec).conv)
            blocks.append(Residual(conv.static(spec), spec.residual))
        static = (self.first_conv, self.final_expand_layer, self.feature_mix_layer, self.classifier)
        first, *head = (copy.deepcopy(part) for part in static)
        return MobileNetV3Subnet(first, blocks, *head).eval()


# --- the supernet -----------------------------------------------------------------------------


def _space() -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {"r": list(RESOLUTIONS)}
    space |= {f"d{s}": list(DEPTHS) for s in range(1, STAGES + 1)}
    for s in range(1, STAGES + 1):
        for b in range(1, max(DEPTHS) + 1):
            kg, eg = _genes(s, b)
            space[kg], space[eg] = list(KERNELS), list(EXPANDS)
    return space


def _conv_macs(size: int, cin: int, cout: int, kernel: int, groups: int = 1) -> int:
    return size * size * cout * (cin // groups) * kernel * kernel


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 'same' padding, odd kernel


class OFAMobileNetV3(OFASupernet):
    """Once-for-All MobileNetV3 (d234, e346, k357) at width multiplier ``width_mult``."""

    def __init__(self, *, width_mult: float = 1.0, **kwargs: Any) -> None:
        self.width_mult = width_mult
        self.name = f"ofa_mbv3_d234_e346_k357_w{width_mult}"  # type: ignore[misc]
        self.w = widths(width_mult)
        super().__init__(**kwargs)

    def build(self) -> ElasticMobileNetV3:
        return ElasticMobileNetV3(self.width_mult, self.num_classes)

    def space(self) -> dict[str, list[Any]]:
        return _space()

    def space_size(self) -> int:
        per_stage = sum((len(KERNELS) * len(EXPANDS)) ** d for d in DEPTHS)
        return len(RESOLUTIONS) * per_stage**STAGES

    def canonical(self, arch: Arch) -> Arch:
        self.validate(arch)
        out = {gene: arch[gene] for gene in _space()}
        for s in range(1, STAGES + 1):
            for b in range(arch[f"d{s}"] + 1, max(DEPTHS) + 1):
                kg, eg = _genes(s, b)
                out[kg], out[eg] = KERNELS[0], EXPANDS[0]
        return out

    def encode(self, arch: Arch) -> str:
        arch = self.canonical(arch)
        stages: list[list[str]] = [[] for _ in range(STAGES)]
        for spec in active_blocks(arch, self.w):
            stages[spec.stage - 1].append(f"k{spec.kernel}e{spec.expand}")
        return f"r{arch['r']}-" + "-".join(".".join(blocks) for blocks in stages)

    def decode(self, encoding: str) -> Arch:
        match = _ENCODING.match(encoding)
        groups = match.group(2)[1:].split("-") if match else []
        if not match or any(len(g.split(".")) > max(DEPTHS) for g in groups):
            raise InvalidInput(
                f"malformed architecture encoding {encoding!r}; expected e.g. "
                "'r224-k3e4.k5e6-k3e3.k3e3-k7e6.k5e4-k3e3.k3e3-k5e6.k3e3' (5 stages)",
                field="arch",
            )
        arch: Arch = {"r": int(match.group(1))}
        for s, group in enumerate(groups, start=1):
            blocks = group.split(".")
            arch[f"d{s}"] = len(blocks)
            for b in range(1, max(DEPTHS) + 1):
                kernel, expand = blocks[b - 1][1:].split("e") if b <= len(blocks) else (3, 3)
                arch[_genes(s, b)[0]], arch[_genes(s, b)[1]] = int(kernel), int(expand)
        return self.canonical(arch)

    def complexity(self, arch: Arch) -> Complexity:
        """MACs of every convolution and the classifier at batch 1 (BatchNorm, activations and
        pooling are not multiply-accumulates); parameters of the extracted sub-network."""
        arch, w = self.canonical(arch), self.w
        size = _out(arch["r"], 2)
        macs = _conv_macs(size, 3, w.stem, 3)
        params = 3 * w.stem * 9 + 2 * w.stem
        macs += _conv_macs(size, w.stem, w.stem, 3, groups=w.stem) + _conv_macs(
            size, w.stem, w.first, 1
        )
        params += w.stem * 9 + 2 * w.stem + w.stem * w.first + 2 * w.first
        for spec in active_blocks(arch, w):
            out, mid, k = _out(size, spec.stride), spec.mid, spec.kernel
            macs += _conv_macs(size, spec.cin, mid, 1) + _conv_macs(out, mid, mid, k, mid)
            macs += _conv_macs(out, mid, spec.cout, 1)
            params += spec.cin * mid + mid * k * k + mid * spec.cout + 2 * (2 * mid + spec.cout)
            if spec.se:
                macs += 2 * mid * spec.se_mid
                params += 2 * mid * spec.se_mid + spec.se_mid + mid
            size = out
        macs += _conv_macs(size, w.stages[-1], w.final_expand, 1)
        macs += w.final_expand * w.last + w.last * self.num_classes
        params += w.stages[-1] * w.final_expand + 2 * w.final_expand + w.final_expand * w.last
        params += w.last * self.num_classes + self.num_classes
        return Complexity(macs=int(macs), params=int(params))

    def ofa_config(self, arch: Arch) -> dict[str, Any]:
        """``arch`` as arguments of ``OFAMobileNetV3.set_active_subnet`` (plus ``r``)."""
        arch = self.canonical(arch)
        blocks = [(s, b) for s in range(1, STAGES + 1) for b in range(1, max(DEPTHS) + 1)]
        return {
            "ks": [arch[_genes(s, b)[0]] for s, b in blocks],
            "e": [arch[_genes(s, b)[1]] for s, b in blocks],
            "d": [arch[f"d{s}"] for s in range(1, STAGES + 1)],
            "r": arch["r"],
        }


for _mult in (1.0, 1.2):
    register_supernet(f"ofa_mbv3_d234_e346_k357_w{_mult}")(
        lambda mult=_mult, **kw: OFAMobileNetV3(width_mult=mult, **kw)
    )
