"""The sample a calibration measures: distinct architectures, every gene drawn uniformly.

Uniform, not the search's proposals: a latency predictor fitted on it is meant to hold over
the whole space, and its cross-validated error to say how well.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar, Protocol

from core.errors import InvalidInput

from .latency_features import Arch

MAX_SAMPLES = 200  # what one calibration request may ask for (the API's limit)
# Draws per wanted architecture before giving up on finding new ones (tiny spaces).
_DRAWS_PER_SAMPLE = 50


class Sampleable(Protocol):
    """The part of ``models.base.Supernet`` sampling needs (no torch import here)."""

    name: ClassVar[str]

    def space(self) -> dict[str, list[Any]]: ...

    def canonical(self, arch: Arch) -> Arch: ...

    def encode(self, arch: Arch) -> str: ...


def sample_archs(supernet: Sampleable, n: int, seed: int) -> list[Arch]:
    """``n`` distinct canonical architectures, each gene drawn uniformly; the same for the
    same ``seed`` (a resumed calibration measures what is missing of the same sample)."""
    if n < 1:
        raise InvalidInput(f"n_samples must be at least 1, got {n}", field="n_samples")
    rng = random.Random(seed)
    space = supernet.space()
    found: dict[str, Arch] = {}
    for _ in range(n * _DRAWS_PER_SAMPLE):
        arch = supernet.canonical({gene: rng.choice(c) for gene, c in space.items()})
        found.setdefault(supernet.encode(arch), arch)
        if len(found) == n:
            return list(found.values())
    raise InvalidInput(
        f"found only {len(found)} distinct architectures of {supernet.name!r}", field="n_samples"
    )
