"""The Once-for-All supernets follow the protocol: encoding, MACs, extraction, export, weights."""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from core.errors import CheckpointMismatch, InvalidInput
from core.settings import get_settings
from models.base import Supernet
from models.export import export_subnet
from models.ofa_common import IMAGENET_MEAN, IMAGENET_STD, OFASupernet
from models.ofa_mbv3 import OFAMobileNetV3
from models.ofa_resnet import OFAResNet50
from models.registry import create_supernet, list_supernets

NAMES = ["ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv3_d234_e346_k357_w1.2", "ofa_resnet50"]


@pytest.fixture(scope="module", params=NAMES)
def supernet(request: pytest.FixtureRequest) -> OFASupernet:
    net = create_supernet(request.param)
    assert isinstance(net, OFASupernet)
    return net


def archs(net: Supernet, n: int, seed: int, resolution: int | None = 128) -> list[dict]:
    """Smallest, largest and ``n`` random architectures (at ``resolution`` if given)."""
    rng, space = random.Random(seed), net.space()
    out = [{g: c[0] for g, c in space.items()}, {g: c[-1] for g, c in space.items()}]
    out += [{g: rng.choice(c) for g, c in space.items()} for _ in range(n)]
    return [dict(a, r=resolution) if resolution else a for a in out]


def test_registered_and_described_honestly(supernet: OFASupernet) -> None:
    assert supernet.name in list_supernets()
    info = supernet.describe()
    assert info["checkpoint"] is None and "meaningless" in info["note"]
    assert 1 < info["space_size"] < info["raw_space_size"]


def test_encoding_round_trips_and_ignores_inactive_genes(supernet: OFASupernet) -> None:
    for arch in archs(supernet, 20, seed=0, resolution=None):
        code = supernet.encode(arch)
        assert supernet.decode(code) == supernet.canonical(arch)
        assert supernet.encode(supernet.decode(code)) == code
    smallest = archs(supernet, 0, seed=0)[0]
    last_block = "e4_4" if isinstance(supernet, OFAResNet50) else "k5_4"
    assert last_block in supernet.space()  # present in the space, inactive at minimum depth
    changed = dict(smallest, **{last_block: supernet.space()[last_block][-1]})
    assert supernet.encode(changed) == supernet.encode(smallest)


def test_documented_encodings() -> None:
    mbv3 = OFAMobileNetV3(width_mult=1.0)
    smallest = {g: c[0] for g, c in mbv3.space().items()}
    assert mbv3.encode(smallest) == "r128-" + "-".join(["k3e3.k3e3"] * 5)
    resnet = OFAResNet50()
    largest = {g: c[-1] for g, c in resnet.space().items()}
    stages = ["w100" + ".e35" * n for n in (4, 4, 6, 4)]
    assert resnet.encode(largest) == "r224-s2.w100.w100-" + "-".join(stages)
    # w0 = 0.8 builds the same 24-channel stem as 0.65: one network, one key
    assert resnet.encode(dict(largest, w0=0.8)) == resnet.encode(dict(largest, w0=0.65))


def test_bad_architectures_are_refused_naming_the_gene(supernet: OFASupernet) -> None:
    arch = archs(supernet, 0, seed=0)[0]
    with pytest.raises(InvalidInput, match="'r'"):
        supernet.encode(dict(arch, r=130))
    with pytest.raises(InvalidInput, match="'d1'"):
        supernet.encode(dict(arch, d1=7))
    for bad in ("r128", "r128-k3e3", "nonsense", "r128-s2.w65.w100-w100.e35"):
        with pytest.raises(InvalidInput, match="malformed"):
            supernet.decode(bad)


def test_complexity_matches_an_independent_counter(supernet: OFASupernet) -> None:
    for arch in archs(supernet, 1, seed=1, resolution=132)[2:]:
        module = supernet.module.extract(arch)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            module(supernet.example_input(arch))
        counted = supernet.complexity(arch)
        assert counter.get_total_flops() == 2 * counted.macs
        assert sum(p.numel() for p in module.parameters()) == counted.params


def test_extracted_subnet_equals_the_supernet_and_holds_only_active_weights(
    supernet: OFASupernet,
) -> None:
    full = sum(p.numel() for p in supernet.module.parameters())
    smallest, _largest, random_arch = archs(supernet, 1, seed=2)  # largest: see test_ofa_compat
    for arch in (smallest, random_arch):
        x = supernet.example_input(arch, 2)
        standalone = supernet.module.extract(arch)
        with torch.no_grad():
            expected = supernet.module(x, supernet.canonical(arch))
            got = standalone(x)
        assert (got - expected).abs().max().item() <= 1e-5
        assert sum(p.numel() for p in standalone.parameters()) < full


def test_onnx_export_runs_under_onnxruntime_with_equal_outputs(
    supernet: OFASupernet, tmp_path: Path
) -> None:
    arch = archs(supernet, 1, seed=3, resolution=132)[-1]  # odd feature-map sizes on the way
    path = export_subnet(supernet, arch, "onnx", tmp_path / "subnet.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = supernet.example_input(arch, 2)
    (onnx_logits,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch_logits = supernet.extract(arch)(x).numpy()
    assert onnx_logits.shape == (2, 1000)
    assert np.abs(onnx_logits - torch_logits).max() <= 1e-4
    spec = supernet.input_spec(arch)
    assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)  # per channel, RGB order
    assert json.loads((tmp_path / "subnet.json").read_text())["input"] == {
        "shape": [1, 3, 132, 132],
        "file_shape": ["batch", 3, 132, 132],
        "onnx_name": "input",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "layout": "NCHW:RGB/255",
        "variable_axes": [],
        "axis_names": [],
        "preprocess": "RGB 0..255 values, shorter side resized to 151 (torch.nn.functional."
        "interpolate, bilinear, antialias=True; the other side size * long // short), centre "
        "crop 132 x 132 (offsets rounded down), /255, then (x - mean) / std per channel",
    }


# --- weights --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mbv3_state() -> dict[str, torch.Tensor]:
    return OFAMobileNetV3(width_mult=1.0).module.state_dict()


def test_default_weights_are_seeded_and_deterministic(
    mbv3_state: dict[str, torch.Tensor],
) -> None:
    again = OFAMobileNetV3(width_mult=1.0).module.state_dict()
    assert all(torch.equal(mbv3_state[k], again[k]) for k in mbv3_state)


def test_checkpoint_round_trips(mbv3_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in mbv3_state.items()}
    torch.save({"state_dict": state, "epoch": torch.tensor(3)}, tmp_path / "ofa.pt")
    loaded = OFAMobileNetV3(width_mult=1.0, checkpoint=tmp_path / "ofa.pt")
    got = loaded.module.state_dict()
    assert all(torch.equal(state[k], got[k]) for k in state)
    assert loaded.describe()["checkpoint"].endswith("ofa.pt") and "note" not in loaded.describe()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.update({"first_conv.conv.weight": torch.zeros(8, 3, 3, 3)}),
            r"'first_conv\.conv\.weight' has shape \(8, 3, 3, 3\), expected \(16, 3, 3, 3\)",
        ),
        (
            lambda s: s.pop("blocks.1.conv.depth_conv.conv.7to5_matrix"),
            r"missing key 'blocks\.1\.conv\.depth_conv\.conv\.7to5_matrix'.*\(25, 25\)",
        ),
        (lambda s: s.update({"head.weight": torch.zeros(1)}), r"unexpected key 'head\.weight'"),
    ],
)
def test_mismatching_checkpoints_are_refused_naming_the_key(
    mbv3_state: dict[str, torch.Tensor], tmp_path: Path, edit, message: str
) -> None:
    state = dict(mbv3_state)
    edit(state)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatch, match=message):
        OFAMobileNetV3(width_mult=1.0, checkpoint=tmp_path / "bad.pt")


def test_a_w12_checkpoint_is_refused_by_the_w10_supernet(tmp_path: Path) -> None:
    torch.save(OFAMobileNetV3(width_mult=1.2).module.state_dict(), tmp_path / "w12.pt")
    with pytest.raises(CheckpointMismatch, match=r"first_conv.*expected \(16, 3, 3, 3\)"):
        OFAMobileNetV3(width_mult=1.0, checkpoint=tmp_path / "w12.pt")


class _Payload:
    def __reduce__(self):  # what a malicious checkpoint would run on a plain torch.load
        return (print, ("code ran",))


def test_pickled_code_and_missing_files_are_refused(tmp_path: Path) -> None:
    with (tmp_path / "evil.pt").open("wb") as handle:
        pickle.dump({"state_dict": _Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointMismatch, match="weights_only"):
        OFAResNet50(checkpoint=tmp_path / "evil.pt")
    with pytest.raises(CheckpointMismatch) as absent:
        OFAResNet50(checkpoint=tmp_path / "absent.pt")
    assert str(absent.value).startswith("absent.pt: does not exist")  # by name (review 32a)
    assert str(tmp_path) not in str(absent.value)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointMismatch, match=r"^empty\.pt: .*: empty, or cut short"):
        OFAResNet50(checkpoint=tmp_path / "empty.pt")


# --- evaluation -----------------------------------------------------------------------------


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HWNAS_DATA_ROOTS", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_evaluation_needs_user_data_and_recalibrates_on_its_calibration_images(
    data_root: Path,
) -> None:
    arch = {g: c[0] for g, c in OFAMobileNetV3().space().items()}
    with pytest.raises(InvalidInput, match="validation data"):
        OFAMobileNetV3().evaluate(arch)
    rng = np.random.default_rng(0)
    np.savez(
        data_root / "val.npz",
        inputs=rng.integers(0, 256, (6, 3, 64, 64), dtype=np.uint8),
        labels=rng.integers(0, 1000, 6),
        calib_inputs=rng.integers(0, 256, (4, 3, 64, 64), dtype=np.uint8),
    )
    net = OFAMobileNetV3(validation_data="val.npz")
    accuracy = net.evaluate(arch)["accuracy"]
    assert 0.0 <= accuracy <= 1.0
    recalibrated = net.extract(arch).first_conv.bn.running_mean  # type: ignore[union-attr]
    assert not torch.equal(recalibrated, net.module.first_conv.bn.running_mean)
