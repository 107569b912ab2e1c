"""NSGA-II through Optuna's ``NSGAIISampler``, driven by Optuna's ask/tell API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from optuna.samplers import BaseSampler, NSGAIISampler
from optuna.trial import TrialState

from search.base import register_strategy
from search.constraints import Constraints, Objectives, check_int
from search.optuna_base import OptunaStrategy
from search.space import SearchSpace

__all__ = ["NSGA2Strategy"]


@register_strategy("nsga2")
class NSGA2Strategy(OptunaStrategy):
    """Multi-objective genetic search (NSGA-II) with constrained domination.

    Call order and identity rules as :class:`~search.base.Strategy`; duplicates, replays and
    constraints are handled as :class:`~search.optuna_base.OptunaStrategy` describes. Replayed
    results are tagged with the generation Optuna would have given them so that NSGA-II's
    populations include them. Optuna's constrained domination matches ours: feasible first,
    then smaller violation.

    The ``initial`` architectures (:class:`~search.base.Strategy`) are told as replays, part
    of the first generation.

    ``population_size`` defaults to ``min(20, max(4, budget // 4))``: NSGA-II needs several
    generations to improve on its random first generation, so a small budget gets a small
    population (at least 4 so that crossover has a choice of parents and crowding distance
    means something); 20 caps it because hardware measurements are expensive and typical
    budgets are a few hundred evaluations, giving 10+ generations.
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
        population_size: int | None = None,
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
        if population_size is None:
            population_size = min(20, max(4, self.budget // 4))
        self.population_size = check_int(population_size, "population_size", 2)

    def _make_sampler(self) -> BaseSampler:
        return NSGAIISampler(population_size=self.population_size, seed=self.seed)

    def _replay_system_attrs(self) -> dict[str, Any]:
        return {NSGAIISampler._get_generation_key(): self._next_generation()}

    def _next_generation(self) -> int:
        """The generation Optuna's BaseGASampler.get_trial_generation would assign now.

        Same rule (fill the newest generation up to ``population_size`` completed trials, then
        open the next); without the tag an added trial would belong to no population at all.
        """
        key = NSGAIISampler._get_generation_key()
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        generations = [t.system_attrs.get(key, -1) for t in done]
        newest = max([0, *generations])
        count = sum(1 for g in generations if g == newest)
        return newest if count < self.population_size else newest + 1
