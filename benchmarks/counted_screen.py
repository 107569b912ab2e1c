"""What the screen on counted metrics saves (``Strategy.screen_with``, session 33): the
measurements a search spends on sub-networks whose MACs or params, known without
measuring, already break its constraints.

The built-in supernet's space (``fmnist-ofa-cnn``), its real counted MACs and params
(``Supernet.complexity``), constraints ``macs <= --macs`` and ``params <= --params``, and a
stand-in for the measured metrics (no network is run: accuracy and latency are smooth
functions of the counts plus a fixed per-architecture term, so the searches have something
to learn). Each strategy runs ``--budget`` measurements per seed, without and with the
screen, side by side; reported per strategy: the measurements that broke a counted bound
(mean over seeds), the feasible results, and the proposals passed over.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/counted_screen.py --seeds 5 --budget 40
"""

from __future__ import annotations

import argparse
import hashlib
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.registry import get_supernet  # noqa: E402
from search import Bound, create_strategy, is_feasible  # noqa: E402
from workers.runner import job_space  # noqa: E402

STRATEGIES = ("random", "nsga2", "tpe", "linas")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--macs", type=float, default=1.5e6)
    parser.add_argument("--params", type=float, default=60_000)
    args = parser.parse_args()
    supernet = get_supernet("fmnist-ofa-cnn")
    space = job_space(supernet)
    constraints = {"macs": Bound(max=args.macs), "params": Bound(max=args.params)}
    counted_memo: dict[str, dict[str, float]] = {}

    def counted(arch: dict) -> dict[str, float]:
        key = space.key(arch)
        if key not in counted_memo:
            c = supernet.complexity(arch)
            counted_memo[key] = {"macs": float(c.macs), "params": float(c.params)}
        return counted_memo[key]

    def measure(arch: dict) -> dict[str, float]:
        known = counted(arch)
        digest = hashlib.sha256(space.key(arch).encode()).digest()
        jitter = digest[0] / 255 - 0.5
        return {
            "accuracy": 0.7 + 0.02 * math.log(known["macs"]) + 0.01 * jitter,
            "latency_ms": known["macs"] / 2e6 + 0.1 * (digest[1] / 255),
            **known,
        }

    objectives = {"accuracy": "max", "latency_ms": "min"}
    print(f"space {space.size:,} architectures; constraints macs <= {args.macs:g}, "
          f"params <= {args.params:g}; budget {args.budget}, seeds {args.seeds}\n")  # fmt: skip
    print(
        f"{'strategy':<8} {'screen':<6} {'broke a bound':>14} {'feasible':>9} {'passed over':>12}"
    )
    for name in STRATEGIES:
        for screened in (False, True):
            broke, feasible, passed = [], [], []
            for seed in range(args.seeds):
                strategy = create_strategy(
                    name, space=space, objectives=objectives, constraints=constraints,
                    seed=seed, budget=args.budget,
                )  # fmt: skip
                if screened:
                    strategy.screen_with(counted)
                while proposals := strategy.ask(1):
                    strategy.tell(proposals[0], measure(proposals[0]))
                told = [m for _, m in strategy.history]
                broke.append(sum(not is_feasible(m, constraints) for m in told))
                feasible.append(len(told) - broke[-1])
                passed.append(strategy.n_screened)
            print(f"{name:<8} {'on' if screened else 'off':<6} "
                  f"{statistics.mean(broke):>14.1f} {statistics.mean(feasible):>9.1f} "
                  f"{statistics.mean(passed):>12.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
