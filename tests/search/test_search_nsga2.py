"""NSGA-II specifics: how told results reach Optuna's study and populations."""

from __future__ import annotations

from optuna.samplers import NSGAIISampler
from optuna.trial import TrialState

from search import Bound, NSGA2Strategy, SearchSpace


def small_space() -> SearchSpace:
    return SearchSpace({"a": [0, 1, 2], "b": [0, 1, 2], "c": [0, 1, 2]})


def measure(arch: dict) -> dict[str, float]:
    return {"x": float(arch["a"] + arch["b"]), "y": float(arch["c"] - arch["a"])}


def make(budget: int = 27, population_size: int | None = None) -> NSGA2Strategy:
    return NSGA2Strategy(
        space=small_space(),
        objectives={"x": "min", "y": "max"},
        constraints={"x": Bound(max=3)},
        budget=budget,
        population_size=population_size,
    )


def test_default_population_size_follows_budget() -> None:
    assert make(budget=8).population_size == 4
    assert make(budget=60).population_size == 15
    assert make(budget=500).population_size == 20


def test_replayed_results_join_nsga2_generations() -> None:
    strategy = make(population_size=4)
    archs = list(small_space().enumerate())[:10]
    for arch in archs:
        strategy.tell(arch, measure(arch))
    key = NSGAIISampler._get_generation_key()
    trials = strategy._study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.system_attrs[key] for t in trials] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert all("constraints:x:max" in t.system_attrs for t in trials)
    assert [t.constraints["x:max"] > 0 for t in trials] == [measure(a)["x"] > 3 for a in archs]


def test_told_duplicates_complete_optuna_trials_with_stored_values() -> None:
    strategy = make()
    while batch := strategy.ask(4):
        for arch in batch:
            strategy.tell(arch, measure(arch))
    assert strategy.n_told == 27
    complete = strategy._study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 27
    by_params = {tuple(t.params.values()): t.values for t in complete}
    for arch, metrics in strategy.history:
        assert by_params[tuple(arch.values())] == [metrics["x"], metrics["y"]]
