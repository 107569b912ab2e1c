"""One suite every registered strategy must pass (in the spirit of optuna's sampler tests)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from core.errors import InvalidInput, UnknownName
from search import (
    Bound,
    Objectives,
    SearchSpace,
    Strategy,
    create_strategy,
    feasible_front,
    is_feasible,
    list_strategies,
)

OBJECTIVES: Objectives = {"acc": "max", "lat": "min"}
MEM_CAP = {"mem": Bound(max=3)}
WEIGHTS = np.array([1.0, 0.8, 0.6, 0.4, 0.2])

Metrics = dict[str, float]


def toy_space(genes: int = 5, choices: int = 4) -> SearchSpace:
    return SearchSpace({f"g{i}": [16 * (c + 1) for c in range(choices)] for i in range(genes)})


def toy_metrics(space: SearchSpace) -> Callable[[dict], Metrics]:
    """Cheap deterministic objectives: accuracy and latency grow together; memory is capped."""

    def measure(arch: dict) -> Metrics:
        idx = np.zeros(5)
        idx[: len(space.names)] = space.to_indices(arch)
        return {
            "acc": float(WEIGHTS @ idx + 0.3 * idx[0] * idx[4]),
            "lat": float(idx.sum() + 0.5 * idx[1]),
            "mem": float(idx[0] + idx[2] + idx[4]),
        }

    return measure


def make(name: str, space: SearchSpace, *, seed: int = 0, budget: int = 40) -> Strategy:
    return create_strategy(
        name, space=space, objectives=OBJECTIVES, constraints=MEM_CAP, seed=seed, budget=budget
    )


def drive(strategy: Strategy, batch: int = 4) -> list[dict]:
    """Ask/measure/tell until ask returns []; returns every proposal in order."""
    measure = toy_metrics(strategy.space)
    proposals: list[dict] = []
    while batch_archs := strategy.ask(batch):
        for arch in batch_archs:
            proposals.append(arch)
            strategy.tell(arch, measure(arch))
    return proposals


parametrize_strategies = pytest.mark.parametrize("name", list_strategies())


def test_builtin_strategies_are_registered() -> None:
    assert {"random", "nsga2"} <= set(list_strategies())


@parametrize_strategies
def test_same_seed_same_proposals(name: str) -> None:
    space = toy_space()
    first = drive(make(name, space, seed=7))
    second = drive(make(name, space, seed=7))
    assert first == second


@parametrize_strategies
def test_numpy_integers_are_seeds_and_budgets_as_ints_are(name: str) -> None:
    """A researcher looping over ``np.arange`` was refused (research audit 31)."""
    space = toy_space()
    numpy_made = make(name, space, seed=np.int64(7), budget=np.int32(40))  # type: ignore[arg-type]
    assert drive(numpy_made) == drive(make(name, space, seed=7, budget=40))
    assert type(numpy_made.seed) is int and type(numpy_made.budget) is int


@parametrize_strategies
def test_different_seeds_differ(name: str) -> None:
    space = toy_space()
    assert drive(make(name, space, seed=1)) != drive(make(name, space, seed=2))


@parametrize_strategies
def test_respects_budget(name: str) -> None:
    strategy = make(name, toy_space(), budget=30)
    proposals = drive(strategy, batch=7)
    assert len(proposals) == strategy.n_told == 30
    assert strategy.ask(5) == []


@parametrize_strategies
def test_ask_caps_at_remaining_budget_including_pending(name: str) -> None:
    strategy = make(name, toy_space(), budget=5)
    assert len(strategy.ask(3)) == 3
    assert len(strategy.ask(3)) == 2
    assert strategy.ask(1) == []


@parametrize_strategies
def test_exhausts_small_space_without_duplicates(name: str) -> None:
    space = toy_space(genes=3, choices=3)  # 27 architectures: duplicates would be likely
    strategy = make(name, space, budget=40)
    proposals = drive(strategy, batch=5)
    keys = [space.key(a) for a in proposals]
    assert len(keys) == len(set(keys)) == 27
    assert strategy.ask(3) == []


@parametrize_strategies
def test_no_duplicates_with_pending_proposals(name: str) -> None:
    space = toy_space(genes=3, choices=3)
    strategy = make(name, space, budget=27)
    first, second = strategy.ask(10), strategy.ask(10)
    keys = {space.key(a) for a in first + second}
    assert len(keys) == 20
    assert len(strategy.pending) == 20


@parametrize_strategies
def test_canonical_keys_deduplicate(name: str) -> None:
    def canonical(arch: dict) -> dict:
        # Block 2 is inactive at depth 1: its width does not matter.
        return {**arch, "w2": 16} if arch["depth"] == 1 else arch

    space = SearchSpace({"depth": [1, 2], "w1": [16, 32], "w2": [16, 32, 64]}, canonical=canonical)
    strategy = create_strategy(name, space=space, objectives={"acc": "max"}, budget=20)
    keys = []
    while batch := strategy.ask(3):
        for arch in batch:
            keys.append(space.key(arch))
            strategy.tell(arch, {"acc": float(arch["w1"] + arch["w2"] * (arch["depth"] - 1))})
    assert len(keys) == len(set(keys)) == 2 + 6  # depth 1: w1 only; depth 2: w1 x w2


@parametrize_strategies
def test_resume_by_replay(name: str) -> None:
    space = toy_space(genes=3, choices=3)
    measure = toy_metrics(space)
    original = make(name, space, seed=3, budget=20)
    while original.n_told < 8:
        for arch in original.ask(3):
            original.tell(arch, measure(arch))
    stored = original.history
    resumed = make(name, space, seed=3, budget=20)
    for arch, metrics in stored:
        resumed.tell(arch, metrics)
    told = {space.key(a) for a, _ in stored}
    later = drive(resumed, batch=3)
    assert not told & {space.key(a) for a in later}
    assert resumed.n_told == 20
    assert len({space.key(a) for a, _ in resumed.history}) == 20


@parametrize_strategies
def test_warm_start_tells_before_any_ask(name: str) -> None:
    space = toy_space()
    measure = toy_metrics(space)
    strategy = make(name, space, budget=12)
    warm = [space.from_indices([i % 4] * 5) for i in range(4)]
    for arch in warm:
        strategy.tell(arch, measure(arch))
    proposals = drive(strategy)
    assert len(proposals) == 8
    assert not {space.key(a) for a in warm} & {space.key(a) for a in proposals}


def ends(space: SearchSpace) -> list[dict]:
    """Every gene at its first choice, then every gene at its last."""
    return [space.from_indices([0] * len(space.names)), space.from_indices([3] * len(space.names))]


@parametrize_strategies
def test_initial_architectures_come_first_once_and_count(name: str) -> None:
    space = toy_space()
    low, high = ends(space)
    same_as_low = {g: float(v) for g, v in low.items()}  # normalises to ``low``
    strategy = create_strategy(
        name, space=space, objectives=OBJECTIVES, budget=12, initial=[low, high, same_as_low]
    )
    assert strategy.initial_left == [low, high]
    assert strategy.ask(1) == [low]  # pending: not proposed again
    assert strategy.initial_left == [high]
    strategy.tell(low, toy_metrics(space)(low))
    proposals = [low, *drive(strategy, batch=3)]
    assert proposals[:2] == [low, high]
    keys = [space.key(a) for a in proposals]
    assert len(keys) == len(set(keys)) == 12  # the budget holds the initial ones
    assert strategy.initial_left == []


@parametrize_strategies
def test_initial_architectures_told_already_are_skipped(name: str) -> None:
    space = toy_space()
    low, high = ends(space)
    measure = toy_metrics(space)
    strategy = create_strategy(
        name, space=space, objectives=OBJECTIVES, seed=5, budget=10, initial=[low, high]
    )
    strategy.tell(high, measure(high))  # a replay or a warm start holds it
    proposals = drive(strategy, batch=2)
    assert proposals[0] == low
    assert space.key(high) not in {space.key(a) for a in proposals}
    assert len(proposals) == 9


@parametrize_strategies
def test_resume_with_initial_architectures_proposes_what_the_first_run_did(name: str) -> None:
    space = toy_space(genes=3, choices=4)
    measure = toy_metrics(space)
    options = {"objectives": OBJECTIVES, "seed": 2, "budget": 15, "initial": ends(space)}
    whole = drive(create_strategy(name, space=space, **options), batch=1)
    first = create_strategy(name, space=space, **options)
    for arch in first.ask(1):  # stopped after the first anchor
        first.tell(arch, measure(arch))
    resumed = create_strategy(name, space=space, **options)
    for arch, metrics in first.history:
        resumed.tell(arch, metrics)
    assert [a for a, _ in first.history] + drive(resumed, batch=1) == whole


@parametrize_strategies
def test_tell_twice_and_bad_tells_raise(name: str) -> None:
    space = toy_space()
    strategy = make(name, space)
    arch = strategy.ask(1)[0]
    with pytest.raises(InvalidInput, match="mem"):
        strategy.tell(arch, {"acc": 1.0, "lat": 1.0})
    strategy.tell(arch, toy_metrics(space)(arch))
    with pytest.raises(InvalidInput, match="already told"):
        strategy.tell(arch, toy_metrics(space)(arch))
    with pytest.raises(InvalidInput) as excinfo:
        strategy.tell({**arch, "g0": 17}, toy_metrics(space)(arch))
    assert excinfo.value.field == "g0"


@parametrize_strategies
def test_hints_count_for_nothing_and_their_architectures_stay_open(name: str) -> None:
    # Every architecture of a small space hinted with its accuracy alone: the strategy still
    # measures its whole budget, may propose hinted architectures, and the front holds only
    # what was told.
    space = toy_space(genes=3, choices=3)
    measure = toy_metrics(space)
    strategy = make(name, space, budget=27)
    cells = [space.from_indices(list(c)) for c in np.ndindex(3, 3, 3)]
    for arch in cells:
        kept = strategy.hint(arch, {"acc": measure(arch)["acc"], "unused": 1.0})
        assert kept is strategy.uses_hints
    assert (strategy.n_told, strategy.remaining, strategy.front()) == (0, 27, [])
    proposals = drive(strategy, batch=3)
    assert len({space.key(a) for a in proposals}) == 27 == strategy.n_told


@parametrize_strategies
def test_bad_hints_raise_and_hints_of_unused_metrics_are_ignored(name: str) -> None:
    space = toy_space()
    strategy = make(name, space)
    arch = space.from_indices([0] * 5)
    with pytest.raises(InvalidInput, match="acc"):
        strategy.hint(arch, {"acc": float("nan")})
    with pytest.raises(InvalidInput, match="mapping"):
        strategy.hint(arch, [("acc", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as excinfo:
        strategy.hint({**arch, "g0": 17}, {"acc": 1.0})
    assert excinfo.value.field == "g0"
    assert strategy.hint(arch, {"energy": 3.0}) is False  # no metric of this search
    assert strategy.remaining == 40 and not strategy.is_told(arch)


@parametrize_strategies
def test_constrained_front_is_feasible_and_non_empty(name: str) -> None:
    strategy = make(name, toy_space(), budget=40)
    drive(strategy)
    front = strategy.front()
    assert front
    assert all(is_feasible(m, MEM_CAP) for _, m in front)
    metrics = [m for _, m in strategy.history]
    assert len(feasible_front(metrics, OBJECTIVES, MEM_CAP)) == len(front)


def _late_feasible_fraction(name: str, seed: int) -> float:
    strategy = make(name, toy_space(), seed=seed, budget=80)
    proposals = drive(strategy, batch=8)
    measure = toy_metrics(strategy.space)
    return float(np.mean([is_feasible(measure(a), MEM_CAP) for a in proposals[40:]]))


def test_nsga2_learns_the_constraint_better_than_random() -> None:
    # Deterministic (seeded); measured margin is about 0.64 vs 0.30 over six seeds.
    seeds = range(4)
    nsga2 = np.mean([_late_feasible_fraction("nsga2", s) for s in seeds])
    random = np.mean([_late_feasible_fraction("random", s) for s in seeds])
    assert nsga2 > random + 0.15


def test_unknown_strategy_lists_known_ones() -> None:
    with pytest.raises(UnknownName) as excinfo:
        create_strategy("annealing", space=toy_space(), objectives=OBJECTIVES, budget=4)
    assert excinfo.value.field == "strategy"
    assert "nsga2" in str(excinfo.value) and "random" in str(excinfo.value)


@parametrize_strategies
@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("budget", {"budget": 0}),
        ("budget", {"budget": 2.5}),
        ("seed", {"seed": -1}),
        ("seed", {"seed": True}),
        ("seed", {"seed": np.bool_(True)}),
        ("budget", {"budget": np.float64(3.0)}),
        ("space", {"space": {"g0": [1, 2]}}),
        ("objectives", {"objectives": {}}),
        ("objectives", {"objectives": {"acc": "maximize"}}),
        ("constraints", {"constraints": {"mem": 3}}),
        ("initial", {"initial": {"g0": 16}}),
        ("initial", {"initial": [3]}),
        ("initial", {"initial": [{"g0": 999}]}),
    ],
)
def test_bad_constructor_args_name_the_argument(name: str, field: str, overrides: dict) -> None:
    kwargs = {"space": toy_space(), "objectives": OBJECTIVES, "budget": 10, **overrides}
    with pytest.raises(ValueError, match=field) as excinfo:
        create_strategy(name, **kwargs)
    assert getattr(excinfo.value, "field", None) == field


def test_nsga2_population_size_is_validated() -> None:
    with pytest.raises(ValueError, match="population_size"):
        create_strategy(
            "nsga2", space=toy_space(), objectives=OBJECTIVES, budget=10, population_size=1
        )


@pytest.mark.parametrize(
    ("name", "option"),
    [("nsga2", "population_size"), ("tpe", "n_startup_trials"), ("tpe", "n_ei_candidates"),
     ("linas", "n_initial"), ("linas", "pool_size")],
)  # fmt: skip
def test_numpy_integers_are_options_as_ints_are(name: str, option: str) -> None:
    """Review 31: seeds and budgets took them, these options did not."""
    kwargs = {"space": toy_space(), "objectives": OBJECTIVES, "budget": 10}
    strategy = create_strategy(name, **kwargs, **{option: np.int64(4)})
    assert getattr(strategy, option) == 4 and type(getattr(strategy, option)) is int
    with pytest.raises(InvalidInput, match=option):
        create_strategy(name, **kwargs, **{option: True})


@parametrize_strategies
def test_ask_rejects_negative_n(name: str) -> None:
    with pytest.raises(ValueError, match="n must"):
        make(name, toy_space()).ask(-1)


@parametrize_strategies
def test_an_initial_architecture_that_cannot_be_measured_is_told_as_failed(name: str) -> None:
    space = toy_space()
    low, high = ends(space)
    strategy = create_strategy(
        name, space=space, objectives=OBJECTIVES, budget=6, initial=[low, high]
    )
    assert strategy.ask(1) == [low]
    assert strategy.is_initial(low) and not strategy.is_initial(space.from_indices([1] * 5))
    strategy.tell_failed(low)  # its measurement failed
    assert strategy.pending == [] and strategy.remaining == 6 and strategy.n_failed == 1
    assert strategy.initial_left == [high]
    strategy.tell_failed(low)  # again: nothing
    assert strategy.n_failed == 1
    proposals = drive(strategy)
    assert proposals[0] == high and len(proposals) == 6
    assert space.key(low) not in {space.key(a) for a in proposals}


def _drive_failing(strategy: Strategy, fails: Callable[[str], bool]) -> list[dict]:
    """As ``drive``, telling ``fails(key)`` proposals as failed; every proposal in order."""
    space, measure = strategy.space, toy_metrics(strategy.space)
    proposals: list[dict] = []
    while batch := strategy.ask(3):
        for arch in batch:
            proposals.append(arch)
            if fails(space.key(arch)):
                strategy.tell_failed(arch)
            else:
                strategy.tell(arch, measure(arch))
    return proposals


@parametrize_strategies
def test_failed_proposals_are_never_proposed_again_and_cost_no_budget(name: str) -> None:
    space = toy_space(genes=3, choices=3)  # 27 architectures: every one is proposed
    failing = {
        space.key(space.from_indices(list(idx))) for idx in [(0, 1, 2), (2, 2, 2), (1, 0, 0)]
    }
    strategy = make(name, space, budget=30)
    proposals = _drive_failing(strategy, failing.__contains__)
    keys = [space.key(a) for a in proposals]
    assert len(keys) == len(set(keys)) == 27  # each failed one proposed once, then never
    assert strategy.n_told == 24 and strategy.n_failed == 3
    assert not failing & {space.key(a) for a, _ in strategy.history}
    budgeted = make(name, space, budget=10)
    _drive_failing(budgeted, failing.__contains__)
    assert budgeted.n_told == 10  # the failures did not take results' places
    with pytest.raises(InvalidInput, match="already told"):
        budgeted.tell_failed(budgeted.history[0][0])


@parametrize_strategies
def test_proposals_a_screen_knows_to_break_a_constraint_are_never_asked(name: str) -> None:
    """Multi-objective audit 33: a job measured 13 of its 20 proposals to find them
    infeasible by MACs and params, counted for free. With ``screen_with`` such a proposal
    is passed over: not asked, never again, no budget; the rest of the space is asked."""
    space = toy_space(genes=3, choices=3)  # 27 architectures
    measure = toy_metrics(space)

    def known(arch: dict) -> Metrics:
        return {"mem": measure(arch)["mem"]}

    breaking = {space.key(a) for a in space.enumerate() if known(a)["mem"] > 3}
    strategy = make(name, space, budget=27)
    strategy.screen_with(known)
    proposals = drive(strategy, batch=3)
    keys = [space.key(a) for a in proposals]
    assert len(keys) == len(set(keys)) == 27 - len(breaking)
    assert not breaking & set(keys) and strategy.n_screened == len(breaking)
    assert all(is_feasible(m, MEM_CAP) for _, m in strategy.history)
    budgeted = make(name, space, budget=6)
    budgeted.screen_with(known)
    assert len(drive(budgeted, batch=2)) == 6  # passing over costs no budget


@parametrize_strategies
def test_a_screen_that_breaks_everything_lets_proposals_through_after_its_limit(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import search.base

    monkeypatch.setattr(search.base, "SCREEN_MAX", 4)
    space = toy_space(genes=3, choices=3)
    strategy = make(name, space, budget=5)
    strategy.screen_with(lambda arch: {"mem": 99.0})  # nothing meets mem <= 3
    first = strategy.ask(2)
    assert len(first) == 2 and strategy.n_screened == 4  # the search goes on, measured


@parametrize_strategies
def test_a_resumed_search_told_its_failures_does_not_propose_them(name: str) -> None:
    space = toy_space(genes=3, choices=3)
    first = make(name, space, seed=5, budget=27)
    failed = first.ask(4)
    for arch in failed:
        first.tell_failed(arch)
    resumed = make(name, space, seed=5, budget=27)
    for arch in failed:
        resumed.tell_failed(arch)  # without an ask: a resumed job's record
    later = drive(resumed, batch=4)
    assert len(later) == 23 and resumed.n_failed == 4
    assert not {space.key(a) for a in failed} & {space.key(a) for a in later}


@pytest.mark.parametrize("name", ["nsga2", "tpe"])
def test_an_optuna_trial_whose_measurement_failed_is_failed_in_the_study(name: str) -> None:
    from optuna.trial import TrialState

    strategy = make(name, toy_space(), budget=6)
    [arch] = strategy.ask(1)
    strategy.tell_failed(arch)
    states = [t.state for t in strategy.study.trials]  # type: ignore[attr-defined]
    assert TrialState.RUNNING not in states and states[-1] == TrialState.FAIL
