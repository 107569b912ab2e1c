"""Latency predictors: features, fit, cross-validated metrics, serialisation, reuse.

Latencies here are synthetic (a known additive cost table) or recorded (the NAS-Bench-201
table): no test times anything.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from core.errors import InvalidInput
from hardware_profiles.latency_predictor import (
    PREDICTOR_KINDS,
    ArchEncoder,
    LatencyPredictor,
    fit_latency_predictor,
    validation_metrics,
)
from models.registry import get_supernet

SPACE = {"depth": [1, 2, 3], "k1": [3, 5], "k2": [3, 5], "k3": [3, 5], "width": [8, 16, 24]}


def canonical(arch: dict[str, Any]) -> dict[str, Any]:
    """Blocks beyond ``depth`` are inactive: their kernel gene is reset to 3."""
    return {g: (3 if g[0] == "k" and int(g[1]) > arch["depth"] else arch[g]) for g in SPACE}


class Cost:
    def __init__(self, arch: dict[str, Any]) -> None:
        self.macs = 1e6 * arch["width"] * sum(arch[f"k{b}"] ** 2 for b in range(1, 4))
        self.params = 1e4 * arch["width"]


def additive_latency(arch: dict[str, Any]) -> float:
    """0.5 ms fixed + per active block 0.1 ms (k3) or 0.3 ms (k5), x1.5 / x2.2 wider."""
    arch = canonical(arch)
    blocks = sum(0.1 if arch[f"k{b}"] == 3 else 0.3 for b in range(1, arch["depth"] + 1))
    return (0.5 + blocks) * {8: 1.0, 16: 1.5, 24: 2.2}[arch["width"]]


def toy_archs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    assert n <= 84  # (4 + 8 + 16) canonical architectures x 3 widths
    rng = random.Random(seed)
    found: dict[str, dict[str, Any]] = {}
    while len(found) < n:
        arch = canonical({g: rng.choice(c) for g, c in SPACE.items()})
        found[json.dumps(arch, sort_keys=True)] = arch
    return list(found.values())


@pytest.fixture
def encoder() -> ArchEncoder:
    return ArchEncoder(SPACE, canonical, Cost)


def test_inactive_genes_have_no_features(encoder: ArchEncoder) -> None:
    shallow = canonical({"depth": 1, "k1": 5, "k2": 5, "k3": 5, "width": 8})
    features = encoder.features([shallow])
    assert features.onehot.sum() == 3  # depth, k1, width; k2 and k3 are inactive
    assert list(features.ordinal[0]) == [0.0, 1.0, -1.0, -1.0, 0.0]
    assert features.complexity is not None and features.complexity.shape == (1, 2)


@pytest.mark.parametrize("kind", PREDICTOR_KINDS)
def test_every_kind_fits_and_reports_cross_validated_metrics(
    encoder: ArchEncoder, kind: str
) -> None:
    archs = toy_archs(24)
    latency = [additive_latency(a) for a in archs]
    predictor = fit_latency_predictor(encoder, archs, latency, kind=kind, seed=1)
    assert predictor.kind == kind and predictor.n_measurements == 24
    assert set(predictor.metrics) == {"n", "within_10pct", "spearman", "mape", "method"}
    assert predictor.metrics["method"] == "10-fold"
    predicted = predictor.predict(encoder, archs)
    assert predicted.shape == (24,) and np.all(predicted > 0)
    assert validation_metrics(predicted, latency)["spearman"] > 0.8


@pytest.mark.parametrize("kind", ["lut", "scaled-lut"])  # no input size: scaled = plain
def test_lookup_table_learns_an_additive_cost_table(encoder: ArchEncoder, kind: str) -> None:
    def table_latency(arch: dict[str, Any]) -> float:  # exactly additive over active genes
        arch = canonical(arch)
        blocks = sum(0.1 if arch[f"k{b}"] == 3 else 0.3 for b in range(1, arch["depth"] + 1))
        return 0.5 + blocks + 0.02 * arch["width"]

    archs = toy_archs(40)
    train, held_out = archs[:20], archs[20:]
    predictor = fit_latency_predictor(encoder, train, [table_latency(a) for a in train], kind=kind)
    truth = [table_latency(a) for a in held_out]
    metrics = validation_metrics(predictor.predict(encoder, held_out), truth)
    assert metrics["within_10pct"] == 1.0 and metrics["spearman"] > 0.95


def test_scaled_table_learns_costs_that_grow_with_the_input_size() -> None:
    space = {**SPACE, "res": [16, 24, 32]}

    def canonical_res(arch: dict[str, Any]) -> dict[str, Any]:
        return {**canonical(arch), "res": arch["res"]}

    def input_size(arch: dict[str, Any]) -> float:
        return 3.0 * arch["res"] ** 2

    def latency(arch: dict[str, Any]) -> float:
        # Per active gene: a fixed dispatch cost + compute per input element (per-choice rate).
        arch = canonical_res(arch)
        pixels = input_size(arch) / 1000.0
        rate = {3: 0.05, 5: 0.12}
        blocks = sum(rate[arch[f"k{b}"]] for b in range(1, arch["depth"] + 1))
        active = 3 + arch["depth"]  # depth, width, res and one kernel per block
        return 0.05 * active + pixels * (blocks + 0.01 * arch["width"])

    rng = random.Random(0)
    archs = [canonical_res({g: rng.choice(c) for g, c in space.items()}) for _ in range(120)]
    scaled = ArchEncoder(space, canonical_res, None, input_size)
    train, held_out = archs[:40], archs[40:]
    truth = [latency(a) for a in held_out]
    results = {}
    for kind in ("lut", "scaled-lut"):
        predictor = fit_latency_predictor(scaled, train, [latency(a) for a in train], kind=kind)
        results[kind] = validation_metrics(predictor.predict(scaled, held_out), truth)
    assert results["scaled-lut"]["within_10pct"] == 1.0 and results["scaled-lut"]["mape"] < 0.01
    assert results["lut"]["mape"] > 5 * results["scaled-lut"]["mape"]  # additive cannot


def test_payload_is_json_and_round_trips(encoder: ArchEncoder) -> None:
    archs = toy_archs(20)
    latency = [additive_latency(a) for a in archs]
    for kind in PREDICTOR_KINDS:
        predictor = fit_latency_predictor(encoder, archs, latency, kind=kind)
        text = json.dumps(predictor.to_payload())  # plain data: fails on any object
        again = LatencyPredictor.from_payload(json.loads(text))
        assert again == predictor
        np.testing.assert_allclose(again.predict(encoder, archs), predictor.predict(encoder, archs))


def test_a_predictor_refuses_a_different_search_space(encoder: ArchEncoder) -> None:
    archs = toy_archs(12)
    predictor = fit_latency_predictor(encoder, archs, [additive_latency(a) for a in archs])
    predict_latency = predictor.bind(encoder)
    assert predict_latency(archs[:3]).shape == (3,)
    other = ArchEncoder({**SPACE, "width": [8, 16, 32]}, canonical, Cost)
    with pytest.raises(InvalidInput, match="different search space"):
        predictor.bind(other)
    with pytest.raises(InvalidInput, match="unsupported"):
        LatencyPredictor.from_payload({**predictor.to_payload(), "format": 99})


def test_bad_inputs_name_the_field(encoder: ArchEncoder) -> None:
    archs = toy_archs(10)
    latency = [additive_latency(a) for a in archs]
    with pytest.raises(InvalidInput, match="kind must be one of") as error:
        fit_latency_predictor(encoder, archs, latency, kind="nope")
    assert error.value.field == "kind"
    with pytest.raises(InvalidInput, match="need >= 5"):
        fit_latency_predictor(encoder, archs[:3], latency[:3])
    with pytest.raises(InvalidInput, match="positive"):
        fit_latency_predictor(encoder, archs, [0.0] * len(archs))


def test_validation_metrics_on_known_numbers() -> None:
    metrics = validation_metrics([1.0, 2.1, 3.5, 3.9], [1.0, 2.0, 3.0, 4.0])
    assert metrics["n"] == 4
    assert metrics["within_10pct"] == 0.75  # 3.5 vs 3.0 is 16.7 % off
    assert metrics["spearman"] == pytest.approx(1.0)
    assert metrics["mape"] == pytest.approx((0 + 0.05 + 0.5 / 3 + 0.025) / 4)


def test_recorded_latencies_of_a_gpu_are_predicted_from_fifty_cells() -> None:
    supernet = get_supernet("nb201-cifar10")
    encoder = ArchEncoder.from_supernet(supernet)
    keys = sorted(supernet.rows)
    random.Random(0).shuffle(keys)
    archs = [supernet.decode(k) for k in keys[:250]]
    latency = [supernet.rows[k]["lat_ms_1080ti_1"] for k in keys[:250]]
    predictor = fit_latency_predictor(encoder, archs[:50], latency[:50])
    assert encoder.spec()["complexity"] is False  # a table has no MACs
    held_out = validation_metrics(predictor.predict(encoder, archs[50:]), latency[50:])
    assert held_out["spearman"] > 0.9 and held_out["within_10pct"] > 0.8
