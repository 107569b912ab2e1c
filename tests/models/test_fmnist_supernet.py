"""The built-in supernet: encoding, complexity, extraction, export equivalence."""

from __future__ import annotations

import json
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from core.errors import CheckpointMismatch, InvalidInput, UnknownName
from models import data
from models.export import export_subnet
from models.fmnist_cnn import ElasticCNN, FmnistOFACNN, largest_arch, smallest_arch
from models.registry import create_supernet, get_supernet, list_supernets


@pytest.fixture(scope="module")
def supernet() -> FmnistOFACNN:
    net = get_supernet("fmnist-ofa-cnn")
    assert isinstance(net, FmnistOFACNN)
    return net


def sample_archs(net: FmnistOFACNN, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    space = net.space()
    return [smallest_arch(), largest_arch()] + [
        {g: rng.choice(c) for g, c in space.items()} for _ in range(n)
    ]


def test_registry_lists_builtin_and_rejects_unknown_names() -> None:
    assert "fmnist-ofa-cnn" in list_supernets()
    with pytest.raises(UnknownName, match="fmnist-ofa-cnn"):
        create_supernet("no-such-net")


def test_encoding_round_trips_and_is_the_dedup_key(supernet: FmnistOFACNN) -> None:
    for arch in sample_archs(supernet, 20):
        code = supernet.encode(arch)
        assert supernet.decode(code) == supernet.canonical(arch)
        assert supernet.encode(supernet.decode(code)) == code
    arch = smallest_arch()
    changed = dict(arch, k1_3=7, e1_3=6)  # block 3 of stage 1 is inactive at depth 1
    assert supernet.encode(changed) == supernet.encode(arch)
    assert supernet.encode(smallest_arch()) == "r20-k3e2-k3e2-k3e2"


def test_bad_architectures_are_refused_with_the_gene_named(supernet: FmnistOFACNN) -> None:
    with pytest.raises(InvalidInput, match="k1_1"):
        supernet.encode(dict(smallest_arch(), k1_1=4))
    with pytest.raises(InvalidInput, match="malformed"):
        supernet.decode("r20-k3e2")


def test_complexity_matches_an_independent_counter(supernet: FmnistOFACNN) -> None:
    for arch in sample_archs(supernet, 4, seed=1):
        module = supernet.module.extract(arch)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            module(supernet.example_input(arch))
        counted = supernet.complexity(arch)
        assert counter.get_total_flops() == 2 * counted.macs
        assert sum(p.numel() for p in module.parameters()) == counted.params


def test_extracted_subnet_equals_the_supernet_in_that_configuration(supernet: FmnistOFACNN) -> None:
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for arch in sample_archs(supernet, 5, seed=2):
        standalone = supernet.module.extract(arch)
        with torch.no_grad():
            expected = supernet.module.eval()(x, arch)
            got = standalone(data.resize(x, arch["r"]))
        assert (got - expected).abs().max().item() <= 1e-5
        full = sum(p.numel() for p in supernet.module.parameters())
        kept = sum(p.numel() for p in standalone.parameters())
        assert kept == full if arch == largest_arch() else kept < full


def test_weight_shared_accuracy_spans_a_useful_range(supernet: FmnistOFACNN) -> None:
    small = supernet.evaluate(smallest_arch())["accuracy"]
    large = supernet.evaluate(largest_arch())["accuracy"]
    assert 0.8 < small < large <= 1.0


def test_onnx_export_matches_pytorch_and_the_reported_accuracy(
    supernet: FmnistOFACNN, tmp_path
) -> None:
    arch = sample_archs(supernet, 1, seed=3)[-1]
    path = export_subnet(supernet, arch, "onnx", tmp_path / "subnet.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    subset = data.load_subset()
    x = data.preprocess(subset.val_x, arch["r"])
    onnx_logits = np.concatenate(
        [session.run(None, {"input": x[i : i + 500].numpy()})[0] for i in range(0, len(x), 500)]
    )
    with torch.no_grad():
        torch_logits = supernet.extract(arch)(x).numpy()
    assert np.abs(onnx_logits - torch_logits).max() <= 1e-4
    onnx_accuracy = float((onnx_logits.argmax(1) == subset.val_y).mean())
    assert onnx_accuracy == pytest.approx(supernet.evaluate(arch)["accuracy"], abs=1e-9)
    card = json.loads((tmp_path / "subnet.json").read_text())
    assert card["input"] == {
        "shape": [1, 1, arch["r"], arch["r"]],
        "file_shape": ["batch", 1, arch["r"], arch["r"]],
        "onnx_name": "input",
        "mean": [data.MEAN],
        "std": [data.STD],
        "layout": "NCHW:L/255",
        "variable_axes": [],
        "axis_names": [],
        "preprocess": supernet.input_spec(arch).preprocess,
    }
    resized = "then resized to 24 x 24 (torch.nn.functional.interpolate, bilinear, "
    assert resized in supernet.input_spec({**arch, "r": 24}).preprocess
    assert "resized" not in supernet.input_spec({**arch, "r": 28}).preprocess
    # the file itself carries the card: whoever gets only the download knows its input
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["hwnas.card"]) == card
    [given] = session.get_inputs()
    assert [given.name, given.shape] == [card["input"]["onnx_name"], card["input"]["file_shape"]]


def test_torchscript_and_state_dict_exports_load_back(supernet: FmnistOFACNN, tmp_path) -> None:
    arch = largest_arch()
    x = supernet.example_input(arch, 2)
    with torch.no_grad():
        expected = supernet.extract(arch)(x)
    scripted = torch.jit.load(str(export_subnet(supernet, arch, "torchscript", tmp_path / "s.pt")))
    assert (scripted(x) - expected).abs().max().item() <= 1e-5
    import zipfile

    with zipfile.ZipFile(export_subnet(supernet, arch, "state_dict", tmp_path / "s.zip")) as z:
        assert set(z.namelist()) == {"state_dict.pt", "architecture.json"}


def test_checkpoint_with_wrong_shape_is_refused_naming_the_key(tmp_path) -> None:
    state = ElasticCNN().state_dict()
    state["stem.0.weight"] = torch.zeros(3, 1, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatch, match=r"stem\.0\.weight.*\(16, 1, 3, 3\)"):
        FmnistOFACNN(weights=path)
