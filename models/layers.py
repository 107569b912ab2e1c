"""Building blocks: static layers for extracted sub-networks and their elastic twins.

An elastic layer holds the weights of its largest configuration and runs any smaller one by
slicing: the first ``hidden`` channels, and the centre ``k x k`` of the largest kernel
(Once-for-All's weight sharing, without its kernel-transform matrices). ``extract`` copies the
active slice into a static layer, so an extracted sub-network holds only the active weights.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, k x k depthwise, 1x1 project, residual when shapes match."""

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.expand = conv_bn(cin, hidden, 1, 1)
        self.depthwise = conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = conv_bn(hidden, cout, 1, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.expand(x))
        y = F.relu(self.depthwise(y))
        y = self.project(y)
        return x + y if self.residual else y


def _conv(block: nn.Module) -> nn.Conv2d:
    """The convolution of a ``conv_bn`` pair."""
    return cast(nn.Conv2d, cast(nn.Sequential, block)[0])


def _norm(block: nn.Module) -> nn.BatchNorm2d:
    """The BatchNorm of a ``conv_bn`` pair."""
    return cast(nn.BatchNorm2d, cast(nn.Sequential, block)[1])


def _copy_bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d, channels: int) -> None:
    dst.weight.data.copy_(src.weight.data[:channels])
    dst.bias.data.copy_(src.bias.data[:channels])
    assert src.running_mean is not None and src.running_var is not None
    assert dst.running_mean is not None and dst.running_var is not None
    dst.running_mean.copy_(src.running_mean[:channels])
    dst.running_var.copy_(src.running_var[:channels])


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BatchNorm over the first ``channels`` channels of ``bn`` (batch stats in training)."""
    rm = bn.running_mean[:channels] if bn.running_mean is not None else None
    rv = bn.running_var[:channels] if bn.running_var is not None else None
    return F.batch_norm(
        x,
        rm,
        rv,
        bn.weight[:channels],
        bn.bias[:channels],
        bn.training,
        bn.momentum if bn.momentum is not None else 0.1,
        bn.eps,
    )


class ElasticInvertedResidual(nn.Module):
    """An inverted residual block with elastic expand width and kernel size."""

    def __init__(self, cin: int, cout: int, max_hidden: int, max_kernel: int, stride: int):
        super().__init__()
        self.cin, self.cout, self.stride, self.max_kernel = cin, cout, stride, max_kernel
        self.expand = conv_bn(cin, max_hidden, 1, 1)
        self.depthwise = conv_bn(max_hidden, max_hidden, max_kernel, stride, groups=max_hidden)
        self.project = conv_bn(max_hidden, cout, 1, 1)
        self.residual = stride == 1 and cin == cout

    def _dw_weight(self, hidden: int, kernel: int) -> torch.Tensor:
        start = (self.max_kernel - kernel) // 2
        w = _conv(self.depthwise).weight
        return w[:hidden, :, start : start + kernel, start : start + kernel]

    def forward(self, x: torch.Tensor, hidden: int, kernel: int) -> torch.Tensor:
        y = F.conv2d(x, _conv(self.expand).weight[:hidden])
        y = F.relu(_bn(y, _norm(self.expand), hidden))
        w = self._dw_weight(hidden, kernel)
        y = F.conv2d(y, w, None, self.stride, kernel // 2, 1, hidden)
        y = F.relu(_bn(y, _norm(self.depthwise), hidden))
        y = F.conv2d(y, _conv(self.project).weight[:, :hidden])
        y = _bn(y, _norm(self.project), self.cout)
        return x + y if self.residual else y

    def extract(self, hidden: int, kernel: int) -> InvertedResidual:
        block = InvertedResidual(self.cin, hidden, self.cout, kernel, self.stride)
        _conv(block.expand).weight.data.copy_(_conv(self.expand).weight.data[:hidden])
        _copy_bn(_norm(self.expand), _norm(block.expand), hidden)
        _conv(block.depthwise).weight.data.copy_(self._dw_weight(hidden, kernel).data)
        _copy_bn(_norm(self.depthwise), _norm(block.depthwise), hidden)
        _conv(block.project).weight.data.copy_(_conv(self.project).weight.data[:, :hidden])
        _copy_bn(_norm(self.project), _norm(block.project), self.cout)
        return block
