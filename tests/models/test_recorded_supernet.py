"""NAS-Bench-201 as a recorded supernet: encoding, lookups, and refusing what it cannot do."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from models.recorded import NB201Supernet
from models.registry import get_supernet

CELL = (
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|"
    "+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
)


@pytest.fixture(scope="module")
def nb201() -> NB201Supernet:
    net = get_supernet("nb201-cifar10")
    assert isinstance(net, NB201Supernet)
    return net


def test_the_whole_table_is_the_space(nb201: NB201Supernet) -> None:
    assert nb201.describe()["raw_space_size"] == 15_625 == len(nb201.rows)
    assert nb201.recorded and "latency_ms" not in nb201.metrics


def test_cell_strings_round_trip(nb201: NB201Supernet) -> None:
    arch = nb201.decode(CELL)
    assert arch["e0"] == "avg_pool_3x3" and arch["e5"] == "skip_connect"
    assert nb201.encode(arch) == CELL
    for cell in list(nb201.rows)[:200]:
        assert nb201.encode(nb201.decode(cell)) == cell


def test_lookups_return_table_values(nb201: NB201Supernet) -> None:
    arch = nb201.decode(CELL)
    # Values of row idx 0 of the shipped table (accuracy in %, latency in ms).
    assert nb201.evaluate(arch)["accuracy"] == pytest.approx(0.858633)
    assert nb201.recorded_latency(arch, "lat_ms_pixel3", "nb201") == pytest.approx(3.60585)


def test_recorded_supernets_refuse_extraction_and_foreign_tables(nb201: NB201Supernet) -> None:
    arch = nb201.decode(CELL)
    with pytest.raises(InvalidInput, match="no weights"):
        nb201.extract(arch)
    with pytest.raises(InvalidInput, match="records latencies of 'hwnasbench'"):
        nb201.recorded_latency(arch, "lat_ms_pixel3", "hwnasbench")
    with pytest.raises(InvalidInput, match="nor_conv_3x3"):
        nb201.encode(dict(arch, e1="conv_9x9"))
