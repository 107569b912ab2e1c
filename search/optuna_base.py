"""Shared plumbing for strategies that delegate proposals to an Optuna sampler.

One in-memory Optuna study holds one trial per told result; subclasses only choose the sampler
(:meth:`OptunaStrategy._make_sampler`) and, if their sampler needs it, the system attributes a
replayed result carries (:meth:`OptunaStrategy._replay_system_attrs`).
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import Trial, TrialState, create_trial

from search.base import Strategy
from search.constraints import Constraints, Objectives, check_int, constraint_values
from search.space import Arch, SearchSpace

__all__ = ["OptunaStrategy"]

# Optuna logs every finished trial at INFO; a search service has its own progress reporting.
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=ExperimentalWarning)

_DIRECTIONS = {"min": StudyDirection.MINIMIZE, "max": StudyDirection.MAXIMIZE}


class OptunaStrategy(Strategy):
    """A :class:`~search.base.Strategy` whose proposals come from an Optuna sampler.

    Call order and identity rules as :class:`~search.base.Strategy`. Each gene is a categorical
    parameter over its choice *indices* (raw values may be floats or mixed types, which Optuna's
    categorical handling does not need to see).

    - Duplicates: when Optuna proposes a key already told, that Optuna trial is completed at
      once with the stored metrics (no new measurement) and Optuna is asked again; a proposal
      equal to a pending key is marked FAIL (it has no values yet). After ``max_retries``
      duplicates in a row, a uniform unseen architecture is proposed instead.
    - Replays and warm starts (tell without ask) become completed trials through
      ``optuna.trial.create_trial`` + ``study.add_trial``, with the system attributes
      :meth:`_replay_system_attrs` gives them.
    - Constraints: every bound side becomes one Optuna constraint value (signed relative
      slack, > 0 violated) stored with ``Trial.set_constraint`` / ``create_trial(constraints=)``,
      i.e. under the ``"constraints:<name>"`` system attributes that Optuna 5's samplers read
      (the samplers' ``constraints_func`` argument is deprecated since Optuna 5.0).
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
        max_retries: int = 32,
    ) -> None:
        super().__init__(
            space=space,
            objectives=objectives,
            constraints=constraints,
            seed=seed,
            budget=budget,
            initial=initial,
        )
        self.max_retries = check_int(max_retries, "max_retries", 1)
        self._distributions: dict[str, BaseDistribution] = {
            name: CategoricalDistribution(list(range(len(space.choices(name)))))
            for name in space.names
        }
        self._trials: dict[str, Trial] = {}  # pending key -> its open Optuna trial
        self._study: optuna.Study | None = None

    @abc.abstractmethod
    def _make_sampler(self) -> BaseSampler:
        """The sampler of this strategy's study (called once, after the constructor)."""

    def _replay_system_attrs(self) -> dict[str, Any]:
        """System attributes of a result told without an open trial (none by default)."""
        return {}

    @property
    def study(self) -> optuna.Study:
        """The in-memory study; created lazily so that subclass options are set first."""
        if self._study is None:
            self._study = optuna.create_study(
                directions=[_DIRECTIONS[sense] for sense in self.objectives.values()],
                sampler=self._make_sampler(),
            )
        return self._study

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
            trial = self.study.ask(self._distributions)
            arch = self.space.from_indices([trial.params[name] for name in self.space.names])
            key = self.space.key(arch)
            stored = self._told_metrics(key)
            if stored is not None:
                self._complete(trial, stored)
            elif key in taken or self._is_seen(key):
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                taken.add(key)
                self._trials[key] = trial
                return arch
        fallback = self._sample_unseen(1, taken)
        return fallback[0] if fallback else None

    def _complete(self, trial: Trial, metrics: dict[str, float]) -> None:
        for name, value in constraint_values(metrics, self.constraints).items():
            trial.set_constraint(name, value)
        self.study.tell(trial, [metrics[name] for name in self.objectives])

    def _on_fail(self, key: str, arch: Arch, was_asked: bool) -> None:
        trial = self._trials.pop(key, None)
        if trial is not None:  # its Optuna trial failed too: the sampler learns nothing of it
            self.study.tell(trial, state=TrialState.FAIL)

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
            system_attrs=self._replay_system_attrs(),
        )
        self.study.add_trial(frozen)
