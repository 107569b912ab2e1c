"""TPE specifics: the Optuna sampler's settings and how told results reach its study."""

from __future__ import annotations

import pytest
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from search import Bound, OptunaStrategy, SearchSpace, TPEStrategy, create_strategy


def small_space() -> SearchSpace:
    return SearchSpace({"a": [0, 1, 2], "b": [0, 1, 2], "c": [0, 1, 2]})


def measure(arch: dict) -> dict[str, float]:
    return {"x": float(arch["a"] + arch["b"]), "y": float(arch["c"] - arch["a"])}


def make(budget: int = 27, **kwargs: object) -> TPEStrategy:
    strategy = create_strategy(
        "tpe",
        space=small_space(),
        objectives={"x": "min", "y": "max"},
        constraints={"x": Bound(max=3)},
        budget=budget,
        **kwargs,
    )
    assert isinstance(strategy, TPEStrategy)
    return strategy


def test_tpe_shares_the_optuna_base_with_nsga2() -> None:
    strategy = make()
    assert isinstance(strategy, OptunaStrategy)
    assert isinstance(strategy.study.sampler, TPESampler)


def test_default_startup_trials_follow_budget() -> None:
    assert make(budget=20).n_startup_trials == 4
    assert make(budget=500).n_startup_trials == 10


def test_replayed_and_asked_results_carry_constraints() -> None:
    strategy = make()
    archs = list(small_space().enumerate())
    for arch in archs[:5]:  # replay: trials added without an ask
        strategy.tell(arch, measure(arch))
    while batch := strategy.ask(2):
        for arch in batch:
            strategy.tell(arch, measure(arch))
    trials = strategy.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) >= 27
    assert all("x:max" in t.constraints for t in trials)
    by_params = {tuple(t.params.values()): t for t in trials}
    for arch, metrics in strategy.history:
        trial = by_params[tuple(arch.values())]
        assert trial.values == [metrics["x"], metrics["y"]]
        assert (trial.constraints["x:max"] > 0) == (metrics["x"] > 3)


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_startup_trials", -1), ("n_ei_candidates", 0), ("multivariate", 1), ("max_retries", 0)],
)
def test_options_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as excinfo:
        make(**{field: value})
    assert getattr(excinfo.value, "field", None) == field
