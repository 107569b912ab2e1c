"""SearchSpace: validation, index round trips, sampling and keys."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from core.errors import InvalidInput
from search import SearchSpace


def space() -> SearchSpace:
    return SearchSpace({"depth": [2, 3, 4], "width": [0.5, 1.0], "act": ["relu", "hswish"]})


def test_names_choices_size() -> None:
    s = space()
    assert s.names == ("depth", "width", "act")
    assert s.choices("width") == (0.5, 1.0)
    assert s.size == 12


def test_indices_round_trip_every_architecture() -> None:
    s = space()
    archs = list(s.enumerate())
    assert len(archs) == 12
    for arch in archs:
        assert s.from_indices(s.to_indices(arch)) == arch


def test_sample_is_valid_and_seeded() -> None:
    s = space()
    first = [s.sample(np.random.default_rng(3)) for _ in range(5)]
    second = [s.sample(np.random.default_rng(3)) for _ in range(5)]
    assert first == second
    for arch in first:
        s.validate(arch)
        assert type(arch["depth"]) is int


def test_validate_names_gene_and_allowed_values() -> None:
    s = space()
    with pytest.raises(InvalidInput, match=r"'depth'.*\[2, 3, 4\]") as excinfo:
        s.validate({"depth": 5, "width": 1.0, "act": "relu"})
    assert excinfo.value.field == "depth"
    with pytest.raises(InvalidInput, match="missing"):
        s.validate({"depth": 2, "width": 1.0})
    with pytest.raises(InvalidInput, match="unknown gene 'kernel'"):
        s.validate({"depth": 2, "width": 1.0, "act": "relu", "kernel": 3})
    with pytest.raises(InvalidInput, match="width"):
        s.validate({"depth": 2, "width": [1.0], "act": "relu"})


def test_bad_definitions_raise() -> None:
    bad: list[Any] = [{}, {"a": []}, {"a": [1, 1.0]}, {"a": [None]}, {"a": "abc"}, {"": [1]}]
    for genes in bad:
        with pytest.raises(ValueError, match="gene"):
            SearchSpace(genes)
    with pytest.raises(ValueError, match="canonical"):
        SearchSpace({"a": [1]}, canonical=3)  # type: ignore[arg-type]


def test_key_is_order_and_number_type_independent() -> None:
    s = space()
    a = {"depth": 2, "width": 1.0, "act": "relu"}
    b = {"act": "relu", "width": 1, "depth": 2.0}
    assert s.key(a) == s.key(b)
    assert s.key(a) != s.key({**a, "depth": 3})


def test_canonical_and_encode() -> None:
    def canonical(arch: dict) -> dict:
        return {**arch, "width": 0.5} if arch["depth"] == 2 else arch

    s = SearchSpace(
        {"depth": [2, 3], "width": [0.5, 1.0]},
        canonical=canonical,
        encode=lambda a: f"d{a['depth']}_w{a['width']}",
    )
    assert s.key({"depth": 2, "width": 1.0}) == s.key({"depth": 2, "width": 0.5}) == "d2_w0.5"
    assert s.key({"depth": 3, "width": 1.0}) == "d3_w1.0"
    assert len({s.key(a) for a in s.enumerate()}) == 3
