"""Categorical search spaces and the de-duplication key of an architecture."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from core.errors import InvalidInput

Choice = int | float | str | bool
Arch = dict[str, Any]

__all__ = ["Arch", "Choice", "SearchSpace"]


def _check_choices(name: str, choices: object) -> list[Choice]:
    """Return ``choices`` as a list, or raise naming the gene."""
    if isinstance(choices, str | bytes) or not isinstance(choices, Sequence) or not choices:
        raise InvalidInput(f"gene {name!r}: choices must be a non-empty list", field="genes")
    for choice in choices:
        if not isinstance(choice, int | float | str):
            raise InvalidInput(
                f"gene {name!r}: choice {choice!r} is not an int, float, bool or str",
                field="genes",
            )
        if isinstance(choice, float) and not math.isfinite(choice):
            raise InvalidInput(f"gene {name!r}: choice {choice!r} is not finite", field="genes")
    # Choices that compare equal (1, 1.0, True) would make value -> index lookup ambiguous.
    if len(set(choices)) != len(choices):
        raise InvalidInput(f"gene {name!r}: choices {list(choices)!r} repeat", field="genes")
    return list(choices)


def _default_encode(arch: Arch) -> str:
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


class SearchSpace:
    """An ordered set of categorical genes; an architecture maps every gene to one choice.

    Build it once from ``{gene: [choices]}`` (gene order is kept; it defines index tuples), then
    call :meth:`validate` / :meth:`normalize` on incoming architectures and :meth:`key` to decide
    identity: two architectures with the same key are the same architecture.

    ``canonical`` (given by the supernet) maps a normalised architecture to its canonical form,
    e.g. it resets the genes of inactive blocks; ``encode`` turns that canonical form into the
    key string (default: compact JSON with sorted keys). Both must be pure and deterministic.
    Instances are immutable and safe to share between threads.
    """

    def __init__(
        self,
        genes: Mapping[str, Sequence[Choice]],
        *,
        canonical: Callable[[Arch], Arch] | None = None,
        encode: Callable[[Arch], str] | None = None,
    ) -> None:
        if not isinstance(genes, Mapping) or not genes:
            raise InvalidInput(
                "genes must be a non-empty mapping of gene -> choices", field="genes"
            )
        self._genes: dict[str, list[Choice]] = {}
        for name, choices in genes.items():
            if not isinstance(name, str) or not name:
                raise InvalidInput(f"gene name {name!r} is not a non-empty str", field="genes")
            self._genes[name] = _check_choices(name, choices)
        if canonical is not None and not callable(canonical):
            raise InvalidInput("canonical must be callable", field="canonical")
        if encode is not None and not callable(encode):
            raise InvalidInput("encode must be callable", field="encode")
        self._index = {name: {c: i for i, c in enumerate(cs)} for name, cs in self._genes.items()}
        self._canonical = canonical
        self._encode = encode or _default_encode

    def __repr__(self) -> str:
        return f"SearchSpace({self._genes!r})"

    @property
    def names(self) -> tuple[str, ...]:
        """Gene names, in declaration order."""
        return tuple(self._genes)

    def choices(self, name: str) -> tuple[Choice, ...]:
        """The allowed choices of gene ``name``."""
        if name not in self._genes:
            raise InvalidInput(f"unknown gene {name!r}; genes: {list(self._genes)}", field=name)
        return tuple(self._genes[name])

    @property
    def size(self) -> int:
        """Number of index tuples (canonicalisation may merge some of them)."""
        return math.prod(len(cs) for cs in self._genes.values())

    def sample(self, rng: np.random.Generator) -> Arch:
        """One architecture drawn uniformly over index tuples."""
        return {name: cs[int(rng.integers(len(cs)))] for name, cs in self._genes.items()}

    def validate(self, arch: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidInput` naming the first wrong, missing or unknown gene."""
        self.to_indices(arch)

    def to_indices(self, arch: Mapping[str, Any]) -> tuple[int, ...]:
        """The choice index of every gene, in gene order."""
        if not isinstance(arch, Mapping):
            raise InvalidInput(f"architecture must be a mapping, got {arch!r}", field="arch")
        unknown = [name for name in arch if name not in self._genes]
        if unknown:
            raise InvalidInput(
                f"unknown gene {unknown[0]!r}; genes: {list(self._genes)}", field=unknown[0]
            )
        return tuple(self._index_of(name, arch) for name in self._genes)

    def _index_of(self, name: str, arch: Mapping[str, Any]) -> int:
        if name not in arch:
            raise InvalidInput(f"gene {name!r} is missing", field=name)
        value = arch[name]
        try:
            return self._index[name][value]
        except (KeyError, TypeError):  # TypeError: unhashable value
            raise InvalidInput(
                f"gene {name!r}: {value!r} is not one of {self._genes[name]!r}", field=name
            ) from None

    def from_indices(self, indices: Sequence[int]) -> Arch:
        """The architecture whose genes take the given choice indices."""
        if len(indices) != len(self._genes):
            raise InvalidInput(
                f"expected {len(self._genes)} indices, got {len(indices)}", field="indices"
            )
        arch: Arch = {}
        for (name, cs), index in zip(self._genes.items(), indices, strict=True):
            if not 0 <= int(index) < len(cs):
                raise InvalidInput(f"gene {name!r}: index {index} out of range", field=name)
            arch[name] = cs[int(index)]
        return arch

    def normalize(self, arch: Mapping[str, Any]) -> Arch:
        """A validated copy in gene order, each value replaced by the declared choice.

        This makes ``1.0`` given for a declared ``1`` (or ``True`` for ``1``) the same value.
        """
        return self.from_indices(self.to_indices(arch))

    def canonical(self, arch: Mapping[str, Any]) -> Arch:
        """The canonical form of ``arch`` (normalised, then the supernet's ``canonical``)."""
        normal = self.normalize(arch)
        return dict(self._canonical(normal)) if self._canonical else normal

    def key(self, arch: Mapping[str, Any]) -> str:
        """Deterministic identity string: equal keys mean the same architecture."""
        return self._encode(self.canonical(arch))

    def enumerate(self) -> Iterator[Arch]:
        """Every index tuple's architecture, in lexicographic index order (may repeat keys)."""
        ranges = [range(len(cs)) for cs in self._genes.values()]
        for indices in itertools.product(*ranges):
            yield self.from_indices(indices)
