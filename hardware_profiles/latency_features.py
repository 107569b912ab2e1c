"""Architecture features for latency predictors, built from the supernet protocol alone.

A predictor for one (supernet, device) sees an architecture through an :class:`ArchEncoder`:

- ``onehot``: one column per (gene, choice), 1 where the gene has that choice *and is active*.
  A gene is inactive when changing it leaves the canonical architecture unchanged (e.g. the
  kernel of a block beyond the stage's depth), so a dropped block costs nothing, as in a
  Once-for-All lookup table that only sums the blocks that run.
- ``ordinal``: the index of each active gene's choice, -1 where inactive (for tree models).
- ``complexity``: MACs and params from ``supernet.complexity`` where the supernet has them
  (free to compute, no model built); absent for recorded (table) supernets.
- ``input_size``: the number of input elements of one sample (``supernet.input_spec``), e.g.
  channels x height x width: compute in a convolutional network grows with it in every layer
  (Once-for-All's lookup tables are keyed by input size); absent for recorded supernets.

Pure numpy: no torch, no database, so a search strategy can call it in its inner loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from core.errors import InvalidInput

Arch = dict[str, Any]
FloatArray = NDArray[np.float64]

# MACs and params are rescaled to O(1) numbers before any model sees them.
_COMPLEXITY_SCALE = np.array([1e6, 1e5])


class SupernetLike(Protocol):
    """The part of ``models.base.Supernet`` the features need (no torch import here)."""

    recorded: ClassVar[bool]

    def space(self) -> dict[str, list[Any]]: ...

    def canonical(self, arch: Arch) -> Arch: ...

    def complexity(self, arch: Arch) -> Any: ...

    def input_spec(self, arch: Arch) -> Any: ...


@dataclass(frozen=True)
class Features:
    """Feature blocks of a batch of architectures (rows in input order)."""

    onehot: FloatArray
    ordinal: FloatArray
    complexity: FloatArray | None
    input_size: FloatArray | None = None

    def rows(self, index: np.ndarray) -> Features:
        """The features of the rows ``index`` (a subset, e.g. a cross-validation fold)."""
        return Features(
            self.onehot[index],
            self.ordinal[index],
            None if self.complexity is None else self.complexity[index],
            None if self.input_size is None else self.input_size[index],
        )


class ArchEncoder:
    """Turns architectures of one search space into :class:`Features`.

    ``complexity`` returns an object with ``macs`` and ``params`` (or None: no such features);
    ``input_size`` the number of input elements of one sample (or None).
    :meth:`spec` is the JSON description a stored predictor keeps, so that loading it against
    a changed search space fails loudly instead of predicting from misaligned columns.
    """

    def __init__(
        self,
        space: Mapping[str, Sequence[Any]],
        canonical: Callable[[Arch], Arch],
        complexity: Callable[[Arch], Any] | None = None,
        input_size: Callable[[Arch], float] | None = None,
    ) -> None:
        self.genes = list(space)
        self.choices = [list(space[g]) for g in self.genes]
        self.canonical = canonical
        self.complexity = complexity
        self.input_size = input_size
        self._offsets = np.cumsum([0] + [len(c) for c in self.choices])
        self._index = [{v: i for i, v in enumerate(c)} for c in self.choices]

    @classmethod
    def from_supernet(cls, supernet: SupernetLike) -> ArchEncoder:
        if supernet.recorded:
            return cls(supernet.space(), supernet.canonical)

        def input_size(arch: Arch) -> float:
            return float(np.prod(supernet.input_spec(arch).shape[1:]))

        return cls(supernet.space(), supernet.canonical, supernet.complexity, input_size)

    def spec(self) -> dict[str, Any]:
        return {
            "genes": self.genes,
            "choices": self.choices,
            "complexity": self.complexity is not None,
        }

    def check_spec(self, spec: Mapping[str, Any]) -> None:
        """Raise ``InvalidInput`` unless ``spec`` describes this encoder's features."""
        if dict(spec) != self.spec():
            raise InvalidInput(
                "the latency predictor was fitted on a different search space "
                f"(genes {spec.get('genes')}, complexity {spec.get('complexity')}); "
                "calibrate the device again",
                field="supernet",
            )

    def features(self, archs: Sequence[Arch]) -> Features:
        onehot = np.zeros((len(archs), int(self._offsets[-1])))
        ordinal = np.full((len(archs), len(self.genes)), -1.0)
        cplx = np.zeros((len(archs), 2)) if self.complexity is not None else None
        size = np.zeros(len(archs)) if self.input_size is not None else None
        for row, arch in enumerate(archs):
            canonical = self.canonical(arch)
            for g, index in self._active_choices(canonical):
                onehot[row, self._offsets[g] + index] = 1.0
                ordinal[row, g] = float(index)
            if cplx is not None and self.complexity is not None:
                c = self.complexity(canonical)
                cplx[row] = np.array([c.macs, c.params], dtype=float) / _COMPLEXITY_SCALE
            if size is not None and self.input_size is not None:
                size[row] = self.input_size(canonical)
        return Features(onehot, ordinal, cplx, size)

    def _active_choices(self, canonical: Arch) -> list[tuple[int, int]]:
        active = []
        for g, gene in enumerate(self.genes):
            value = canonical[gene]
            index = self._index[g].get(value)
            if index is None:
                raise InvalidInput(f"gene {gene!r}: {value!r} is not a choice", field="arch")
            if self._is_active(canonical, g, index):
                active.append((g, index))
        return active

    def _is_active(self, canonical: Arch, g: int, index: int) -> bool:
        choices = self.choices[g]
        if len(choices) < 2:
            return True
        other = choices[(index + 1) % len(choices)]
        return self.canonical({**canonical, self.genes[g]: other}) != canonical
