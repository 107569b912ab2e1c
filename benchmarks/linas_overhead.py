"""The search's own time per evaluation on the built-in supernets' real spaces.

`linas` (or another strategy) asks for one architecture at a time and is told synthetic
metrics computed from its counted MACs (accuracy rising with log MACs, latency proportional
to MACs, both with seeded noise), so the time measured is the strategy's alone: its
predictors and its candidate pool, as a job spends it between measurements. Reports the mean
time of `ask` and `tell` per evaluation and a digest of the architectures proposed (equal
digests: the same search). Several checkouts can be compared side by side (`--repos`, each
run in its own process with its own code):

    .venv/bin/python benchmarks/linas_overhead.py
    .venv/bin/python benchmarks/linas_overhead.py --repos /tmp/old . --budget 60
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SUPERNETS = ["fmnist-ofa-cnn", "ofa_mbv3_d234_e346_k357_w1.0", "ofa_resnet50"]


def one(args: argparse.Namespace) -> dict[str, Any]:
    """One supernet, in this process, with the code of ``args.code``."""
    sys.path.insert(0, str(Path(args.code).resolve()))
    from models.registry import get_supernet
    from search import create_strategy
    from search.space import SearchSpace

    net = get_supernet(args.supernet)
    space = SearchSpace(net.space(), canonical=net.canonical, encode=net.encode)
    strategy = create_strategy(
        args.strategy, space=space, objectives={"accuracy": "max", "latency_ms": "min"},
        constraints={}, seed=0, budget=args.budget,
    )  # fmt: skip
    noise = random.Random(0)
    asking = telling = 0.0
    keys = []
    for _ in range(args.budget):
        started = time.perf_counter()
        [arch] = strategy.ask(1)
        asking += time.perf_counter() - started
        keys.append(space.key(arch))
        macs = net.complexity(arch).macs
        metrics = {
            "accuracy": 0.5 + 0.005 * math.log(macs) + noise.gauss(0, 0.01),
            "latency_ms": macs / 1e7 * (1 + noise.gauss(0, 0.05)),
        }
        started = time.perf_counter()
        strategy.tell(arch, metrics)
        telling += time.perf_counter() - started
    digest = hashlib.sha1(json.dumps(keys).encode()).hexdigest()[:12]
    return {"genes": len(net.space()), "ask_ms": 1000 * asking / args.budget,
            "tell_ms": 1000 * telling / args.budget, "digest": digest}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", nargs="+", default=["."], help="checkouts to compare")
    parser.add_argument("--supernets", nargs="+", default=SUPERNETS)
    parser.add_argument("--strategy", default="linas")
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", default=".", help=argparse.SUPPRESS)
    parser.add_argument("--supernet", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    print(f"{args.strategy}, {args.budget} evaluations, one ask at a time")
    print("| supernet | genes | checkout | ask ms per evaluation | tell ms | proposals digest |")
    print("|---|---:|---|---:|---:|---|")
    for supernet in args.supernets:
        for repo in args.repos:
            command = [sys.executable, __file__, "--one", "--code", repo, "--supernet", supernet,
                       "--strategy", args.strategy, "--budget", str(args.budget)]  # fmt: skip
            done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
            if done.returncode:
                print(f"| {supernet} | | {repo} | failed: {done.stderr.strip().splitlines()[-1]} |")
                continue
            got = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {supernet} | {got['genes']} | {repo} | {got['ask_ms']:.1f} | "
                  f"{got['tell_ms']:.2f} | {got['digest']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
