"""A Transformer supernet for sequence classification (HAT / DyNAS-T BERT-space style).

Search space, genes in order:
  ``e``                 hidden size (embedding dim, shared by every layer): 64, 96, 128
  ``l``                 number of encoder layers: 1..4
  ``h{i}`` / ``f{i}``   attention heads (2, 4, 8; 16 dims each) and FFN size (128, 256, 384)
                        of layer i

Encoding (the de-duplication key): ``e96-h4f256.h2f128.h8f384``: the hidden size, then one
``h<heads>f<ffn>`` per *active* layer separated by ``.`` (so the depth is the group count).
Genes of inactive layers have no effect; ``canonical`` sets them to h2 / f128.

Weight sharing (HAT's): every elastic dimension keeps its *first* entries: the first ``e``
embedding columns, the first ``16 * heads`` rows of the query/key/value projections, the first
``ffn`` hidden units, the first ``l`` layers. LayerNorm over ``e`` uses the first ``e`` of
its scale and shift. No BatchNorm, so a sub-network needs no recalibration.

Network (pre-LN): token + learned position embeddings -> ``l`` x [x + MHA(LN(x)),
x + FFN(LN(x)) with GELU] -> LN -> mean over positions -> linear to 4 classes.
Input: int64 token ids, shape (batch, length), length <= 32, vocabulary of 256. Accuracy is
measured at the validation data's length; latency and MACs at length 32 (the example input);
the exported ONNX and TorchScript files take any length up to 32.

Weights: by default seeded random initialisation; a trained checkpoint can be passed as
``weights`` (a state_dict of :class:`ElasticTextTransformer`). The default validation data is
a synthetic task (which of 4 marker tokens occurs most often), generated from a seed; with
random weights its accuracy is chance level and means nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import InvalidInput

from .base import Arch, Complexity, InputSpec, Supernet
from .evaluation import accuracy
from .fmnist_cnn import load_weights
from .registry import register_supernet
from .user_data import UserData, load_user_data

HIDDEN = (64, 96, 128)
LAYERS = (1, 2, 3, 4)
HEADS = (2, 4, 8)
FFN = (128, 256, 384)
HEAD_DIM = 16
VOCAB = 256
MAX_LEN = 32
NUM_CLASSES = 4
MARKERS = NUM_CLASSES  # tokens 0..3 mark the classes of the synthetic task
_ENCODING = re.compile(r"^e(\d+)-(h\d+f\d+(?:\.h\d+f\d+)*)$")


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head scaled dot-product attention over (batch, length, heads * HEAD_DIM)."""
    batch, length, _ = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, length, heads, HEAD_DIM).transpose(1, 2)

    # Plain matmuls (not F.scaled_dot_product_attention): exported as standard ONNX ops and
    # seen by torch.utils.flop_counter on CPU.
    scores = split(q) @ split(k).transpose(-2, -1) * (1.0 / math.sqrt(HEAD_DIM))
    out = scores.softmax(-1) @ split(v)
    return out.transpose(1, 2).reshape(batch, length, heads * HEAD_DIM)


class EncoderLayer(nn.Module):
    """A static pre-LN encoder layer (hidden ``e``, ``heads`` heads, FFN size ``ffn``)."""

    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * HEAD_DIM
        self.norm1 = nn.LayerNorm(hidden)
        self.q, self.k, self.v = (nn.Linear(hidden, inner) for _ in range(3))
        self.out = nn.Linear(inner, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.out(_attention(self.q(y), self.k(y), self.v(y), self.heads))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def _slice_linear(layer: nn.Linear, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    bias = layer.bias[:rows] if layer.bias is not None else None
    return F.linear(x, layer.weight[:rows, :cols], bias)


def _slice_norm(norm: nn.LayerNorm, x: torch.Tensor, hidden: int) -> torch.Tensor:
    return F.layer_norm(x, (hidden,), norm.weight[:hidden], norm.bias[:hidden], norm.eps)


def _copy_linear(src: nn.Linear, dst: nn.Linear) -> None:
    rows, cols = dst.weight.shape
    dst.weight.data.copy_(src.weight.data[:rows, :cols])
    assert src.bias is not None and dst.bias is not None
    dst.bias.data.copy_(src.bias.data[:rows])


def _copy_norm(src: nn.LayerNorm, dst: nn.LayerNorm) -> None:
    hidden = dst.weight.shape[0]
    dst.weight.data.copy_(src.weight.data[:hidden])
    dst.bias.data.copy_(src.bias.data[:hidden])


class ElasticEncoderLayer(EncoderLayer):
    """The largest encoder layer, run at any (hidden, heads, ffn) by slicing its weights."""

    def __init__(self) -> None:
        super().__init__(max(HIDDEN), max(HEADS), max(FFN))

    def run(self, x: torch.Tensor, hidden: int, heads: int, ffn: int) -> torch.Tensor:
        inner = heads * HEAD_DIM
        y = _slice_norm(self.norm1, x, hidden)
        q, k, v = (_slice_linear(p, y, inner, hidden) for p in (self.q, self.k, self.v))
        x = x + _slice_linear(self.out, _attention(q, k, v, heads), hidden, inner)
        y = F.gelu(_slice_linear(self.fc1, _slice_norm(self.norm2, x, hidden), ffn, hidden))
        return x + _slice_linear(self.fc2, y, hidden, ffn)

    def extract(self, hidden: int, heads: int, ffn: int) -> EncoderLayer:
        layer = EncoderLayer(hidden, heads, ffn)
        for name in ("q", "k", "v", "out", "fc1", "fc2"):
            _copy_linear(getattr(self, name), getattr(layer, name))
        _copy_norm(self.norm1, layer.norm1)
        _copy_norm(self.norm2, layer.norm2)
        return layer


class TextTransformer(nn.Module):
    """A standalone sub-network: only the active weights, plain layers, exportable."""

    def __init__(self, hidden: int, layers: list[EncoderLayer]) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, hidden)
        self.positions = nn.Parameter(torch.zeros(MAX_LEN, hidden))
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(hidden)
        self.classifier = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions[: ids.shape[1]]
        x = self.norm(self.layers(x))
        return self.classifier(x.mean(1))


def active_layers(arch: Arch) -> list[tuple[int, int, int]]:
    """(layer, heads, ffn) of every active layer, in order (1-based layer index)."""
    return [(i, arch[f"h{i}"], arch[f"f{i}"]) for i in range(1, arch["l"] + 1)]


class ElasticTextTransformer(nn.Module):
    """The supernet module: the largest network, run at any architecture by slicing."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, max(HIDDEN))
        self.positions = nn.Parameter(torch.randn(MAX_LEN, max(HIDDEN)) * 0.02)
        self.layers = nn.ModuleList(ElasticEncoderLayer() for _ in range(max(LAYERS)))
        self.norm = nn.LayerNorm(max(HIDDEN))
        self.classifier = nn.Linear(max(HIDDEN), NUM_CLASSES)

    def _layer(self, index: int) -> ElasticEncoderLayer:
        return cast(ElasticEncoderLayer, self.layers[index - 1])

    def forward(self, ids: torch.Tensor, arch: Arch) -> torch.Tensor:
        hidden = arch["e"]
        x = self.tokens.weight[:, :hidden][ids] + self.positions[: ids.shape[1], :hidden]
        for i, heads, ffn in active_layers(arch):
            x = self._layer(i).run(x, hidden, heads, ffn)
        x = _slice_norm(self.norm, x, hidden)
        return _slice_linear(self.classifier, x.mean(1), NUM_CLASSES, hidden)

    def extract(self, arch: Arch) -> TextTransformer:
        hidden = arch["e"]
        layers = [self._layer(i).extract(hidden, h, f) for i, h, f in active_layers(arch)]
        subnet = TextTransformer(hidden, layers)
        subnet.tokens.weight.data.copy_(self.tokens.weight.data[:, :hidden])
        subnet.positions.data.copy_(self.positions.data[:, :hidden])
        _copy_norm(self.norm, subnet.norm)
        _copy_linear(self.classifier, subnet.classifier)
        return subnet.eval()


def _space() -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {"e": list(HIDDEN), "l": list(LAYERS)}
    for i in range(1, max(LAYERS) + 1):
        space[f"h{i}"] = list(HEADS)
        space[f"f{i}"] = list(FFN)
    return space


def largest_arch() -> Arch:
    return {name: max(choices) for name, choices in _space().items()}


def smallest_arch() -> Arch:
    return {name: min(choices) for name, choices in _space().items()}


def synthetic_task(n: int, seed: int, length: int = MAX_LEN) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (n, length) and labels (n,): the label is the marker token seen most often.

    Filler tokens are drawn from ``MARKERS..VOCAB-1``; each marker appears 0-3 times and the
    label's marker once more than any other, so there are no ties.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(MARKERS, VOCAB, size=(n, length), dtype=np.int64)
    labels = rng.integers(0, NUM_CLASSES, size=n, dtype=np.int64)
    for row, label in enumerate(labels):
        counts = rng.integers(0, 4, size=MARKERS)
        counts[label] = counts.max() + 1
        tokens = np.repeat(np.arange(MARKERS), counts)
        ids[row, rng.choice(length, size=len(tokens), replace=False)] = tokens
    return ids, labels


class TextTransformerSupernet(Supernet):
    """HAT-style elastic Transformer encoder for sequence classification (CPU-sized)."""

    name = "text-transformer-synth"
    metrics = ("accuracy",)

    def __init__(
        self,
        *,
        weights: Path | None = None,
        seed: int = 0,
        validation_data: str | Path | None = None,
        validation_size: int = 1000,
    ) -> None:
        with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
            torch.manual_seed(seed)
            self.module = ElasticTextTransformer().eval()
        self.weights = weights
        if weights is not None:
            load_weights(self.module, Path(weights))
        self.validation_data = validation_data
        self.validation_size = validation_size

    def space(self) -> dict[str, list[Any]]:
        return _space()

    def canonical(self, arch: Arch) -> Arch:
        for gene, choices in _space().items():
            if arch.get(gene) not in choices:
                raise InvalidInput(
                    f"gene {gene!r} must be one of {choices}, got {arch.get(gene)!r}", field="arch"
                )
        out = {gene: arch[gene] for gene in _space()}
        for i in range(arch["l"] + 1, max(LAYERS) + 1):
            out[f"h{i}"], out[f"f{i}"] = HEADS[0], FFN[0]
        return out

    def encode(self, arch: Arch) -> str:
        arch = self.canonical(arch)
        layers = ".".join(f"h{h}f{f}" for _i, h, f in active_layers(arch))
        return f"e{arch['e']}-{layers}"

    def decode(self, encoding: str) -> Arch:
        match = _ENCODING.match(encoding)
        groups = match.group(2).split(".") if match else []
        if not match or len(groups) > max(LAYERS):
            raise InvalidInput(
                f"malformed architecture encoding {encoding!r}; expected e.g. "
                "'e96-h4f256.h2f128.h8f384' (at most 4 layers)",
                field="arch",
            )
        arch: Arch = {"e": int(match.group(1)), "l": len(groups)}
        for i in range(1, max(LAYERS) + 1):
            heads, ffn = groups[i - 1][1:].split("f") if i <= len(groups) else (HEADS[0], FFN[0])
            arch[f"h{i}"], arch[f"f{i}"] = int(heads), int(ffn)
        return self.canonical(arch)

    def complexity(self, arch: Arch) -> Complexity:
        """MACs of the matrix products at batch 1 and full length (embeddings, norms,
        softmax and GELU are not multiply-accumulates), and parameters of the sub-network."""
        arch = self.canonical(arch)
        e, t = arch["e"], MAX_LEN
        macs = e * NUM_CLASSES
        params = VOCAB * e + MAX_LEN * e + 2 * e + e * NUM_CLASSES + NUM_CLASSES
        for _i, heads, ffn in active_layers(arch):
            inner = heads * HEAD_DIM
            macs += t * (4 * e * inner + 2 * e * ffn) + 2 * t * t * inner
            params += 4 * e * inner + 3 * inner + e  # q, k, v, out (+ biases)
            params += 2 * e * ffn + ffn + e + 4 * e  # fc1, fc2 (+ biases), two LayerNorms
        return Complexity(macs=int(macs), params=int(params))

    def extract(self, arch: Arch) -> nn.Module:
        """Deterministic: slices of the shared weights, nothing recalibrated."""
        return self.module.extract(self.canonical(arch))

    @cached_property
    def _data(self) -> UserData:
        if self.validation_data is not None:
            return load_user_data(self.validation_data, num_classes=NUM_CLASSES)
        ids, labels = synthetic_task(self.validation_size, seed=10_000)
        return UserData(torch.from_numpy(ids), torch.from_numpy(labels), None, None)

    def quality_inputs(self) -> Sequence[Any]:
        return (self.module, self._data.inputs, self._data.labels)

    def evaluate(self, arch: Arch, module: nn.Module | None = None) -> dict[str, float]:
        module = module if module is not None else self.extract(arch)
        self.check_data()
        return {"accuracy": accuracy(module, self._data.inputs.long(), self._data.labels)}

    def check_data(self) -> None:
        ids = self._data.inputs
        if ids.is_floating_point() or ids.dim() != 2 or ids.shape[1] > MAX_LEN:
            raise InvalidInput(
                f"{self.name} needs integer token ids of shape (N, <= {MAX_LEN}), "
                f"got {ids.dtype} {tuple(ids.shape)}",
                field="validation_data",
            )
        if int(ids.min()) < 0 or int(ids.max()) >= VOCAB:
            raise InvalidInput(
                f"token ids must lie in 0..{VOCAB - 1}, found {int(ids.min())}..{int(ids.max())}",
                field="validation_data",
            )

    def input_spec(self, arch: Arch) -> InputSpec:
        return InputSpec(
            shape=(1, MAX_LEN),
            mean=(0.0,),
            std=(1.0,),
            layout="NL:int64-token-ids",
            variable_axes=(1,),  # any length up to MAX_LEN, as the validation data may have
            axis_names=("batch", "sequence"),
            preprocess=f"int64 token ids 0..{VOCAB - 1}, length up to {MAX_LEN}, no padding",
        )

    def example_input(self, arch: Arch, batch_size: int = 1) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return torch.randint(0, VOCAB, (batch_size, MAX_LEN), generator=generator)

    def describe(self) -> dict[str, Any]:
        trained = self.weights is not None
        distinct = len(HIDDEN) * sum((len(HEADS) * len(FFN)) ** n for n in LAYERS)
        return {
            **super().describe(),
            "space_size": distinct,  # canonical architectures (inactive layers collapsed)
            "weights": str(self.weights) if trained else "seeded random initialisation",
            "note": self.quality_warning() or "accuracy is that of the given checkpoint",
        }

    def quality_warning(self) -> str | None:
        if self.weights is None:
            return "random weights: accuracy is meaningless until trained weights are given"
        return None


@register_supernet(TextTransformerSupernet.name)
def _create_text_transformer(**kwargs: Any) -> Supernet:
    return TextTransformerSupernet(**kwargs)
