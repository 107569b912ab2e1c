"""The protocol's value types: InputSpec's per-channel normalisation."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from models.base import InputSpec


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
