"""Recorded (tabular) supernets: accuracy and latency per architecture come from a table.

A recorded supernet follows the same protocol as a trained one, so searches, jobs and
benchmarks treat it alike; it has no weights, so it cannot be extracted or exported, and its
latency is looked up for a *recorded* hardware profile (``source`` names the table, and
``recorded_column`` the column). Results are labelled ``recorded``, never ``measured``.

Built in: NAS-Bench-201 (``nb201-cifar10``, ``nb201-cifar100``, ``nb201-imagenet16-120``).
Encoding = NAS-Bench-201's own cell string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (genes
``e0`` .. ``e5`` in that order); isomorphic cells are distinct rows, as in the table.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from core.errors import InvalidInput

from .base import Arch, Complexity, InputSpec, Supernet
from .registry import register_supernet

NB201_TABLE = Path(__file__).parent / "data" / "nb201_acc_latency.csv.gz"
NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
NB201_EDGES = [(0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2)]  # (input node, cell node - 1)
_NB201_CELL = re.compile(r"^\|(\w+)~0\|\+\|(\w+)~0\|(\w+)~1\|\+\|(\w+)~0\|(\w+)~1\|(\w+)~2\|$")


class RecordedSupernet(Supernet):
    """A search space whose members' metrics are rows of a table."""

    recorded: ClassVar[bool] = True
    source: ClassVar[str]

    def __init__(self, rows: Mapping[str, Mapping[str, float]], accuracy_column: str) -> None:
        self.rows = rows
        self.accuracy_column = accuracy_column

    def row(self, arch: Arch) -> Mapping[str, float]:
        key = self.encode(arch)
        try:
            return self.rows[key]
        except KeyError:
            raise InvalidInput(f"{self.name}: no recorded row for {key!r}", field="arch") from None

    def evaluate(self, arch: Arch, module: nn.Module | None = None) -> dict[str, float]:
        return {"accuracy": self.row(arch)[self.accuracy_column]}

    def recorded_latency(self, arch: Arch, column: str, source: str) -> float:
        """The recorded latency (ms) of ``arch`` in ``column`` of table ``source``."""
        if source != self.source:
            raise InvalidInput(
                f"device records latencies of {source!r}, supernet {self.name!r} "
                f"is {self.source!r}",
                field="device",
            )
        row = self.row(arch)
        if column not in row:
            raise InvalidInput(f"{self.name}: no latency column {column!r}", field="device")
        return row[column]

    def complexity(self, arch: Arch) -> Complexity:
        raise InvalidInput(
            f"{self.name} is recorded: MACs and params are not in its table", field="objectives"
        )

    def extract(self, arch: Arch) -> nn.Module:
        raise InvalidInput(
            f"{self.name} is recorded: it has no weights to extract or export", field="format"
        )

    def input_spec(self, arch: Arch) -> InputSpec:
        raise InvalidInput(f"{self.name} is recorded: it has no model input", field="arch")


class NB201Supernet(RecordedSupernet):
    """NAS-Bench-201: 6 edges x 5 operations, accuracy on one data set, 27 latency columns."""

    source = "nb201"

    def __init__(self, *, dataset: str, table: Path = NB201_TABLE) -> None:
        datasets = {
            "cifar10": "acc_cifar10_test",
            "cifar100": "acc_cifar100_test",
            "imagenet16-120": "acc_ImageNet16-120_test",
        }
        if dataset not in datasets:
            raise InvalidInput(f"dataset must be one of {sorted(datasets)}", field="dataset")
        self.name = f"nb201-{dataset}"  # type: ignore[misc]
        super().__init__(load_nb201(table), datasets[dataset])

    def space(self) -> dict[str, list[Any]]:
        return {f"e{i}": list(NB201_OPS) for i in range(len(NB201_EDGES))}

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        return {**described, "space_size": described["raw_space_size"]}  # each a cell

    def canonical(self, arch: Arch) -> Arch:
        for gene in self.space():
            if arch.get(gene) not in NB201_OPS:
                raise InvalidInput(
                    f"gene {gene!r} must be one of {NB201_OPS}, got {arch.get(gene)!r}",
                    field="arch",
                )
        return {gene: arch[gene] for gene in self.space()}

    def encode(self, arch: Arch) -> str:
        cell = self.canonical(arch)
        ops = [cell[f"e{i}"] for i in range(len(NB201_EDGES))]
        nodes: list[list[str]] = [[], [], []]
        for op, (source, node) in zip(ops, NB201_EDGES, strict=True):
            nodes[node].append(f"{op}~{source}")
        return "+".join("|" + "|".join(edges) + "|" for edges in nodes)

    def decode(self, encoding: str) -> Arch:
        match = _NB201_CELL.match(encoding)
        if not match:
            raise InvalidInput(f"malformed NAS-Bench-201 cell {encoding!r}", field="arch")
        return self.canonical({f"e{i}": op for i, op in enumerate(match.groups())})


@lru_cache(maxsize=2)
def load_nb201(path: Path) -> dict[str, dict[str, float]]:
    """Rows by cell string; accuracies as fractions in [0, 1], latencies in ms."""
    rows: dict[str, dict[str, float]] = {}
    with gzip.open(path, "rt", newline="") as handle:
        for record in csv.DictReader(handle):
            values = {}
            for column, text in record.items():
                if column.startswith("acc_"):
                    values[column] = float(text) / 100.0
                elif column.startswith("lat_ms_"):
                    values[column] = float(text)
            rows[record["arch_str"]] = values
    return rows


for _dataset in ("cifar10", "cifar100", "imagenet16-120"):
    register_supernet(f"nb201-{_dataset}")(
        lambda dataset=_dataset, **kw: NB201Supernet(dataset=dataset, **kw)
    )
