"""Factories for the hardware_profiles tests: tiny models and fast, valid profiles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from hardware_profiles import HardwareProfile, MeasurementProtocol, get_profile

# Loose precision and a short cap: these tests check behaviour, never absolute timings.
FAST_PROTOCOL = MeasurementProtocol(
    warmup=2, min_repeats=5, max_repeats=40, target_rel_ci=0.2, time_cap_s=0.15, min_sample_ms=0.05
)


def tiny_conv_net() -> nn.Module:
    """A Fashion-MNIST-shaped conv net small enough to time in milliseconds."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


@pytest.fixture
def tiny_net() -> nn.Module:
    return tiny_conv_net()


@pytest.fixture
def example_input() -> torch.Tensor:
    return torch.randn(1, 1, 28, 28)


@pytest.fixture
def fast_profile() -> Callable[..., HardwareProfile]:
    """``fast_profile(base_id, **changes)``: a shipped profile, fast protocol, re-validated."""

    def build(base_id: str = "cpu-1t", **changes: Any) -> HardwareProfile:
        fields = get_profile(base_id).model_dump()
        fields.update(id=f"{base_id}-test", queue=None, protocol=FAST_PROTOCOL.model_dump())
        fields.update(changes)
        return HardwareProfile.model_validate(fields)

    return build
