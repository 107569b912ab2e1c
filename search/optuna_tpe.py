"""Multi-objective TPE through Optuna's ``TPESampler``, driven by Optuna's ask/tell API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from optuna.samplers import BaseSampler, TPESampler

from core.errors import InvalidInput
from search.base import register_strategy
from search.constraints import Constraints, Objectives, check_int
from search.optuna_base import OptunaStrategy
from search.space import SearchSpace

__all__ = ["TPEStrategy"]


@register_strategy("tpe")
class TPEStrategy(OptunaStrategy):
    """Tree-structured Parzen estimator (Optuna's ``TPESampler``), multi-objective capable.

    Call order and identity rules as :class:`~search.base.Strategy`; duplicates, replays and
    constraints are handled as :class:`~search.optuna_base.OptunaStrategy` describes (TPE reads
    the same ``"constraints:<name>"`` attributes as NSGA-II and ranks infeasible trials by
    their total violation). ``multivariate=True`` models the genes jointly (Optuna's
    recommended setting); pending proposals are handled by Optuna's constant liar.

    ``n_startup_trials`` (default ``min(10, max(1, budget // 5))``) random trials come first.
    The ``initial`` architectures (:class:`~search.base.Strategy`) count among them.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        objectives: Objectives,
        constraints: Constraints | None = None,
        seed: int = 0,
        budget: int,
        initial: Sequence[Mapping[str, Any]] = (),
        n_startup_trials: int | None = None,
        n_ei_candidates: int = 24,
        multivariate: bool = True,
        max_retries: int = 32,
    ) -> None:
        super().__init__(
            space=space,
            objectives=objectives,
            constraints=constraints,
            seed=seed,
            budget=budget,
            initial=initial,
            max_retries=max_retries,
        )
        if n_startup_trials is None:
            n_startup_trials = min(10, max(1, self.budget // 5))
        n_startup_trials = check_int(n_startup_trials, "n_startup_trials", 0)
        n_ei_candidates = check_int(n_ei_candidates, "n_ei_candidates", 1)
        if not isinstance(multivariate, bool):
            raise InvalidInput("multivariate must be a bool", field="multivariate")
        self.n_startup_trials = n_startup_trials
        self.n_ei_candidates = n_ei_candidates
        self.multivariate = multivariate

    def _make_sampler(self) -> BaseSampler:
        return TPESampler(
            n_startup_trials=self.n_startup_trials,
            n_ei_candidates=self.n_ei_candidates,
            multivariate=self.multivariate,
            seed=self.seed,
        )
