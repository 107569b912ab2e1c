"""The pairwise-ridge surrogate: transforms, features, leave-one-out selection, bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

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
