"""Uniform random search over unseen architectures: the baseline every strategy must beat."""

from __future__ import annotations

from search.base import Strategy, register_strategy
from search.space import Arch

__all__ = ["RandomStrategy"]


@register_strategy("random")
class RandomStrategy(Strategy):
    """Uniform draws over the space's index tuples, skipping keys already told or pending.

    Call order and determinism as :class:`~search.base.Strategy`. Results told do not change
    what is proposed next, except that their keys are never proposed.
    """

    def _propose(self, n: int) -> list[Arch]:
        return self._sample_unseen(n, set())
