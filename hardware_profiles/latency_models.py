"""The latency model kinds a predictor can use; each is fitted from features and kept as JSON.

A kind is a class with two static methods, registered in ``MODEL_KINDS``:
``fit(features, latency_ms, seed) -> params`` (a JSON-ready dict) and
``predict(params, features) -> latency_ms``. Parameters are plain numbers and lists, so a stored
predictor is data, never pickled code, and predicting needs numpy only.

- ``lut``: Once-for-All style lookup table: latency = base + the sum of a per-(gene, choice)
  cost over the *active* genes, fitted (not measured block by block) by ridge regression with
  relative-error weights; then a learned multiplicative correction from MACs and params
  (compute grows with the input resolution, which a purely additive table cannot express).
- ``scaled-lut``: the same table, but each choice's cost is per input element (a block's
  compute grows with the input size: the cost is multiplied by the sample's input size relative
  to the fitted sample's mean), plus a fixed cost per active gene (operator dispatch, which does
  not grow with the input); then the same correction. Needs two numbers per choice less data
  than a table keyed by (choice, input size), and reduces to ``lut`` where the input size is
  fixed or unknown.
- ``ridge``: ridge regression of log latency on the active one-hot genes plus MACs and params.
- ``gbrt``: gradient-boosted regression trees (scikit-learn) on the gene choices plus MACs and
  params, log latency; the trees are exported to arrays and evaluated here.

Regularisation strengths are chosen per fit by exact leave-one-out error (ridge) from a grid.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from .latency_features import Features, FloatArray

ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


class ModelKind(Protocol):
    @staticmethod
    def fit(features: Features, latency_ms: FloatArray, seed: int) -> dict[str, Any]: ...

    @staticmethod
    def predict(params: dict[str, Any], features: Features) -> FloatArray: ...


def _ridge(x: FloatArray, y: FloatArray, weights: FloatArray | None = None) -> dict[str, Any]:
    """Weighted ridge with intercept; the penalty from ``ALPHAS`` by leave-one-out error."""
    w = np.ones(len(y)) if weights is None else weights / weights.mean()
    x_mean = (w[:, None] * x).sum(0) / w.sum()
    y_mean = float((w * y).sum() / w.sum())
    root = np.sqrt(w)
    xs, ys = root[:, None] * (x - x_mean), root * (y - y_mean)
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ ys
    best: tuple[float, float] | None = None
    for alpha in ALPHAS:
        shrink = s**2 / (s**2 + alpha)
        fitted = u @ (shrink * uty)
        leverage = (u**2 * shrink).sum(1) + w / w.sum()
        loo = (ys - fitted) / np.maximum(1.0 - leverage, 1e-6)
        error = float(np.mean(loo**2))
        if best is None or error < best[0]:
            best = (error, alpha)
    assert best is not None
    alpha = best[1]
    coef = vt.T @ (s / (s**2 + alpha) * uty)
    return {"coef": coef.tolist(), "intercept": y_mean - float(x_mean @ coef), "alpha": alpha}


def _apply(params: dict[str, Any], x: FloatArray) -> FloatArray:
    return np.asarray(x @ np.asarray(params["coef"]) + params["intercept"], dtype=float)


def _standardise(x: FloatArray) -> list[list[float]]:
    """[means, scales] of the columns, as JSON-ready lists."""
    scale = x.std(0)
    return [x.mean(0).tolist(), np.where(scale > 0, scale, 1.0).tolist()]


def _scaled(x: FloatArray, stats: list[list[float]]) -> FloatArray:
    mean, scale = stats
    return (x - np.asarray(mean)) / np.asarray(scale)


class LookupTable:
    """Additive per-choice costs over active genes, then a multiplicative correction."""

    @staticmethod
    def fit(features: Features, latency_ms: FloatArray, seed: int) -> dict[str, Any]:
        table = _ridge(features.onehot, latency_ms, weights=latency_ms**-2.0)
        params: dict[str, Any] = {"table": table, "correction": None}
        if features.complexity is not None:
            ratio = latency_ms / np.maximum(_apply(table, features.onehot), 1e-9) - 1.0
            stats = _standardise(features.complexity)
            params["correction"] = {
                "scaling": stats,
                **_ridge(_scaled(features.complexity, stats), ratio),
            }
        return params

    @staticmethod
    def predict(params: dict[str, Any], features: Features) -> FloatArray:
        table = np.maximum(_apply(params["table"], features.onehot), 1e-9)
        correction = params["correction"]
        if correction is None or features.complexity is None:
            return table
        x = _scaled(features.complexity, correction["scaling"])
        return table * np.maximum(1.0 + _apply(correction, x), 0.05)


class ScaledLookupTable:
    """Per-choice costs scaled by the input size, a cost per active gene, the correction."""

    @staticmethod
    def _design(features: Features, reference: float) -> FloatArray:
        size = features.input_size
        scale = np.ones(len(features.onehot)) if size is None else size / reference
        return np.hstack([features.onehot * scale[:, None], features.onehot.sum(1)[:, None]])

    @staticmethod
    def fit(features: Features, latency_ms: FloatArray, seed: int) -> dict[str, Any]:
        size = features.input_size
        reference = 1.0 if size is None else float(np.mean(size))
        x = ScaledLookupTable._design(features, reference)
        params = LookupTable.fit(replace(features, onehot=x), latency_ms, seed)
        return {**params, "input_reference": reference}

    @staticmethod
    def predict(params: dict[str, Any], features: Features) -> FloatArray:
        x = ScaledLookupTable._design(features, params["input_reference"])
        return LookupTable.predict(params, replace(features, onehot=x))


def _regressor_inputs(features: Features, base: FloatArray) -> FloatArray:
    if features.complexity is None:
        return base
    return np.hstack([base, features.complexity, np.log(features.complexity)])


class LogRidge:
    """Ridge regression of log latency on active one-hot genes, MACs and params."""

    @staticmethod
    def fit(features: Features, latency_ms: FloatArray, seed: int) -> dict[str, Any]:
        x = _regressor_inputs(features, features.onehot)
        stats = _standardise(x)
        return {"scaling": stats, **_ridge(_scaled(x, stats), np.log(latency_ms))}

    @staticmethod
    def predict(params: dict[str, Any], features: Features) -> FloatArray:
        x = _scaled(_regressor_inputs(features, features.onehot), params["scaling"])
        return np.exp(_apply(params, x))


class BoostedTrees:
    """Gradient-boosted trees on log latency (scikit-learn fits; numpy predicts)."""

    ESTIMATORS = 100

    @staticmethod
    def fit(features: Features, latency_ms: FloatArray, seed: int) -> dict[str, Any]:
        from sklearn.ensemble import GradientBoostingRegressor  # only needed to fit

        model = GradientBoostingRegressor(
            n_estimators=BoostedTrees.ESTIMATORS,
            learning_rate=0.05,
            max_depth=3,
            min_samples_leaf=2,
            subsample=0.8,
            random_state=seed,
        )
        model.fit(_regressor_inputs(features, features.ordinal), np.log(latency_ms))
        trees = [_tree_arrays(est[0].tree_) for est in model.estimators_]
        init = float(np.asarray(model.init_.constant_).ravel()[0])
        return {"init": init, "learning_rate": model.learning_rate, "trees": trees}

    @staticmethod
    def predict(params: dict[str, Any], features: Features) -> FloatArray:
        x = _regressor_inputs(features, features.ordinal)
        total = np.full(len(x), params["init"])
        for tree in params["trees"]:
            total += params["learning_rate"] * _tree_predict(tree, x)
        return np.exp(total)


def _tree_arrays(tree: Any) -> dict[str, list[Any]]:
    return {
        "left": tree.children_left.tolist(),
        "right": tree.children_right.tolist(),
        "feature": tree.feature.tolist(),
        "threshold": tree.threshold.tolist(),
        "value": tree.value[:, 0, 0].tolist(),
    }


def _tree_predict(tree: dict[str, list[Any]], x: FloatArray) -> FloatArray:
    left, right = np.asarray(tree["left"]), np.asarray(tree["right"])
    feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"])
    node = np.zeros(len(x), dtype=int)
    rows = np.arange(len(x))
    while True:
        inner = left[node] >= 0
        if not inner.any():
            return np.asarray(tree["value"], dtype=float)[node]
        go_left = x[rows, np.maximum(feature[node], 0)] <= threshold[node]
        node = np.where(inner, np.where(go_left, left[node], right[node]), node)


MODEL_KINDS: dict[str, type[ModelKind]] = {
    "lut": LookupTable,
    "scaled-lut": ScaledLookupTable,
    "ridge": LogRidge,
    "gbrt": BoostedTrees,
}
