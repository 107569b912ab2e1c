"""Weight-sharing training with the sandwich rule and in-place distillation (BigNAS/OFA).

Each step trains the largest network on the labels, then the smallest and two random
sub-networks on the largest's soft predictions. Gradients of all four accumulate into the
shared weights before one optimiser step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Arch


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 0.1
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    random_subnets: int = 2
    seed: int = 0


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (one per batch) and per-sample horizontal flips."""
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
    x = torch.roll(F.pad(x, (2, 2, 2, 2)), shifts=(dy, dx), dims=(2, 3))[..., 2:-2, 2:-2]
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)


def train_supernet(
    module: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    largest: Arch,
    smallest: Arch,
    sample: Callable[[random.Random], Arch],
    config: TrainConfig,
    log: Callable[[str], None] = print,
) -> None:
    """Train ``module`` (called as ``module(x, arch)``) in place on normalised ``images``."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.SGD(
        module.parameters(),
        lr=config.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    total = config.epochs * steps_per_epoch
    step = 0
    module.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(images), generator=generator).to(images.device)
        running = 0.0
        for start in range(0, len(images), config.batch_size):
            lr = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
            for group in optimiser.param_groups:
                group["lr"] = lr
            idx = order[start : start + config.batch_size]
            x, y = augment(images[idx], generator), labels[idx]
            optimiser.zero_grad(set_to_none=True)
            logits = module(x, largest)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            loss.backward()
            teacher = F.softmax(logits.detach(), dim=1)
            students = [smallest] + [sample(rng) for _ in range(config.random_subnets)]
            for arch in students:
                out = F.log_softmax(module(x, arch), dim=1)
                F.kl_div(out, teacher, reduction="batchmean").backward()
            optimiser.step()
            running += loss.item()
            step += 1
        log(f"epoch {epoch + 1}/{config.epochs} loss(largest) {running / steps_per_epoch:.4f}")
