"""Measure the built-in supernet's weight-shared accuracy across sub-networks.

    python scripts/supernet_accuracy.py [--random 5] [--seed 0]

Prints a Markdown table (smallest, largest and random sub-networks): validation accuracy
after BatchNorm recalibration, MACs and params. This is the table in the README.
"""

from __future__ import annotations

import argparse
import random

from models.fmnist_cnn import largest_arch, smallest_arch
from models.registry import get_supernet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--random", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    supernet = get_supernet("fmnist-ofa-cnn")
    rng = random.Random(args.seed)
    space = supernet.space()
    rows = [("smallest", smallest_arch()), ("largest", largest_arch())]
    rows += [
        (f"random {i + 1}", {g: rng.choice(c) for g, c in space.items()})
        for i in range(args.random)
    ]
    rows.sort(key=lambda row: supernet.complexity(row[1]).macs)
    print("| sub-network | encoding | accuracy | MMACs | params |")
    print("|---|---|---|---|---|")
    for label, arch in rows:
        c = supernet.complexity(arch)
        accuracy = supernet.evaluate(arch)["accuracy"]
        print(
            f"| {label} | `{supernet.encode(arch)}` | {accuracy:.4f} | {c.macs / 1e6:.2f} "
            f"| {c.params:,} |"
        )


if __name__ == "__main__":
    main()
