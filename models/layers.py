"""Building blocks: static layers for extracted sub-networks and their elastic twins.

An elastic layer holds the weights of its largest configuration and runs any smaller one by
slicing: the first ``hidden`` channels, and the centre ``k x k`` of the largest kernel
(Once-for-All's weight sharing, without its kernel-transform matrices). ``extract`` copies the
active slice into a static layer, so an extracted sub-network holds only the active weights.
"""

from __future__ import annotations

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
        x, rm, rv, bn.weight[:channels], bn.bias[:channels],
        bn.training, bn.momentum if bn.momentum is not None else 0.1, bn.eps,
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
        w = self.depthwise[0].weight
        return w[:hidden, :, start : start + kernel, start : start + kernel]

    def forward(self, x: torch.Tensor, hidden: int, kernel: int) -> torch.Tensor:
        y = F.conv2d(x, self.expand[0].weight[:hidden])
        y = F.relu(_bn(y, self.expand[1], hidden))
        w = self._dw_weight(hidden, kernel)
        y = F.conv2d(y, w, None, self.stride, kernel // 2, 1, hidden)
        y = F.relu(_bn(y, self.depthwise[1], hidden))
        y = F.conv2d(y, self.project[0].weight[:, :hidden])
        y = _bn(y, self.project[1], self.cout)
        return x + y if self.residual else y

    def extract(self, hidden: int, kernel: int) -> InvertedResidual:
        block = InvertedResidual(self.cin, hidden, self.cout, kernel, self.stride)
        block.expand[0].weight.data.copy_(self.expand[0].weight.data[:hidden])
        _copy_bn(self.expand[1], block.expand[1], hidden)
        block.depthwise[0].weight.data.copy_(self._dw_weight(hidden, kernel).data)
        _copy_bn(self.depthwise[1], block.depthwise[1], hidden)
        block.project[0].weight.data.copy_(self.project[0].weight.data[:, :hidden])
        _copy_bn(self.project[1], block.project[1], self.cout)
        return block
