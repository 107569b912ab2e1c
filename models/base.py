"""The supernet protocol every supernet in hwnas implements (built-in or plugin).

Call order for one architecture: ``canonical`` -> ``encode`` (the de-duplication key) ->
``complexity`` (cheap, no model built) -> ``extract`` (a standalone module with only the
active weights, ready for inference) -> ``evaluate`` on that module -> ``example_input`` for
latency measurement and export. Implementations must be deterministic: the same
architecture always extracts to the same weights, so a measured accuracy is reproducible
from an exported file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

Arch = dict[str, Any]


@dataclass(frozen=True)
class Complexity:
    """Multiply-accumulates and parameters of one sub-network at batch size 1."""

    macs: int
    params: int


@dataclass(frozen=True)
class InputSpec:
    """What an exported sub-network expects: shape (batch 1) and how to preprocess."""

    shape: tuple[int, ...]
    mean: float
    std: float
    layout: str = "NCHW"


class Supernet(ABC):
    """A weight-sharing supernet: a search space and the means to measure its members."""

    name: ClassVar[str]
    #: Metrics ``evaluate`` returns (besides macs/params, which ``complexity`` gives).
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    #: True for table-backed supernets (see ``models.recorded``): nothing to extract or run.
    recorded: ClassVar[bool] = False

    @abstractmethod
    def space(self) -> dict[str, list[Any]]:
        """Gene name -> allowed choices, in a stable order."""

    @abstractmethod
    def canonical(self, arch: Arch) -> Arch:
        """The same architecture with genes that have no effect set to a fixed value."""

    @abstractmethod
    def encode(self, arch: Arch) -> str:
        """Compact, documented string for ``arch``; equal strings mean equal networks."""

    @abstractmethod
    def decode(self, encoding: str) -> Arch:
        """Inverse of ``encode`` (returns a canonical architecture)."""

    @abstractmethod
    def complexity(self, arch: Arch) -> Complexity:
        """MACs and params, computed without building the model."""

    @abstractmethod
    def extract(self, arch: Arch) -> nn.Module:
        """A standalone module holding only the active weights, in eval mode."""

    @abstractmethod
    def evaluate(self, arch: Arch, module: nn.Module | None = None) -> dict[str, float]:
        """Measured quality metrics (e.g. accuracy in [0, 1]) on the validation data."""

    @abstractmethod
    def input_spec(self, arch: Arch) -> InputSpec:
        """Input shape and preprocessing of the extracted sub-network."""

    def example_input(self, arch: Arch, batch_size: int = 1) -> torch.Tensor:
        """A deterministic input of the right shape, for latency measurement and export."""
        shape = (batch_size, *self.input_spec(arch).shape[1:])
        generator = torch.Generator().manual_seed(0)
        return torch.randn(shape, generator=generator)

    def describe(self) -> dict[str, Any]:
        """Public summary: name, genes and their choices, search-space size."""
        space = self.space()
        size = 1
        for choices in space.values():
            size *= len(choices)
        return {"name": self.name, "space": space, "genes": len(space), "raw_space_size": size}
