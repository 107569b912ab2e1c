"""Fashion-MNIST: reading the IDX files, the shipped subset, and preprocessing.

The full data set comes from Debian's ``dataset-fashion-mnist`` package (read only by the
training script). The repository ships a small subset (``models/data/fmnist_subset.npz``:
a class-balanced validation set drawn from the test split, and a calibration set drawn from
the training split for BatchNorm recalibration) so searches run offline.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
SUBSET_PATH = Path(__file__).parent / "data" / "fmnist_subset.npz"
MEAN, STD = 0.2860, 0.3530
NATIVE_RESOLUTION = 28


def read_idx(path: Path) -> np.ndarray:
    """Read an (optionally gzipped) IDX file of unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of the 'train' or 't10k' split."""
    images = read_idx(root / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{split}-labels-idx1-ubyte.gz")
    return images, labels


@dataclass(frozen=True)
class Subset:
    """The shipped evaluation data: validation images/labels and calibration images."""

    val_x: np.ndarray
    val_y: np.ndarray
    calib_x: np.ndarray


def load_subset(path: Path = SUBSET_PATH) -> Subset:
    with np.load(path) as npz:
        return Subset(npz["val_x"], npz["val_y"], npz["calib_x"])


def balanced_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` random indices of each class, sorted."""
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(picks))


def preprocess(images: np.ndarray | torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (N, 28, 28) -> normalised float (N, 1, r, r), bilinear resize when r != 28."""
    x = torch.as_tensor(np.array(images, copy=True)) if isinstance(images, np.ndarray) else images
    x = x.float().div(255.0).sub(MEAN).div(STD).unsqueeze(1)
    return resize(x, resolution)


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
