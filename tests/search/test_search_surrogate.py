"""The pairwise-ridge surrogate: transforms, features, leave-one-out selection, bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.errors import InvalidInput, UnknownName
from search.surrogate import (
    FeatureMap,
    PairwiseRidge,
    kendall_tau,
    normal_scores,
    predict,
    standard_scores,
)


def all_indices(genes: int = 4, choices: int = 4) -> np.ndarray:
    return np.array(list(itertools.product(range(choices), repeat=genes)))


def test_normal_scores_are_monotone_with_tied_values_tied() -> None:
    values = np.array([3.0, 10.0, -1.0, 3.0, 1e9])
    scores = normal_scores(values)
    assert scores[0] == scores[3]
    assert np.all(np.diff(scores[np.argsort(values, kind="stable")]) >= 0)
    assert scores[4] < 3  # heavy tails are tamed: a rank, not a value
    assert standard_scores(np.ones(3)).tolist() == [0.0, 0.0, 0.0]


def test_kendall_tau_extremes() -> None:
    x = np.arange(6.0)
    assert kendall_tau(x, 2 * x) == pytest.approx(1.0)
    assert kendall_tau(x, -x) == pytest.approx(-1.0)


def test_feature_map_gives_every_gene_and_pair_its_own_block() -> None:
    features = FeatureMap([2, 3, 4])
    active = features.active(all_indices(3, 2))
    assert features.n_features == 2 + 3 + 4 + 2 * 3 + 2 * 4 + 3 * 4
    assert active.shape == (8, 3 + 3)
    assert active.max() < features.n_features
    assert len({tuple(row) for row in active}) == 8
    assert FeatureMap([2, 3], interactions=False).n_active == 2


def _fit(target: np.ndarray, n: int = 120, seed: int = 0) -> tuple[PairwiseRidge, np.ndarray]:
    indices = all_indices()
    features = FeatureMap([4] * 4)
    active = features.active(indices)
    train = np.random.default_rng(seed).choice(len(indices), n, replace=False)
    model = PairwiseRidge(features)
    model.fit(active[train], target[train])
    return model, predict(model.weights(), active)


def test_additive_metric_is_learnt_linearly_and_precisely() -> None:
    indices = all_indices()
    cost = np.random.default_rng(1).uniform(0.1, 2.0, size=(4, 4))
    latency = cost[np.arange(4), indices].sum(axis=1)
    model, predictions = _fit(latency)
    assert model.report["transform"] == "linear"
    assert model.report["loo_kendall_tau"] > 0.95
    assert kendall_tau(predictions[::5], latency[::5]) > 0.95


def test_interactions_are_selected_when_the_metric_has_them() -> None:
    indices = all_indices()
    rng = np.random.default_rng(2)
    pair = rng.normal(size=(4, 4))
    # Only the combination of genes 0 and 1 matters: invisible to main effects alone.
    target = pair[indices[:, 0], indices[:, 1]] - pair.mean(axis=1)[indices[:, 0]]
    target = target - pair.mean(axis=0)[indices[:, 1]]
    model, predictions = _fit(target)
    assert model.report["interaction_share"] > 0
    assert kendall_tau(predictions[::5], target[::5]) > 0.6


def test_bounds_map_onto_the_prediction_scale_monotonically() -> None:
    indices = all_indices()
    values = indices.sum(axis=1).astype(float) ** 3  # skewed: the rank transform may win
    model, _ = _fit(values)
    scaled = [model.scale(limit) for limit in (-1.0, 10.0, 100.0, 1e6)]
    assert scaled == sorted(scaled)


def test_extra_features_are_used_when_they_explain_the_metric() -> None:
    # A per-architecture number no gene or gene pair explains, handed over as a free feature
    # (as MACs would be): the LOO selection gives it a share and predictions follow it.
    indices = all_indices()
    rng = np.random.default_rng(3)
    free = rng.normal(size=len(indices))
    target = 2.0 * free + 0.1 * indices[:, 0]
    features = FeatureMap([4] * 4)
    active = features.active(indices)
    train = rng.choice(len(indices), 80, replace=False)
    model = PairwiseRidge(features)
    model.fit(active[train], target[train], extra=free[train, None])
    assert model.report["extra_share"] > 0
    assert model.report["loo_kendall_tau"] > 0.8
    predictions = model.predict(active, free[:, None])
    assert kendall_tau(predictions[::3], target[::3]) > 0.8
    with pytest.raises(ValueError, match="extra"):
        model.predict(active)  # fitted with extra features: candidates need them too

    plain = PairwiseRidge(features)
    plain.fit(active[train], target[train])
    assert plain.report["extra_share"] == 0.0
    assert kendall_tau(plain.predict(active)[::3], target[::3]) < 0.5


def _fresh_fit(features: FeatureMap, kept: PairwiseRidge, active: np.ndarray, values: np.ndarray,
               extra: np.ndarray | None) -> PairwiseRidge:  # fmt: skip
    """A model that has seen nothing before, with ``kept``'s hyperparameters."""
    fresh = PairwiseRidge(features)
    fresh._fit = kept._fit
    fresh.fit(active, values, extra=extra, select=False)
    return fresh


@pytest.mark.parametrize("with_extra", [False, True])
def test_a_fit_that_extends_the_last_one_equals_a_fresh_fit(
    with_extra: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Told results one at a time (the last fit's matches and factor reused), rows that
    change in the middle (hints taken away), extra features that change: each fit is what
    a model that saw nothing before gives, to rounding."""
    rng = np.random.default_rng(3)
    features = FeatureMap([3, 4, 2, 5])
    indices = rng.integers(0, [3, 4, 2, 5], (90, 4))
    values = indices @ np.array([1.0, -0.5, 0.3, 0.2]) + rng.normal(0, 0.3, 90)
    extra = rng.normal(size=(90, 2)) if with_extra else None
    import search.surrogate as surrogate

    factored: list[int] = []  # the size of each Cholesky factorisation the model did
    cholesky = surrogate.cholesky
    monkeypatch.setattr(
        surrogate, "cholesky", lambda a, **kw: (factored.append(len(a)), cholesky(a, **kw))[1]
    )
    model = PairwiseRidge(features)
    orders = [list(range(n)) for n in range(30, 60)]  # one more each time
    orders += [list(range(40)) + list(range(70, 90)), list(range(40)) + [5, 80, 81]]
    for step, rows in enumerate(orders):
        part = None if extra is None else extra[rows] * (1.0 if step < 31 else 2.0)
        model.fit(features.active(indices[rows]), values[rows], extra=part, select=step % 10 == 0)
        fresh = _fresh_fit(features, model, features.active(indices[rows]), values[rows], part)
        np.testing.assert_allclose(model.weights(), fresh.weights(), rtol=0, atol=1e-10)
        if extra is not None:
            np.testing.assert_allclose(model._extra_weights, fresh._extra_weights, atol=1e-10)
    # fresh fits factorise their n rows; the model, one more row each time, mostly 1 x 1
    assert factored.count(1) >= 20, factored


@pytest.mark.parametrize("interactions", [True, False])
def test_gene_matches_count_what_two_rows_share_from_scratch_and_extended(
    interactions: bool,
) -> None:
    """The matches (a sparse product since session 33) are the plain definition: how many
    genes, and gene pairs, two rows have equal; the rows a fit shares with the last one are
    kept, and the new ones filled in."""
    rng = np.random.default_rng(5)
    features = FeatureMap([3, 4, 2, 5, 3], interactions=interactions)
    active = features.active(rng.integers(0, [3, 4, 2, 5, 3], (40, 5)))
    genes = features.n_genes
    plain = [
        (active[:, None, cols] == active[None, :, cols]).sum(axis=2).astype(float)
        for cols in (slice(0, genes), slice(genes, None))
    ]
    model = PairwiseRidge(features)
    for got, want in zip(model._matches(active), plain, strict=True):
        np.testing.assert_array_equal(got, want)
    model.fit(active[:30], np.arange(30.0), select=False)
    for got, want in zip(model._matches(active, kept=30), plain, strict=True):
        np.testing.assert_array_equal(got, want)


def test_selection_looks_at_a_bounded_subsample_and_the_fit_at_every_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past SELECT_MAX rows the 18 inverses are of SELECT_MAX rows, not all of them."""
    import search.surrogate as surrogate

    monkeypatch.setattr(surrogate, "SELECT_MAX", 40)
    rng = np.random.default_rng(4)
    features = FeatureMap([4, 4, 4])
    indices = rng.integers(0, 4, (100, 3))
    values = indices @ np.array([1.0, 0.5, -1.0]) + rng.normal(0, 0.1, 100)
    model = PairwiseRidge(features)
    model.fit(features.active(indices), values)
    assert model.report["n_select"] == 40 and model.report["n_train"] == 100
    assert model.report["loo_kendall_tau"] > 0.8
    fresh = _fresh_fit(features, model, features.active(indices), values, None)
    np.testing.assert_allclose(model.weights(), fresh.weights(), atol=1e-10)


def test_active_ids_and_predictions_by_blocks_equal_the_plain_definition() -> None:
    """``active`` and ``predict`` work by blocks of rows (a pool of a 46-gene space was
    173 MB per metric per proposal); each row is what the definition says, bit for bit."""
    rng = np.random.default_rng(3)
    cards = [25, *rng.integers(2, 5, size=45).tolist()]
    features = FeatureMap(cards)
    indices = np.column_stack([rng.integers(c, size=3000) for c in cards])
    expected = [indices + features.main_offsets[None, :]]
    for k, (g, h) in enumerate(features.pairs):
        pair = features.pair_offsets[k] + indices[:, g] * cards[h] + indices[:, h]
        expected.append(pair[:, None])
    active = features.active(indices)
    assert np.array_equal(active, np.concatenate(expected, axis=1))
    weights = rng.normal(size=features.n_features)
    assert np.array_equal(predict(weights, active), weights[active].sum(axis=1))


def test_transforms_are_chosen_from_those_given_and_unknown_ones_are_refused() -> None:
    features = FeatureMap([4] * 4)
    assert list(PairwiseRidge(features, transforms=["linear"]).transforms) == ["linear"]
    assert list(PairwiseRidge(features, transforms="rank").transforms) == ["rank"]  # one name
    assert list(PairwiseRidge(features, transforms=iter(["rank"])).transforms) == ["rank"]
    with pytest.raises(UnknownName, match="unknown transform 'cube'; known: ") as refused:
        PairwiseRidge(features, transforms=["linear", "cube"])
    assert refused.value.field == "transforms"
    with pytest.raises(InvalidInput, match="give one or more of"):
        PairwiseRidge(features, transforms=[])
