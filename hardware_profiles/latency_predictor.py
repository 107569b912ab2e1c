"""Latency predictors for one (supernet, device): fit, validate, serialise, predict.

Call order: build an :class:`~hardware_profiles.latency_features.ArchEncoder` for the supernet;
measure some sub-networks on the device; :func:`fit_latency_predictor` (which also
cross-validates and reports the error in ``metrics``); store :meth:`LatencyPredictor.to_payload`
(JSON); later :meth:`LatencyPredictor.from_payload` and :meth:`LatencyPredictor.bind` to the
encoder to get ``predict_latency(archs) -> ndarray`` (ms). Predicted values are predictions:
whoever shows one labels it with the predictor's version.

Pure numpy (scikit-learn only while fitting ``gbrt``): no torch, database or HTTP, so search
strategies can call a bound predictor in their inner loop. Instances are immutable and
thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from core.errors import InvalidInput

from .latency_features import Arch, ArchEncoder, Features, FloatArray
from .latency_models import MODEL_KINDS

__all__ = [
    "DEFAULT_KIND",
    "PREDICTOR_KINDS",
    "ArchEncoder",
    "LatencyPredictor",
    "fit_latency_predictor",
    "validation_metrics",
]

PAYLOAD_FORMAT = 1
PREDICTOR_KINDS = tuple(MODEL_KINDS)
# Chosen by benchmarks/latency_predictor.py (see BENCHMARKS.md, "Latency predictors").
DEFAULT_KIND = "scaled-lut"
MIN_MEASUREMENTS = 5

# A stored predictor steers a search only if its own cross-validation says it ranks and
# scales latencies well enough (benchmarks/latency_prior.py: a predictor with held-out rank
# correlation below 0 made the screened proposals less feasible than uniform ones).
PRIOR_MIN_SPEARMAN = 0.8
PRIOR_MIN_WITHIN_10PCT = 0.5


def trusted_as_prior(metrics: dict[str, Any]) -> bool:
    """Whether a predictor with these cross-validated ``metrics`` may steer a search."""
    return (
        metrics.get("spearman", 0.0) >= PRIOR_MIN_SPEARMAN
        and metrics.get("within_10pct", 0.0) >= PRIOR_MIN_WITHIN_10PCT
    )


# Cross-validation folds (leave-one-out below this many measurements).
FOLDS = 10


@dataclass(frozen=True)
class LatencyPredictor:
    """A fitted latency model and its cross-validated error (``metrics``)."""

    kind: str
    features: dict[str, Any]  # ArchEncoder.spec() of the space it was fitted on
    params: dict[str, Any]
    n_measurements: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def predict_features(self, features: Features) -> FloatArray:
        return MODEL_KINDS[self.kind].predict(self.params, features)

    def predict(self, encoder: ArchEncoder, archs: Sequence[Arch]) -> FloatArray:
        """Predicted latency (ms) of each of ``archs``."""
        if not archs:
            return np.zeros(0)
        return self.predict_features(encoder.features(archs))

    def bind(self, encoder: ArchEncoder) -> Callable[[Sequence[Arch]], FloatArray]:
        """``predict_latency(archs) -> ndarray`` for ``encoder``'s supernet; checks the space."""
        encoder.check_spec(self.features)

        def predict_latency(archs: Sequence[Arch]) -> FloatArray:
            return self.predict(encoder, archs)

        return predict_latency

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready description (data only: no pickled code)."""
        return {
            "format": PAYLOAD_FORMAT,
            "kind": self.kind,
            "features": self.features,
            "params": self.params,
            "n_measurements": self.n_measurements,
            "metrics": self.metrics,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> LatencyPredictor:
        if payload.get("format") != PAYLOAD_FORMAT or payload.get("kind") not in MODEL_KINDS:
            raise InvalidInput(
                f"unsupported latency predictor payload (format {payload.get('format')!r}, "
                f"kind {payload.get('kind')!r})",
                field="payload",
            )
        return cls(
            kind=payload["kind"],
            features=dict(payload["features"]),
            params=dict(payload["params"]),
            n_measurements=int(payload["n_measurements"]),
            metrics=dict(payload.get("metrics", {})),
        )


def fit_latency_predictor(
    encoder: ArchEncoder,
    archs: Sequence[Arch],
    latency_ms: Sequence[float],
    *,
    kind: str = DEFAULT_KIND,
    seed: int = 0,
) -> LatencyPredictor:
    """Fit ``kind`` on measured ``(archs, latency_ms)``; ``metrics`` holds its CV error."""
    if kind not in MODEL_KINDS:
        raise InvalidInput(
            f"kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}", field="kind"
        )
    y = np.asarray(latency_ms, dtype=float)
    if len(archs) != len(y) or len(y) < MIN_MEASUREMENTS:
        raise InvalidInput(
            f"need >= {MIN_MEASUREMENTS} measurements with one latency each "
            f"(got {len(archs)} architectures, {len(y)} latencies)",
            field="n_samples",
        )
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise InvalidInput("latencies must be finite and positive", field="latency_ms")
    features = encoder.features(archs)
    model = MODEL_KINDS[kind]
    metrics = cross_validate(kind, features, y, seed=seed)
    return LatencyPredictor(
        kind=kind,
        features=encoder.spec(),
        params=model.fit(features, y, seed),
        n_measurements=len(y),
        metrics=metrics,
    )


def cross_validate(kind: str, features: Features, y: FloatArray, *, seed: int) -> dict[str, Any]:
    """Out-of-fold predictions of ``kind``; leave-one-out for small samples, else k-fold."""
    n = len(y)
    folds = min(n, FOLDS)
    order = np.random.default_rng(seed).permutation(n)
    predicted = np.empty(n)
    model = MODEL_KINDS[kind]
    for fold in range(folds):
        held = order[fold::folds]
        kept = np.setdiff1d(order, held)
        params = model.fit(features.rows(kept), y[kept], seed)
        predicted[held] = model.predict(params, features.rows(held))
    method = "leave-one-out" if folds == n else f"{folds}-fold"
    return {**validation_metrics(predicted, y), "method": method}


def validation_metrics(predicted: ArrayLike, measured: ArrayLike) -> dict[str, Any]:
    """Fraction within +-10 % of measured, Spearman rank correlation, MAPE, count."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    relative = np.abs(p - m) / m
    return {
        "n": len(m),
        "within_10pct": float(np.mean(relative <= 0.10)),
        "spearman": spearman(p, m),
        "mape": float(np.mean(relative)),
    }


def spearman(x: FloatArray, y: FloatArray) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 where a side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    if len(x) < 2 or np.std(rx) == 0 or np.std(ry) == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: FloatArray) -> FloatArray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return np.asarray(np.bincount(inverse, weights=ranks)[inverse] / counts[inverse])
