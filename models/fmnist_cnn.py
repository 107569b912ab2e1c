"""The built-in supernet: an elastic MobileNet-style CNN for Fashion-MNIST.

Search space (Once-for-All style), genes in order:
  ``r``                      input resolution, one of 20, 24, 28
  ``d1 d2 d3``               depth of each of the 3 stages, 1..3 blocks
  ``k{s}_{b}`` / ``e{s}_{b}`` kernel size (3, 5, 7) and expand ratio (2, 4, 6) of block b of stage s

Encoding (the de-duplication key): ``r24-k3e4.k5e2-k7e6-k3e2.k3e4.k5e6``: the resolution, then
one group per stage separated by ``-``, one ``k<kernel>e<expand>`` per *active* block separated
by ``.``. Genes of inactive blocks have no effect; ``canonical`` sets them to k3 / e2.

Network: stem conv3x3/2 (16 ch) -> stages of inverted residual blocks with widths 24, 40, 64
and strides 1, 2, 2 -> 1x1 conv to 128 -> global average pool -> linear to 10 classes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import CheckpointMismatch, InvalidInput

from . import data
from .base import Arch, Complexity, ImageFormat, InputSpec, Supernet
from .evaluation import accuracy, recalibrate_bn
from .layers import ElasticInvertedResidual, InvertedResidual, conv_bn
from .registry import register_supernet
from .sliced import SlicedSupernet
from .user_data import grey_images, load_user_data

RESOLUTIONS = (20, 24, 28)
DEPTHS = (1, 2, 3)
KERNELS = (3, 5, 7)
EXPANDS = (2, 4, 6)
STEM_WIDTH = 16
STAGE_WIDTHS = (24, 40, 64)
STAGE_STRIDES = (1, 2, 2)
HEAD_WIDTH = 128
NUM_CLASSES = 10
WEIGHTS_PATH = Path(__file__).parent / "weights" / "fmnist_ofa_cnn.pt"
_ENCODING = re.compile(r"^r(\d+)((?:-k\d+e\d+(?:\.k\d+e\d+)*){3})$")


def _block_genes(stage: int, block: int) -> tuple[str, str]:
    return f"k{stage}_{block}", f"e{stage}_{block}"


def active_blocks(arch: Arch) -> list[tuple[int, int, int, int]]:
    """(stage, block, kernel, expand) of every active block, in order (1-based indices)."""
    blocks = []
    for s in range(1, len(STAGE_WIDTHS) + 1):
        for b in range(1, arch[f"d{s}"] + 1):
            kg, eg = _block_genes(s, b)
            blocks.append((s, b, arch[kg], arch[eg]))
    return blocks


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class FmnistSubnet(nn.Module):
    """A standalone sub-network: only the active weights, plain layers, exportable."""

    def __init__(self, blocks: list[InvertedResidual]) -> None:
        super().__init__()
        self.stem = conv_bn(1, STEM_WIDTH, 3, 2)
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(STAGE_WIDTHS[-1], HEAD_WIDTH, 1, 1)
        self.classifier = nn.Linear(HEAD_WIDTH, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = self.blocks(x)
        x = F.relu(self.head(x))
        return self.classifier(x.mean((2, 3)))


class ElasticCNN(nn.Module):
    """The supernet module: the largest network, run at any architecture by slicing."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, STEM_WIDTH, 3, 2)
        stages = []
        cin = STEM_WIDTH
        for width, stride in zip(STAGE_WIDTHS, STAGE_STRIDES, strict=True):
            blocks = []
            for b in range(max(DEPTHS)):
                block_in = cin if b == 0 else width
                blocks.append(
                    ElasticInvertedResidual(
                        block_in,
                        width,
                        block_in * max(EXPANDS),
                        max(KERNELS),
                        stride if b == 0 else 1,
                    )
                )
            stages.append(nn.ModuleList(blocks))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.head = conv_bn(STAGE_WIDTHS[-1], HEAD_WIDTH, 1, 1)
        self.classifier = nn.Linear(HEAD_WIDTH, NUM_CLASSES)

    def _block(self, stage: int, block: int) -> ElasticInvertedResidual:
        module = cast(nn.ModuleList, self.stages[stage - 1])[block - 1]
        assert isinstance(module, ElasticInvertedResidual)
        return module

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        x = F.relu(self.stem(data.resize(x, arch["r"])))
        for s, b, kernel, expand in active_blocks(arch):
            block = self._block(s, b)
            x = block(x, block.cin * expand, kernel)
        x = F.relu(self.head(x))
        return self.classifier(x.mean((2, 3)))

    def extract(self, arch: Arch) -> FmnistSubnet:
        blocks = []
        for s, b, kernel, expand in active_blocks(arch):
            block = self._block(s, b)
            blocks.append(block.extract(block.cin * expand, kernel))
        subnet = FmnistSubnet(blocks)
        subnet.stem.load_state_dict(self.stem.state_dict())
        subnet.head.load_state_dict(self.head.state_dict())
        subnet.classifier.load_state_dict(self.classifier.state_dict())
        return subnet.eval()


def _space() -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {"r": list(RESOLUTIONS)}
    space.update({f"d{s}": list(DEPTHS) for s in range(1, len(STAGE_WIDTHS) + 1)})
    for s in range(1, len(STAGE_WIDTHS) + 1):
        for b in range(1, max(DEPTHS) + 1):
            kg, eg = _block_genes(s, b)
            space[kg] = list(KERNELS)
            space[eg] = list(EXPANDS)
    return space


def largest_arch() -> Arch:
    return {name: max(choices) for name, choices in _space().items()}


def smallest_arch() -> Arch:
    return {name: min(choices) for name, choices in _space().items()}


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a state_dict safely (no pickled code); mismatches name the first bad key."""
    path = Path(path)  # HWNAS_SUPERNET_CHECKPOINTS gives a str
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = module.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointMismatch(
                f"{path.name}: missing key {key!r} (expected shape {tuple(tensor.shape)})",
                field="checkpoint",
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointMismatch(
                f"{path.name}: key {key!r} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)}",
                field="checkpoint",
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointMismatch(f"{path.name}: unexpected key {extra[0]!r}", field="checkpoint")
    module.load_state_dict(state)


#: Fashion-MNIST's labels, in the order of its class ids (the network's outputs).
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


class FmnistOFACNN(SlicedSupernet):
    """The built-in Fashion-MNIST supernet, trained with the sandwich rule (see scripts/)."""

    name = "fmnist-ofa-cnn"
    metrics = ("accuracy",)

    def output_classes(self) -> tuple[str, ...]:
        return FASHION_MNIST_CLASSES

    def num_outputs(self) -> int:
        return NUM_CLASSES

    def __init__(
        self,
        *,
        weights: Path | None = WEIGHTS_PATH,
        cache_size: int = 8,
        validation_data: str | Path | None = None,
    ) -> None:
        self.module = ElasticCNN().eval()
        self.weights = weights
        # User data (models.user_data): grey images 0..255, a file or an image directory;
        # without calibration images the shipped calibration set recalibrates BatchNorm, so
        # extraction is unchanged.
        self.validation_data = validation_data
        if weights is not None:
            load_weights(self.module, weights)
        self._init_slices(cache_size)

    def space(self) -> dict[str, list[Any]]:
        return _space()

    def validate(self, arch: Arch) -> None:
        for gene, choices in _space().items():
            if arch.get(gene) not in choices:
                raise InvalidInput(
                    f"gene {gene!r} must be one of {choices}, got {arch.get(gene)!r}", field="arch"
                )

    def canonical(self, arch: Arch) -> Arch:
        self.validate(arch)
        out = dict(arch)
        for s in range(1, len(STAGE_WIDTHS) + 1):
            for b in range(arch[f"d{s}"] + 1, max(DEPTHS) + 1):
                kg, eg = _block_genes(s, b)
                out[kg], out[eg] = KERNELS[0], EXPANDS[0]
        return {gene: out[gene] for gene in _space()}

    def encode(self, arch: Arch) -> str:
        arch = self.canonical(arch)
        stages: list[list[str]] = [[] for _ in STAGE_WIDTHS]
        for s, _b, kernel, expand in active_blocks(arch):
            stages[s - 1].append(f"k{kernel}e{expand}")
        return f"r{arch['r']}-" + "-".join(".".join(blocks) for blocks in stages)

    def decode(self, encoding: str) -> Arch:
        match = _ENCODING.match(encoding)
        if not match:
            raise InvalidInput(
                f"malformed architecture encoding {encoding!r}; expected e.g. "
                "'r24-k3e4.k5e2-k7e6-k3e2.k3e4.k5e6'",
                field="arch",
            )
        arch: Arch = {"r": int(match.group(1))}
        for s, group in enumerate(match.group(2)[1:].split("-"), start=1):
            blocks = group.split(".")
            arch[f"d{s}"] = len(blocks)
            for b, block in enumerate(blocks, start=1):
                kernel, expand = block[1:].split("e")
                kg, eg = _block_genes(s, b)
                arch[kg], arch[eg] = int(kernel), int(expand)
        for s in range(1, len(STAGE_WIDTHS) + 1):
            for b in range(1, max(DEPTHS) + 1):
                arch.setdefault(_block_genes(s, b)[0], KERNELS[0])
                arch.setdefault(_block_genes(s, b)[1], EXPANDS[0])
        return self.canonical(arch)

    def complexity(self, arch: Arch) -> Complexity:
        arch = self.canonical(arch)
        size = _conv_out(arch["r"], 3, 2)
        macs = size * size * STEM_WIDTH * 9
        params = STEM_WIDTH * 9 + 2 * STEM_WIDTH
        cin = STEM_WIDTH
        for s, b, kernel, expand in active_blocks(arch):
            cout, stride = STAGE_WIDTHS[s - 1], STAGE_STRIDES[s - 1] if b == 1 else 1
            hidden = cin * expand
            out = _conv_out(size, kernel, stride)
            macs += size * size * cin * hidden + out * out * hidden * (kernel * kernel + cout)
            params += cin * hidden + hidden * kernel * kernel + hidden * cout
            params += 2 * (2 * hidden + cout)  # BatchNorm scale and shift
            size, cin = out, cout
        macs += size * size * cin * HEAD_WIDTH + HEAD_WIDTH * NUM_CLASSES
        params += cin * HEAD_WIDTH + 2 * HEAD_WIDTH + HEAD_WIDTH * NUM_CLASSES + NUM_CLASSES
        return Complexity(macs=int(macs), params=int(params))

    @cached_property
    def _data(self) -> data.Subset:
        shipped = data.load_subset()
        if self.validation_data is None:
            return shipped
        user = load_user_data(
            self.validation_data, num_classes=NUM_CLASSES, image_format=self.image_format()
        )
        calib = shipped.calib_x if user.calib is None else grey_images(user.calib, "calib_inputs")
        return data.Subset(grey_images(user.inputs), user.labels.numpy(), calib)

    def check_data(self) -> None:
        _ = self._data  # loading checks the labels' range and the images' shape

    def quality_inputs(self) -> Sequence[Any]:
        return (self.module, self._data.val_x, self._data.val_y, self._data.calib_x)

    def recalibrate(self, subnet: nn.Module, arch: Arch) -> None:
        """BatchNorm statistics from the calibration set (the user's calibration images, or
        the shipped ones), in a fixed order: deterministic."""
        recalibrate_bn(subnet, data.preprocess(self._data.calib_x, arch["r"]))

    def evaluate(self, arch: Arch, module: nn.Module | None = None) -> dict[str, float]:
        arch = self.canonical(arch)
        module = module if module is not None else self.extract(arch)
        x = data.preprocess(self._data.val_x, arch["r"])
        y = torch.as_tensor(self._data.val_y.astype(np.int64))
        return {"accuracy": accuracy(module, x, y)}

    def input_spec(self, arch: Arch) -> InputSpec:
        r = self.canonical(arch)["r"]
        return InputSpec(
            shape=(1, 1, r, r),
            mean=(data.MEAN,),
            std=(data.STD,),
            layout="NCHW:L/255",
            preprocess=(
                "grey 28 x 28 image, /255, (x - mean) / std"
                + (
                    ""
                    if r == data.NATIVE_RESOLUTION
                    else f", then resized to {r} x {r} (torch.nn.functional.interpolate, "
                    "bilinear, align_corners=False, no antialiasing)"
                )
            ),
        )

    def image_format(self) -> ImageFormat:
        """Grey, 28 x 28 (Fashion-MNIST's own size; ``evaluate`` resizes to ``r``)."""
        return ImageFormat(mode="L", size=data.NATIVE_RESOLUTION)


@register_supernet(FmnistOFACNN.name)
def _create_fmnist_ofa_cnn(**kwargs: Any) -> Supernet:
    return FmnistOFACNN(**kwargs)
