"""NSGA-II through Optuna's ``NSGAIISampler``, driven by Optuna's ask/tell API."""

from __future__ import annotations

import warnings

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import NSGAIISampler
from optuna.study import StudyDirection
from optuna.trial import Trial, TrialState, create_trial

from core.errors import InvalidInput
from search.base import Strategy, register_strategy
from search.constraints import Constraints, Objectives, constraint_values
from search.space import Arch, SearchSpace

__all__ = ["NSGA2Strategy"]

# Optuna logs every finished trial at INFO; a search service has its own progress reporting.
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=ExperimentalWarning)

_DIRECTIONS = {"min": StudyDirection.MINIMIZE, "max": StudyDirection.MAXIMIZE}


@register_strategy("nsga2")
class NSGA2Strategy(Strategy):
    """Multi-objective genetic search (NSGA-II) with constrained domination.

    Call order and identity rules as :class:`~search.base.Strategy`. Internally one in-memory
    Optuna study holds one trial per told result; each gene is a categorical parameter over
    its choice *indices* (raw values may be floats or mixed types, which Optuna's categorical
    crossover does not need to see).

    - Duplicates: when Optuna proposes a key already told, that Optuna trial is completed at
      once with the stored metrics (no new measurement) and Optuna is asked again; a proposal
      equal to a pending key is marked FAIL (it has no values yet). After ``max_retries``
      duplicates in a row, a uniform unseen architecture is proposed instead.
    - Replays and warm starts (tell without ask) become completed trials through
      ``optuna.trial.create_trial`` + ``study.add_trial``, tagged with the generation Optuna
      would have given them so that NSGA-II's populations include them.
    - Constraints: every bound side becomes one Optuna constraint value (signed relative
      slack, > 0 violated) stored with ``Trial.set_constraint`` / ``create_trial(constraints=)``,
      i.e. under the ``"constraints:<name>"`` system attributes that NSGAIISampler reads. The
      sampler's ``constraints_func`` argument is deprecated since Optuna 5.0 and is not used.
      Optuna's constrained domination matches ours: feasible first, then smaller violation.

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
        population_size: int | None = None,
        max_retries: int = 32,
    ) -> None:
        super().__init__(
            space=space, objectives=objectives, constraints=constraints, seed=seed, budget=budget
        )
        if population_size is None:
            population_size = min(20, max(4, budget // 4))
        if isinstance(population_size, bool) or not isinstance(population_size, int):
            raise InvalidInput("population_size must be an int", field="population_size")
        if population_size < 2:
            raise InvalidInput("population_size must be >= 2", field="population_size")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 1:
            raise InvalidInput("max_retries must be an int >= 1", field="max_retries")
        self.population_size = population_size
        self.max_retries = max_retries
        self._distributions: dict[str, BaseDistribution] = {
            name: CategoricalDistribution(list(range(len(space.choices(name)))))
            for name in space.names
        }
        self._study = optuna.create_study(
            directions=[_DIRECTIONS[sense] for sense in self.objectives.values()],
            sampler=NSGAIISampler(population_size=population_size, seed=seed),
        )
        self._trials: dict[str, Trial] = {}  # pending key -> its open Optuna trial

    def _propose(self, n: int) -> list[Arch]:
        taken: set[str] = set()
        out: list[Arch] = []
        for _ in range(n):
            arch = self._propose_one(taken)
            if arch is None:
                break
            out.append(arch)
        return out

    def _propose_one(self, taken: set[str]) -> Arch | None:
        for _ in range(self.max_retries):
            trial = self._study.ask(self._distributions)
            arch = self.space.from_indices([trial.params[name] for name in self.space.names])
            key = self.space.key(arch)
            stored = self._told_metrics(key)
            if stored is not None:
                self._complete(trial, stored)
            elif key in taken or self._is_seen(key):
                self._study.tell(trial, state=TrialState.FAIL)
            else:
                taken.add(key)
                self._trials[key] = trial
                return arch
        fallback = self._sample_unseen(1, taken)
        return fallback[0] if fallback else None

    def _complete(self, trial: Trial, metrics: dict[str, float]) -> None:
        for name, value in constraint_values(metrics, self.constraints).items():
            trial.set_constraint(name, value)
        self._study.tell(trial, [metrics[name] for name in self.objectives])

    def _on_tell(self, key: str, arch: Arch, metrics: dict[str, float], was_asked: bool) -> None:
        trial = self._trials.pop(key, None)
        if trial is not None:
            self._complete(trial, metrics)
            return
        # Replay, warm start, or a random fallback proposal: no Optuna trial is open for it.
        indices = self.space.to_indices(arch)
        frozen = create_trial(
            params=dict(zip(self.space.names, indices, strict=True)),
            distributions=self._distributions,
            values=[metrics[name] for name in self.objectives],
            constraints=constraint_values(metrics, self.constraints) or None,
            system_attrs={NSGAIISampler._get_generation_key(): self._next_generation()},
        )
        self._study.add_trial(frozen)

    def _next_generation(self) -> int:
        """The generation Optuna's BaseGASampler.get_trial_generation would assign now.

        Same rule (fill the newest generation up to ``population_size`` completed trials, then
        open the next); without the tag an added trial would belong to no population at all.
        """
        key = NSGAIISampler._get_generation_key()
        done = self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        generations = [t.system_attrs.get(key, -1) for t in done]
        newest = max([0, *generations])
        count = sum(1 for g in generations if g == newest)
        return newest if count < self.population_size else newest + 1
