"""The real DyNAS-T 1.6.0 LINAS search on NAS-Bench-201, scored like search_quality.py.

DyNAS-T (PyPI ``dynast``) is *not* a dependency of this project and is never imported by the
package or the tests: this script imports it at run time, from a separate virtual environment.
It drives DyNAS-T's own ``LINAS`` class (its random first population, its ``Predictor``: Ridge
and RBF-SVR chosen by cross-validated MAPE, its pymoo NSGA-II inner loop, its population
bookkeeping) through DyNAS-T's BootstrapNAS path, the one that accepts custom evaluation
functions (``metric_eval_fns``). Every architecture DyNAS-T proposes is measured through the
same protocol as ``benchmarks/search_quality.py`` (whose helpers are imported, not copied):
the recorded supernet ``nb201-<dataset>``, the device profile ``nb201-<device>`` and
``workers.evaluator.SubnetEvaluator.measure``. Scores: hypervolume ratio against the true
front for the ``tight`` and ``worst`` references, and the number of re-measured architectures
(DyNAS-T does not cache: it measures whatever its populations hold, so duplicates are counted,
not removed).

Set-up (one virtual environment beside the project's ``.venv``, which stays unchanged)::

    .venv/bin/python -m venv /tmp/dynast-venv
    /tmp/dynast-venv/bin/pip install torch==2.13.0      # pinned: the CPU wheel on local disk
    /tmp/dynast-venv/bin/pip install -e .
    /tmp/dynast-venv/bin/pip install dynast==1.6.0 --no-deps
    /tmp/dynast-venv/bin/pip install pymoo autograd pandas requests numba
    /tmp/dynast-venv/bin/python benchmarks/dynast_real.py --seeds 10 --out /tmp/dynast_real.md

(tested with pymoo 0.6.2, autograd 1.9.1, pandas 3.1.1, requests 2.34.2, numba 0.68.1,
scikit-learn 1.9.1). ``dynast.search.search_tactic`` imports every supernet runner at module
import; those need torchvision, fairseq (with its compiled ``libbleu``), transformers, nncf,
torchprofile, which the LINAS path on a custom BootstrapNAS-style supernet never calls. They are
replaced by empty stand-in modules (``_install_stand_ins``) for the packages that are not
installed; nothing from them is used while searching.

Mapping onto DyNAS-T: the 6 NAS-Bench-201 edges become the BootstrapNAS search space
``{"width": {0: [0..4], ..., 5: [0..4]}}`` (one 5-way variable per edge, values = indices into
the edge's operation list); ``RecordedNB201`` plays the BootstrapNAS supernetwork
(``get_search_space``, ``get_config_from_pymoo``, ``activate_config``, ``get_active_subnet``),
and its "sub-network" is just the architecture that the two metric functions measure.
Objectives ``accuracy_top1`` (the recorded accuracy) and ``latency`` (the device's recorded
latency, std 0); ``measurements`` the same two, so DyNAS-T asks for nothing else. One
measurement per architecture evaluation: the accuracy function (called first by DyNAS-T)
measures, the latency function of the same evaluation reads that measurement.

Budget: DyNAS-T's ``LINAS.search`` runs ``round(num_evals / population)`` loops, each measures
a whole population (the first uniformly random, the next ones the final population of the
previous inner NSGA-II), re-fits the predictors and runs NSGA-II (5,000 predictor evaluations
for BootstrapNAS supernets, i.e. 100 generations of the population size). With population 50
(DyNAS-T's default) budgets 50 / 100 / 200 are 1 / 2 / 4 loops, exactly 50 / 100 / 200
measurements. LINAS is deterministic for a seed (its global ``random`` seed and pymoo's seed),
and the loops of a run with ``num_evals=200`` are the same as those of runs with 100 and 50,
so by default one run per (device, seed) at the largest budget is scored at every budget
prefix: the measured set after loop k, and the wall / evaluation time up to the end of loop
k (including loop k's predictor fit and inner NSGA-II, which a separate run with that budget
also performs). ``--separate`` runs every budget on its own instead (``--check`` compares).

Execution details that do not change results: DyNAS-T's grid searches ask for ``n_jobs=-1``;
they run under ``joblib.parallel_config(backend="sequential")`` here (one process); DyNAS-T's
(root) logging is set to WARNING and its progress dots are swallowed. ``PYTHONHASHSEED`` is
pinned to 0 (the script re-executes itself) because DyNAS-T orders its objectives through
``set()``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import logging
import os
import sys
import tempfile
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.search_quality import (  # noqa: E402
    SENSES,
    Table,
    _front,
    _machine,
    load_table,
    profile_id,
    protocol_arguments,
    references,
    supernet_space,
)
from hardware_profiles import get_profile  # noqa: E402
from search import SearchSpace, hypervolume  # noqa: E402
from search.space import Arch  # noqa: E402
from workers.evaluator import SubnetEvaluator  # noqa: E402

# Imported by dynast.search.search_tactic (through its other supernet runners) at module
# import, never used by LINAS on a custom BootstrapNAS-style supernet.
STAND_INS = (
    "torchvision",
    "fairseq",
    "transformers",
    "nncf",
    "torchprofile",
    "sacremoses",
    "gdown",
    "neural_compressor",
)
SUPERNET = "bootstrapnas_image_classification"


# ---- stand-ins for modules DyNAS-T imports but LINAS does not use -------------------------


class _StandInType(type):
    """Any attribute of a stand-in is another stand-in class (``a.b.C``, base classes...)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _stand_in_class(f"{cls.__name__}.{name}")
        setattr(cls, name, value)  # the same object every time (used as a dict key)
        return value


def _stand_in_class(name: str) -> type:
    def init(self: object, *args: object, **kwargs: object) -> None:
        pass

    def call(self: object, *args: object, **kwargs: object) -> object:
        # Used as a decorator at import time (registries): give the decorated object back.
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else self

    # ``__file__ = None``: fairseq's ``libbleu`` is loaded with ctypes at import time, and
    # ``ctypes.CDLL(None)`` opens the running program instead.
    return _StandInType(name, (), {"__init__": init, "__call__": call, "__file__": None})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _stand_in_class(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = set(roots)

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _StandInModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []


def _install_stand_ins() -> tuple[str, ...]:
    """Stand-in modules for the packages in ``STAND_INS`` that are not installed."""
    missing = tuple(name for name in STAND_INS if importlib.util.find_spec(name) is None)
    sys.meta_path.insert(0, _StandInFinder(missing))
    return missing


# ---- NAS-Bench-201 as a BootstrapNAS-style supernetwork for DyNAS-T -----------------------


@dataclass(frozen=True)
class Subnet:
    """What DyNAS-T hands to the metric functions: here only the architecture."""

    arch: Arch
    key: str

    def to(self, device: object) -> Subnet:
        return self


class RecordedNB201:
    """The four calls DyNAS-T's BootstrapNAS runner and encoding make on a supernetwork."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._active: Arch | None = None

    def get_search_space(self) -> dict[str, dict[int, list[int]]]:
        # One variable per edge; its values index the edge's operations.
        return {
            "width": {
                i: list(range(len(self.space.choices(name))))
                for i, name in enumerate(self.space.names)
            }
        }

    def get_config_from_pymoo(self, vector: Sequence[float]) -> Arch:
        return self.space.from_indices([int(round(v)) for v in vector])

    def activate_config(self, config: Arch) -> None:
        self._active = config

    def get_active_subnet(self) -> Subnet:
        assert self._active is not None
        return Subnet(self._active, self.space.key(self._active))


class Measurer:
    """DyNAS-T's ``metric_eval_fns``: one project measurement per architecture evaluation."""

    def __init__(self, evaluator: SubnetEvaluator) -> None:
        self.evaluator = evaluator
        self.keys: list[str] = []
        self.points: list[tuple[float, float]] = []
        self.started: list[float] = []  # perf_counter at the start of each measurement
        self.spent: list[float] = []  # seconds inside SubnetEvaluator.measure, per measurement
        self._last: tuple[str, dict[str, float]] | None = None

    def accuracy(self, subnet: Subnet) -> float:
        start = time.perf_counter()
        metrics = self.evaluator.measure(subnet.arch).metrics
        self.spent.append(time.perf_counter() - start)
        self.started.append(start)
        self.keys.append(subnet.key)
        self.points.append((metrics["accuracy"], metrics["latency_ms"]))
        self._last = (subnet.key, metrics)
        return float(metrics["accuracy"])

    def latency(self, subnet: Subnet) -> tuple[float, float]:
        assert self._last is not None and self._last[0] == subnet.key, "accuracy not first"
        return float(self._last[1]["latency_ms"]), 0.0

    def fns(self) -> dict[str, Any]:
        return {"accuracy_top1": self.accuracy, "latency": self.latency}


# ---- one DyNAS-T LINAS run ---------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    device: str
    budget: int
    seed: int
    hv: dict[str, float]
    evaluations: int  # measurements DyNAS-T made (re-measurements included)
    unique: int
    duplicates: int
    wall_s: float
    overhead_ms: float  # (wall - time inside measure) per measurement
    keys: tuple[str, ...]


def run_linas(
    table: Table, device: str, seed: int, budgets: Sequence[int], population: int, algo: str
) -> list[Row]:
    """One ``LINAS.search`` with ``num_evals=max(budgets)``, scored at every budget prefix."""
    from dynast.search.search_tactic import LINAS
    from joblib import parallel_config

    space = supernet_space(table.supernet)
    measurer = Measurer(SubnetEvaluator(table.supernet, get_profile(profile_id(device))))
    with tempfile.TemporaryDirectory() as tmp, parallel_config(backend="sequential"):
        start = time.perf_counter()
        linas = LINAS(
            supernet=SUPERNET,
            optimization_metrics=["accuracy_top1", "latency"],
            measurements=["accuracy_top1", "latency"],
            num_evals=max(budgets),
            results_path=str(Path(tmp) / "results.csv"),
            search_algo=algo,
            population=population,
            seed=seed,
            bootstrapnas_supernetwork=RecordedNB201(space),
            metric_eval_fns=measurer.fns(),
        )
        with contextlib.redirect_stdout(io.StringIO()):  # pymoo problem prints a dot per gen
            linas.search()
        end = time.perf_counter()
    n = len(measurer.keys)
    assert n == population * round(max(budgets) / population), n
    rows = []
    for budget in budgets:
        used = population * round(budget / population)
        # The end of loop k is where measurement k * population + 1 starts (or the run ends).
        stop = measurer.started[used] if used < n else end
        wall = stop - start
        spent = sum(measurer.spent[:used])
        keys = measurer.keys[:used]
        found = np.array(measurer.points[:used])
        latency = table.latency[device]
        hv = {
            name: hypervolume(found, SENSES, ref) / hypervolume(_front(table, device), SENSES, ref)
            for name, ref in references(table.accuracy, latency).items()
        }
        rows.append(
            Row(
                device=device,
                budget=budget,
                seed=seed,
                hv=hv,
                evaluations=used,
                unique=len(set(keys)),
                duplicates=used - len(set(keys)),
                wall_s=wall,
                overhead_ms=1000 * (wall - spent) / used,
                keys=tuple(keys),
            )
        )
    return rows


# ---- driver ------------------------------------------------------------------------------


def report(
    rows: list[Row], args: argparse.Namespace, elapsed: float, stand_ins: Sequence[str]
) -> str:
    from importlib.metadata import version

    mode = "one run per budget" if args.separate else "one run per (device, seed), scored per loop"
    lines = [
        f"Real DyNAS-T {version('dynast')} LINAS (pymoo {version('pymoo')}, scikit-learn "
        f"{version('scikit-learn')}); population {args.population}, inner `{args.algo}`; {mode}. "
        f"Dataset `{args.dataset}`, devices {', '.join(args.devices)}; {args.seeds} seeds; "
        f"{len(rows)} scored runs in {elapsed:.0f} s on {_machine()}. "
        f"Stand-in modules: {', '.join(stand_ins) or 'none'}.",
        "",
        "| strategy | budget | HV ratio tight (mean ± std) | tight min | "
        "HV ratio worst (mean ± std) | evaluations (unique) | wall s/run | overhead ms/eval | "
        "duplicates |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for budget in args.budgets:
        group = [r for r in rows if r.budget == budget]
        tight = np.array([r.hv["tight"] for r in group])
        worst = np.array([r.hv["worst"] for r in group])
        lines.append(
            f"| dynast-real | {budget} | {tight.mean():.3f} ± {tight.std():.3f} | "
            f"{tight.min():.3f} | {worst.mean():.4f} ± {worst.std():.4f} | "
            f"{np.mean([r.evaluations for r in group]):.0f} "
            f"({np.mean([r.unique for r in group]):.1f}) | "
            f"{np.mean([r.wall_s for r in group]):.1f} | "
            f"{np.mean([r.overhead_ms for r in group]):.1f} | "
            f"{sum(r.duplicates for r in group)} |"
        )
    budget = 100 if 100 in args.budgets else args.budgets[0]
    lines += [
        "",
        f"Tight-reference HV ratio per device at budget {budget} (mean over seeds):",
        "",
        "| strategy | " + " | ".join(args.devices) + " |",
        "|---|" + "---:|" * len(args.devices),
        "| dynast-real | "
        + " | ".join(
            f"{np.mean([r.hv['tight'] for r in rows if (r.budget, r.device) == (budget, d)]):.3f}"
            for d in args.devices
        )
        + " |",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol_arguments(parser)
    parser.add_argument("--population", type=int, default=50, help="DyNAS-T's default: 50")
    parser.add_argument("--algo", default="nsga2", help="LINAS inner search (DyNAS-T: nsga2)")
    parser.add_argument(
        "--separate", action="store_true", help="one LINAS run per budget (no prefix scoring)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also run every budget separately for the first device and seed, and compare",
    )
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":  # DyNAS-T orders objectives through set()
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    args = parse_args(argv)
    stand_ins = _install_stand_ins()
    import dynast.search.search_tactic  # noqa: F401  (configures the root logger)

    logging.getLogger().setLevel(logging.WARNING)
    table = load_table(args.data, args.dataset, args.devices)
    if args.check:
        _check(table, args)
    started = time.perf_counter()
    rows: list[Row] = []
    for device in args.devices:
        for seed in range(args.seeds):
            if args.separate:
                for budget in args.budgets:
                    rows += run_linas(table, device, seed, [budget], args.population, args.algo)
            else:
                rows += run_linas(table, device, seed, args.budgets, args.population, args.algo)
            print(f"{device} seed {seed} done", file=sys.stderr, flush=True)
    text = report(rows, args, time.perf_counter() - started, stand_ins)
    print(text)
    if args.out:
        args.out.write_text(text)


def _check(table: Table, args: argparse.Namespace) -> None:
    """Prefix scoring equals separate runs: same measured keys, same hypervolumes."""
    device = args.devices[0]
    prefixed = run_linas(table, device, 0, args.budgets, args.population, args.algo)
    for row in prefixed:
        (alone,) = run_linas(table, device, 0, [row.budget], args.population, args.algo)
        same = alone.keys == row.keys and alone.hv == row.hv
        print(
            f"check {device} seed 0 budget {row.budget}: identical={same}; overhead ms/eval "
            f"prefix {row.overhead_ms:.1f} vs alone {alone.overhead_ms:.1f}",
            file=sys.stderr,
            flush=True,
        )
        assert same, f"budget {row.budget}: prefix scoring differs from a separate run"


if __name__ == "__main__":
    main()
