"""What the Once-for-All supernets share: elastic ops, checkpoint loading, ImageNet evaluation.

The elastic modules here are laid out so that their ``state_dict`` keys are those of the
``ofa`` package's dynamic layers (a weight ``w`` of a sliced layer lives one level down, as
``<layer>.conv.weight`` / ``<layer>.bn.weight``), so a checkpoint trained with Once-for-All
loads without renaming. Elastic forward passes take the active sizes as arguments instead of
storing them on the module, so one supernet instance serves concurrent threads.

Checkpoints are untrusted: they are read with ``torch.load(weights_only=True)`` and every key
and shape is checked before anything is copied (:func:`load_checkpoint`).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import CheckpointMismatch, InvalidInput

from .base import Arch, ImageFormat, InputSpec
from .evaluation import predict, recalibrate_bn
from .sliced import SlicedSupernet
from .user_data import torch_load_reason
from .user_images import CALIB_DIR

if TYPE_CHECKING:
    from .user_data import UserData

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Evaluation crop: resize to ``ceil(r / CROP)`` then take the centre ``r x r`` (OFA's protocol).
CROP = 0.875
CHECKPOINT_FIELD = "checkpoint"
EVAL_BATCH = 100


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10 % below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def hard_swish(x: torch.Tensor) -> torch.Tensor:
    # Written out (not F.hardswish) so that the float operations match Once-for-All's.
    return x * F.relu6(x + 3.0) / 6.0


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3.0) / 6.0


class HardSwish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hard_swish(x)


class HardSigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hard_sigmoid(x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "h_swish": HardSwish}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def seq(**layers: nn.Module | None) -> nn.Sequential:
    """A Sequential whose state_dict keys are the given names (``None`` entries left out)."""
    return nn.Sequential(OrderedDict((k, v) for k, v in layers.items() if v is not None))


def conv_bn_act(
    cin: int, cout: int, kernel: int, stride: int = 1, act: str | None = None, groups: int = 1
) -> nn.Sequential:
    """Static conv (no bias) + BatchNorm (+ activation), named ``conv`` / ``bn`` / ``act``."""
    return seq(
        conv=nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        bn=nn.BatchNorm2d(cout),
        act=activation(act) if act is not None else None,
    )


class DynConv(nn.Module):
    """A convolution run on its first ``out`` filters and first ``in`` input channels."""

    def __init__(self, max_in: int, max_out: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.stride, self.padding = stride, kernel // 2
        self.conv = nn.Conv2d(max_in, max_out, kernel, stride, bias=False)

    def weight(self, out_channels: int, in_channels: int) -> torch.Tensor:
        return self.conv.weight[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        w = self.weight(out_channels, x.shape[1]).contiguous()
        return F.conv2d(x, w, None, self.stride, self.padding)

    def static(self, out_channels: int, in_channels: int) -> nn.Conv2d:
        kernel = self.conv.kernel_size[0]
        conv = nn.Conv2d(in_channels, out_channels, kernel, self.stride, self.padding, bias=False)
        conv.weight.data.copy_(self.weight(out_channels, in_channels).data)
        return conv


class DynBN(nn.Module):
    """BatchNorm over the first ``C`` channels of the largest layer (C = the input's)."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, c = self.bn, x.shape[1]
        assert bn.running_mean is not None and bn.running_var is not None
        momentum = bn.momentum if bn.momentum is not None else 0.1
        return F.batch_norm(
            x,
            bn.running_mean[:c],
            bn.running_var[:c],
            bn.weight[:c],
            bn.bias[:c],
            bn.training,
            momentum,
            bn.eps,
        )

    def static(self, channels: int) -> nn.BatchNorm2d:
        src, bn = self.bn, nn.BatchNorm2d(channels, eps=self.bn.eps)
        assert src.running_mean is not None and src.running_var is not None
        assert bn.running_mean is not None and bn.running_var is not None
        bn.weight.data.copy_(src.weight.data[:channels])
        bn.bias.data.copy_(src.bias.data[:channels])
        bn.running_mean.copy_(src.running_mean[:channels])
        bn.running_var.copy_(src.running_var[:channels])
        return bn


class DynStage(nn.Module):
    """A (conv, bn) pair of dynamic ops, keys ``conv.conv.weight`` and ``bn.bn.*``."""

    def __init__(self, conv: DynConv, channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.bn = DynBN(channels)


# --- checkpoints ------------------------------------------------------------------------------

# Once-for-All checkpoints exist in older layouts too: blocks named ``mobile_inverted_conv``
# instead of ``conv``, and dynamic ops saved flat (``bn.weight`` for ``bn.bn.weight``).
_LEGACY_REWRITES = (
    (".conv.", ".mobile_inverted_conv."),
    (".bn.bn.", ".bn."),
    (".conv.conv.", ".conv."),
    (".linear.linear.", ".linear."),
)


def _legacy_names(key: str) -> Iterator[str]:
    """Names under which ``key`` may appear in an older checkpoint (every rewrite combination)."""
    names = {key}
    for old, new in _LEGACY_REWRITES:
        names |= {name.replace(old, new, 1) for name in names if old in name}
    names.discard(key)
    return iter(sorted(names))


def _alias_table(expected: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Legacy name -> our key, keeping only names that point at exactly one of our keys."""
    table: dict[str, str] = {}
    ambiguous: set[str] = set()
    for key in expected:
        for name in _legacy_names(key):
            if name in table:
                ambiguous.add(name)
            table[name] = key
    return {
        name: key for name, key in table.items() if name not in ambiguous and name not in expected
    }


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``, read without unpickling code; ``{"state_dict": ...}``
    (the layout of Once-for-All's published files) is unwrapped."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:  # by its name: the catalog and a 422 show it to API clients,
        # not the operator's directories (review 32a), as the other refusals here
        raise CheckpointMismatch(
            f"{path.name}: does not exist (moved or deleted since it was configured)",
            field=CHECKPOINT_FIELD,
        ) from None
    except Exception as exc:  # UnpicklingError for pickled code, RuntimeError for bad zips
        raise CheckpointMismatch(
            f"{path.name}: refused by torch.load(weights_only=True): {torch_load_reason(exc)}",
            field=CHECKPOINT_FIELD,
        ) from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise CheckpointMismatch(
            f"{path.name}: expected a state_dict (a dict of tensors)", field=CHECKPOINT_FIELD
        )
    return {str(k): v for k, v in loaded.items()}


def load_checkpoint(module: nn.Module, path: Path) -> None:
    """Load ``path`` into ``module`` after checking every key and shape.

    The first missing, unexpected or mis-shaped key is named with the expected shape.
    ``num_batches_tracked`` counters may be absent (older PyTorch did not save them).
    """
    expected = module.state_dict()
    aliases = _alias_table(expected)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in read_state_dict(path).items():
        key = name if name in expected else aliases.get(name)
        if key is None:
            raise CheckpointMismatch(
                f"{path.name}: unexpected key {name!r}", field=CHECKPOINT_FIELD
            )
        state[key] = tensor
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            raise CheckpointMismatch(
                f"{path.name}: missing key {key!r} (expected shape {tuple(tensor.shape)})",
                field=CHECKPOINT_FIELD,
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointMismatch(
                f"{path.name}: key {key!r} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)}",
                field=CHECKPOINT_FIELD,
            )
    module.load_state_dict(state, strict=False)


# --- evaluation data --------------------------------------------------------------------------


def imagenet_preprocess(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """RGB images (N, 3, H, W) or (N, H, W, 3), pixel values 0..255, to the network's input at
    ``resolution``: shorter side resized to ``ceil(resolution / 0.875)`` (bilinear, antialiased;
    Once-for-All used Pillow's, so accuracies can differ slightly), centre crop, ImageNet
    normalisation."""
    images = channels_first(images)
    size, (height, width) = math.ceil(resolution / CROP), images.shape[2:]
    short = min(height, width)  # the shorter side becomes ``size``, as in torchvision's Resize
    shape = (size * height // short, size * width // short)
    x = F.interpolate(images.float(), size=shape, mode="bilinear", antialias=True)
    top, left = (shape[0] - resolution) // 2, (shape[1] - resolution) // 2
    x = x[:, :, top : top + resolution, left : left + resolution] / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def channels_first(images: torch.Tensor, what: str = "inputs") -> torch.Tensor:
    """RGB images as (N, 3, H, W), from that layout or (N, H, W, 3); ``InvalidInput``
    naming ``what`` for any other shape."""
    if images.dim() == 4 and images.shape[1] != 3 and images.shape[3] == 3:
        images = images.permute(0, 3, 1, 2)
    if images.dim() != 4 or images.shape[1] != 3:
        raise InvalidInput(
            f"{what} must be RGB images (N, 3, H, W) or (N, H, W, 3) with values 0..255, "
            f"got {tuple(images.shape)}",
            field="validation_data",
        )
    return images


class ElasticNet(nn.Module):
    """What an OFA supernet module offers: a forward at any architecture, and extraction."""

    @abstractmethod
    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor: ...

    @abstractmethod
    def extract(self, arch: Arch) -> nn.Module: ...


class OFASupernet(SlicedSupernet):
    """Shared plumbing of the Once-for-All supernets: weights, evaluation, caching.

    Without ``checkpoint`` the weights are a seeded random initialisation: architecture,
    MACs, params and latency are real, accuracy is meaningless. With a checkpoint (a
    state_dict of the ``ofa`` package's supernet, bare or as ``{"state_dict": ...}``) the
    weights are Once-for-All's. ``validation_data`` is a user data file or image directory
    (see :mod:`models.user_data`): RGB images 0..255, and calibration images to recalibrate
    BatchNorm per sub-network (Once-for-All's sub-networks need it).
    """

    metrics = ("accuracy",)
    num_classes: int

    def __init__(
        self,
        *,
        checkpoint: str | Path | None = None,
        validation_data: str | Path | None = None,
        num_classes: int = 1000,
        seed: int = 0,
        cache_size: int = 2,
    ) -> None:
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.validation_data = validation_data
        self.num_classes = num_classes
        self.seed = seed
        self._init_slices(cache_size)
        if self.checkpoint is not None:
            _ = self.module  # a bad checkpoint is refused now, not at the first evaluation

    @abstractmethod
    def build(self) -> ElasticNet:
        """The supernet module with PyTorch's default initialisation."""

    @cached_property
    def module(self) -> ElasticNet:
        """Built on first use, so that listing the catalog does not allocate the weights."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = self.build().eval()
        if self.checkpoint is not None:
            load_checkpoint(module, self.checkpoint)
        return module

    def validate(self, arch: Arch) -> None:
        for gene, choices in self.space().items():
            if arch.get(gene) not in choices:
                raise InvalidInput(
                    f"gene {gene!r} must be one of {choices}, got {arch.get(gene)!r}", field="arch"
                )

    def recalibrate(self, subnet: nn.Module, arch: Arch) -> None:
        """On the validation data's calibration images when there are any; otherwise the
        running statistics of the checkpoint are kept."""
        if self.validation_data is not None and self._data.calib is not None:
            recalibrate_bn(subnet, imagenet_preprocess(self._data.calib, arch["r"]))

    @cached_property
    def _data(self) -> UserData:
        from .user_data import load_user_data  # reads the settings: only when data is given

        assert self.validation_data is not None
        return load_user_data(
            self.validation_data, num_classes=self.num_classes, image_format=self.image_format()
        )

    def has_validation_data(self) -> bool:
        return self.validation_data is not None

    def num_outputs(self) -> int:
        return self.num_classes

    def output_classes(self) -> tuple[str, ...] | None:
        """The class names of the validation data's image directory (its sub-directories,
        or its ``classes.txt``), where they name every class the network predicts; the
        weights themselves do not name them."""
        if self.validation_data is None:
            return None
        classes = self._data.classes
        return classes if classes is not None and len(classes) == self.num_classes else None

    def check_data(self) -> None:
        from .user_data import check_pixel_scale

        if self.validation_data is not None:
            check_pixel_scale(channels_first(self._data.inputs))
            if self._data.calib is not None:
                check_pixel_scale(channels_first(self._data.calib, "calib_inputs"), "calib_inputs")

    def quality_inputs(self) -> Sequence[Any]:
        if self.validation_data is None:
            return (self.module,)
        return (self.module, self._data.inputs, self._data.labels, self._data.calib)

    def evaluate(self, arch: Arch, module: nn.Module | None = None) -> dict[str, float]:
        if self.validation_data is None:
            raise InvalidInput(
                f"{self.name} has no validation data: give ImageNet-style validation images "
                "(validation_data=<file or image directory under HWNAS_DATA_ROOTS>) to measure "
                "accuracy",
                field="validation_data",
            )
        arch = self.canonical(arch)
        module = module if module is not None else self.extract(arch)
        inputs, labels, step = self._data.inputs, self._data.labels, EVAL_BATCH
        correct = 0
        for start in range(0, len(labels), step):  # preprocess by chunks: float images are big
            x = imagenet_preprocess(inputs[start : start + step], arch["r"])
            correct += int((predict(module, x, step) == labels[start : start + step]).sum())
        return {"accuracy": correct / len(labels)}

    def input_spec(self, arch: Arch) -> InputSpec:
        r = self.canonical(arch)["r"]
        return InputSpec(
            shape=(1, 3, r, r),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            layout="NCHW:RGB/255",
            preprocess=(
                f"RGB 0..255 values, shorter side resized to {math.ceil(r / CROP)} "
                "(torch.nn.functional.interpolate, bilinear, antialias=True; the other side "
                f"size * long // short), centre crop {r} x {r} (offsets rounded down), /255, "
                "then (x - mean) / std per channel"
            ),
        )

    def image_format(self) -> ImageFormat:
        """RGB, stored at the evaluation resize of the largest resolution (256 for 224), so
        that ``imagenet_preprocess`` crops the largest input without upsampling."""
        return ImageFormat(mode="RGB", size=math.ceil(max(self.space()["r"]) / CROP))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["space_size"] = self.space_size()
        info["checkpoint"] = str(self.checkpoint) if self.checkpoint is not None else None
        if (warning := self.quality_warning()) is not None:
            info["note"] = f"{warning}; MACs, params and latency are real"
        return info

    def quality_warning(self) -> str | None:
        if self.checkpoint is None:
            return "random weights (no checkpoint given): accuracy is meaningless"
        if self.validation_data is not None and not self._calibrates():
            return (  # audit 30: nothing said so
                "no calibration images (an image directory's _calib/, a file's calib_inputs): "
                "each sub-network keeps the checkpoint's BatchNorm statistics, which "
                "Once-for-All's sub-networks need recalibrated: accuracy may be far below "
                "what they reach"
            )
        return None

    def _calibrates(self) -> bool:
        """Whether the validation data holds calibration images (a directory's ``_calib``
        folder looked up, not its images decoded)."""
        if self.given_data is not None and self.given_data.is_dir():
            return (self.given_data / CALIB_DIR).is_dir()
        return self._data.calib is not None

    @abstractmethod
    def space_size(self) -> int:
        """Number of distinct sub-networks (canonical architectures)."""
