"""The Transformer supernet: encoding, complexity, extraction, export, checkpoints."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from core.errors import CheckpointMismatch, InvalidInput
from models.export import export_subnet
from models.registry import create_supernet, list_supernets
from models.text_transformer import (
    MARKERS,
    MAX_LEN,
    ElasticTextTransformer,
    TextTransformerSupernet,
    largest_arch,
    smallest_arch,
    synthetic_task,
)


@pytest.fixture(scope="module")
def supernet() -> TextTransformerSupernet:
    return TextTransformerSupernet(seed=0)


def sample_archs(net: TextTransformerSupernet, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    space = net.space()
    return [smallest_arch(), largest_arch()] + [
        {g: rng.choice(c) for g, c in space.items()} for _ in range(n)
    ]


def token_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_registered_and_honest_about_its_weights() -> None:
    assert "text-transformer-synth" in list_supernets()
    info = create_supernet("text-transformer-synth").describe()
    assert info["raw_space_size"] == 3 * 4 * 9**4
    assert "meaningless" in info["note"]


def test_space_size_counts_distinct_canonical_architectures(
    supernet: TextTransformerSupernet,
) -> None:
    space = supernet.space()
    codes = {
        supernet.encode(dict(zip(space, values, strict=True)))
        for values in itertools.product(*space.values())
    }
    assert len(codes) == supernet.describe()["space_size"]


def test_encoding_round_trips_and_ignores_inactive_layers(
    supernet: TextTransformerSupernet,
) -> None:
    for arch in sample_archs(supernet, 30):
        code = supernet.encode(arch)
        assert supernet.decode(code) == supernet.canonical(arch)
        assert supernet.encode(supernet.decode(code)) == code
    assert supernet.encode(smallest_arch()) == "e64-h2f128"
    assert supernet.encode(dict(smallest_arch(), h3=8, f4=384)) == "e64-h2f128"
    assert supernet.encode(largest_arch()) == "e128-" + ".".join(["h8f384"] * 4)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (dict(smallest_arch(), h1=3), "h1"),
        (dict(smallest_arch(), e=100), "'e'"),
        ({"e": 64}, "'l'"),
    ],
)
def test_bad_architectures_name_the_gene(
    supernet: TextTransformerSupernet, bad: dict, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        supernet.encode(bad)


@pytest.mark.parametrize(
    "code", ["e64", "e64-h2f128.", "x-h2f128", "e64-" + ".".join(["h2f128"] * 5)]
)
def test_malformed_encodings_are_refused(supernet: TextTransformerSupernet, code: str) -> None:
    with pytest.raises(InvalidInput, match="malformed"):
        supernet.decode(code)


def test_complexity_matches_an_independent_counter(supernet: TextTransformerSupernet) -> None:
    for arch in sample_archs(supernet, 4, seed=1):
        module = supernet.extract(arch)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            module(supernet.example_input(arch))
        counted = supernet.complexity(arch)
        assert counter.get_total_flops() == 2 * counted.macs
        assert sum(p.numel() for p in module.parameters()) == counted.params


def test_extracted_subnet_equals_the_supernet_in_that_configuration(
    supernet: TextTransformerSupernet,
) -> None:
    full = sum(p.numel() for p in supernet.module.parameters())
    for length in (MAX_LEN, 17):
        ids = token_ids(6, length)
        for arch in sample_archs(supernet, 5, seed=2):
            standalone = supernet.extract(arch)
            with torch.no_grad():
                expected = supernet.module(ids, supernet.canonical(arch))
                got = standalone(ids)
            assert (got - expected).abs().max().item() <= 1e-5
            kept = sum(p.numel() for p in standalone.parameters())
            assert kept == full if arch == largest_arch() else kept < full


@pytest.mark.parametrize("length", [MAX_LEN, 20, 1])
def test_onnx_and_torchscript_exports_match_pytorch(
    supernet: TextTransformerSupernet, tmp_path: Path, length: int
) -> None:
    """At any length up to MAX_LEN: validation data of 20 tokens is accepted, and the ONNX
    file took 32 only, so its accuracy could not be reproduced from the file."""
    arch = sample_archs(supernet, 1, seed=3)[-1]
    ids = token_ids(5, length, seed=1)
    with torch.no_grad():
        expected = supernet.extract(arch)(ids)
    path = export_subnet(supernet, arch, "onnx", tmp_path / "subnet.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [given] = session.get_inputs()
    assert given.shape == ["batch", "sequence"]
    card = json.loads((tmp_path / "subnet.json").read_text())["input"]
    assert [card["onnx_name"], card["file_shape"]] == [given.name, given.shape]  # as the file
    onnx_logits = session.run(None, {"input": ids.numpy()})[0]
    assert np.abs(onnx_logits - expected.numpy()).max() <= 1e-5
    scripted = torch.jit.load(str(export_subnet(supernet, arch, "torchscript", tmp_path / "s.pt")))
    assert (scripted(ids) - expected).abs().max().item() <= 1e-5


def test_seeded_initialisation_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = TextTransformerSupernet(seed=4), TextTransformerSupernet(seed=4)
    assert torch.equal(torch.rand(1), before)
    assert torch.equal(a.module.tokens.weight, b.module.tokens.weight)
    other = TextTransformerSupernet(seed=5)
    assert not torch.equal(a.module.tokens.weight, other.module.tokens.weight)


def test_checkpoint_round_trip_and_mismatch(tmp_path: Path) -> None:
    source = TextTransformerSupernet(seed=7)
    path = tmp_path / "ckpt.pt"
    torch.save(source.module.state_dict(), path)
    loaded = TextTransformerSupernet(weights=path, seed=0)
    arch, ids = largest_arch(), token_ids(2, MAX_LEN)
    with torch.no_grad():
        assert torch.equal(loaded.extract(arch)(ids), source.extract(arch)(ids))
    assert loaded.describe()["weights"] == str(path)
    state = ElasticTextTransformer().state_dict()
    state["layers.0.fc1.weight"] = torch.zeros(10, 128)
    torch.save(state, path)
    with pytest.raises(CheckpointMismatch, match=r"layers\.0\.fc1\.weight.*\(384, 128\)"):
        TextTransformerSupernet(weights=path)


def test_synthetic_task_label_is_the_most_frequent_marker() -> None:
    ids, labels = synthetic_task(200, seed=1)
    assert ids.shape == (200, MAX_LEN) and set(labels.tolist()) == set(range(MARKERS))
    for row, label in zip(ids, labels, strict=True):
        counts = np.bincount(row[row < MARKERS], minlength=MARKERS)
        assert counts.argmax() == label and (counts == counts.max()).sum() == 1


def test_evaluate_measures_accuracy_on_the_synthetic_validation_set() -> None:
    net = TextTransformerSupernet(validation_size=200)
    result = net.evaluate(smallest_arch())
    assert set(result) == {"accuracy"} and 0.0 <= result["accuracy"] <= 1.0
