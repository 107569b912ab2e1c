"""Reproduce the built-in supernet's weights and the shipped evaluation subset.

    python scripts/train_fmnist_supernet.py [--data /usr/share/datasets/fashion-mnist]
        [--epochs 20] [--device cuda|cpu] [--out models/weights/fmnist_ofa_cnn.pt]

Reads Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package. Writes the subset
(2,000 class-balanced test images for validation, 1,000 training images for BatchNorm
recalibration), then trains the supernet with the sandwich rule and saves its state_dict.
A GPU makes it take minutes; on 2 CPU cores it takes hours.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch

from models import data
from models.fmnist_cnn import ElasticCNN, largest_arch, smallest_arch
from models.training import TrainConfig, train_supernet


def write_subset(root: Path, out: Path) -> None:
    test_x, test_y = data.load_split(root, "t10k")
    train_x, train_y = data.load_split(root, "train")
    val = data.balanced_indices(test_y, 200, seed=0)
    calib = data.balanced_indices(train_y, 100, seed=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, val_x=test_x[val], val_y=test_y[val], calib_x=train_x[calib])


def sampler(space: dict[str, list]) -> object:
    def sample(rng: random.Random) -> dict:
        return {gene: rng.choice(choices) for gene, choices in space.items()}

    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", type=Path, default=data.DEBIAN_ROOT)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("models/weights/fmnist_ofa_cnn.pt"))
    parser.add_argument("--subset", type=Path, default=data.SUBSET_PATH)
    args = parser.parse_args()

    write_subset(args.data, args.subset)
    images, labels = data.load_split(args.data, "train")
    x = data.preprocess(images, data.NATIVE_RESOLUTION).to(args.device)
    y = torch.as_tensor(labels.astype(np.int64)).to(args.device)
    module = ElasticCNN().to(args.device)
    from models.fmnist_cnn import _space

    started = time.perf_counter()
    train_supernet(
        module,
        x,
        y,
        largest=largest_arch(),
        smallest=smallest_arch(),
        sample=sampler(_space()),
        config=TrainConfig(epochs=args.epochs),
    )
    print(f"trained in {time.perf_counter() - started:.0f} s on {args.device}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in module.state_dict().items()}, args.out)
    print(f"wrote {args.out} and {args.subset}")


if __name__ == "__main__":
    main()
