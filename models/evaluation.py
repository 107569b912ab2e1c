"""Weight-shared evaluation: BatchNorm recalibration and top-1 accuracy."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(module: nn.Module, calib: torch.Tensor, batch_size: int = 100) -> None:
    """Re-estimate BatchNorm running statistics on ``calib`` (exact average over batches).

    Shared BN statistics belong to no single sub-network (Once-for-All recalibrates them per
    sub-network too); this makes the extracted module's statistics its own.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = exact mean over the batches
    module.train()
    for start in range(0, len(calib), batch_size):
        module(calib[start : start + batch_size])
    for bn in norms:
        bn.momentum = 0.1
    module.eval()


@torch.inference_mode()
def predict(module: nn.Module, x: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """Class predictions of ``module`` in eval mode.

    Batches of 100 keep activations in cache: on 2 CPU cores they ran 2-3x faster than 500.
    """
    module.eval()
    outputs = [module(x[s : s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)]
    return torch.cat(outputs)


def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return int((predict(module, x) == y).sum()) / len(y)
