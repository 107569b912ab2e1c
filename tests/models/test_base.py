"""The protocol's value types: InputSpec's per-channel normalisation."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest
from torch import nn

from models.base import Complexity, InputSpec, Supernet
from models.fmnist_cnn import largest_arch, smallest_arch
from models.registry import get_supernet


def test_mean_and_std_are_tuples_one_per_channel_or_one_for_all() -> None:
    spec = InputSpec(shape=(1, 3, 8, 8), mean=(0.5, 0.4, 0.3), std=[0.2, 0.2, 0.25])  # type: ignore[arg-type]
    assert spec.mean == (0.5, 0.4, 0.3) and spec.std == (0.2, 0.2, 0.25)
    assert InputSpec(shape=(1, 3, 8, 8), mean=(0.5,), std=(1,)).std == (1.0,)  # broadcast
    assert json.loads(json.dumps(asdict(spec)))["mean"] == [0.5, 0.4, 0.3]


def test_a_plain_float_still_works_for_older_plugins() -> None:
    spec = InputSpec(shape=(1, 12), mean=0.0, std=1.0, layout="NC")  # type: ignore[arg-type]
    assert (spec.mean, spec.std) == ((0.0,), (1.0,))


@pytest.mark.parametrize(
    ("shape", "mean", "std", "message"),
    [
        ((1, 3, 8, 8), (0.5, 0.5), (1.0,), r"mean must have 1 value or 3 \(one per channel\)"),
        ((1, 1, 8, 8), (0.5,), (0.2, 0.3, 0.4), r"std must have 1 value, got"),
        ((1, 12), (), (1.0,), r"mean must have at least 1 value"),
        ((1, 3, 8, 8), (0.5,), (0.2, 0.0, 0.2), r"std must be positive"),
    ],
)
def test_lengths_are_checked_against_the_channels(
    shape: tuple[int, ...], mean: tuple, std: tuple, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        InputSpec(shape=shape, mean=mean, std=std)


def test_variable_axes_name_axes_after_the_batch() -> None:
    assert InputSpec(shape=(1, 32), mean=0.0, std=1.0, variable_axes=(1,)).variable_axes == (1,)  # type: ignore[arg-type]
    for axes in [(0,), (2,)]:
        with pytest.raises(ValueError, match="variable_axes must name axes 1..1"):
            InputSpec(shape=(1, 32), mean=0.0, std=1.0, variable_axes=axes)  # type: ignore[arg-type]


def test_axis_names_name_every_axis_once() -> None:
    named = InputSpec(shape=(1, 32), mean=0.0, std=1.0, axis_names=("batch", "sequence"))  # type: ignore[arg-type]
    assert named.axis_names == ("batch", "sequence")
    for names in [("batch",), ("batch", "batch"), ("batch", "seq len"), ("batch", "")]:
        with pytest.raises(ValueError, match="axis_names must give 2 distinct names"):
            InputSpec(shape=(1, 32), mean=0.0, std=1.0, axis_names=names)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a tuple of names"):
        InputSpec(shape=(1, 32), mean=0.0, std=1.0, axis_names="bs")  # type: ignore[arg-type]
    listed = InputSpec(shape=(1, 32), mean=0.0, std=1.0, axis_names=["n", "seq"])  # type: ignore[arg-type]
    assert listed.axis_names == ("n", "seq") and hash(listed)


class _Spaced(Supernet):
    """Just enough of a supernet to ask for its anchors: a space, canonical, encode."""

    name = "spaced"

    def __init__(self, space: dict[str, list[Any]], fixed: dict[str, Any] | None = None) -> None:
        self._space = space
        self._fixed = fixed or {}  # genes canonical() pins (genes that have no effect)

    def space(self) -> dict[str, list[Any]]:
        return self._space

    def canonical(self, arch: dict[str, Any]) -> dict[str, Any]:
        return {**arch, **self._fixed}

    def encode(self, arch: dict[str, Any]) -> str:
        return json.dumps(arch, sort_keys=True)

    def decode(self, encoding: str) -> dict[str, Any]:
        return dict(json.loads(encoding))

    def complexity(self, arch: dict[str, Any]) -> Complexity:
        raise NotImplementedError

    def extract(self, arch: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def evaluate(self, arch: dict[str, Any], module: nn.Module | None = None) -> dict[str, float]:
        raise NotImplementedError

    def input_spec(self, arch: dict[str, Any]) -> InputSpec:
        raise NotImplementedError


def test_anchors_of_a_numeric_space_are_its_two_ends_in_canonical_form() -> None:
    supernet = _Spaced({"d": [2, 3, 4], "w": [0.5, 1.0], "k": [7, 3, 5]}, fixed={"k": 3})
    assert supernet.anchors() == [{"d": 2, "w": 0.5, "k": 3}, {"d": 4, "w": 1.0, "k": 3}]


@pytest.mark.parametrize(
    "space",
    [
        {"op": ["conv3x3", "skip"], "d": [1, 2]},  # operation names have no ends
        {"residual": [False, True]},  # neither have flags
        {},
    ],
)
def test_no_anchors_where_a_choice_is_not_a_number(space: dict[str, list[Any]]) -> None:
    assert _Spaced(space).anchors() == []


def test_one_anchor_when_both_ends_are_the_same_network() -> None:
    assert _Spaced({"d": [2, 3]}, fixed={"d": 2}).anchors() == [{"d": 2}]


def test_builtin_supernets_anchor_on_their_smallest_and_largest_network() -> None:
    supernet = get_supernet("fmnist-ofa-cnn")
    small, large = supernet.anchors()
    assert supernet.encode(small) == supernet.encode(smallest_arch())
    assert supernet.encode(large) == supernet.encode(largest_arch())
    assert get_supernet("nb201-cifar10").anchors() == []  # operation names
