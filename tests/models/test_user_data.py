"""User validation data by path: confinement, size limits, no pickles, supernet wiring."""

from __future__ import annotations

import functools
import io
import os
import time
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.errors import InvalidInput
from core.settings import get_settings
from models import data, registry, user_data, user_images
from models.check_memo import CheckMemo
from models.evaluation import accuracy
from models.fmnist_cnn import smallest_arch
from models.registry import create_supernet, get_supernet
from models.text_transformer import synthetic_task
from models.user_data import check_path, confine, data_signature, load_user_data

from .fifo import raised_without_waiting


def images_and_labels(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def test_npz_and_pt_files_load_as_tensors(root: Path) -> None:
    x, y = images_and_labels()
    np.savez(root / "val.npz", images=x, labels=y, calib_images=x[:5])
    torch.save({"inputs": torch.from_numpy(x), "y": torch.from_numpy(y)}, root / "val.pt")
    from_npz = load_user_data("val.npz")  # relative paths are looked up under the roots
    from_pt = load_user_data(root / "val.pt")
    for loaded in (from_npz, from_pt):
        assert torch.equal(loaded.inputs, torch.from_numpy(x))
        assert loaded.labels.dtype == torch.int64 and loaded.labels.tolist() == y.tolist()
    assert from_npz.calib is not None and from_npz.calib.shape == (5, 28, 28)
    assert from_pt.calib is None


def test_paths_outside_the_roots_are_refused(root: Path, tmp_path: Path) -> None:
    x, y = images_and_labels()
    outside = tmp_path / "outside.npz"
    np.savez(outside, inputs=x, labels=y)
    (root / "link.npz").symlink_to(outside)
    for path in (outside, "../outside.npz", "link.npz", root / "missing.npz"):
        with pytest.raises(InvalidInput, match="inside the configured data roots") as caught:
            load_user_data(path)
        assert caught.value.field == "validation_data"
        if not Path(path).is_absolute():  # the server's layout is not disclosed
            assert str(root) not in str(caught.value)


def test_a_data_file_that_became_a_link_since_its_look_up_is_refused_in_words(
    root: Path,
) -> None:
    """Review 31b L7: a link put in place of a resolved file was refused as "Too many
    levels of symbolic links" (here the resolved path is given a link directly)."""
    x = np.zeros((2, 28, 28), dtype=np.float32)
    np.savez(root / "val.npz", images=x, labels=np.zeros(2, dtype=np.int64))
    (root / "now.npz").symlink_to(root / "val.npz")
    with pytest.raises(InvalidInput) as refused:
        user_data._read_file(root / "now.npz", 2**20)
    assert str(refused.value) == f"now.npz: {user_images.BECAME_A_LINK}"


def test_paths_that_cannot_be_looked_up_or_read_are_refused(root: Path) -> None:
    """Before, a name too long for the system and a loop of links were 500s, and a FIFO
    blocked the check (on the API's event loop) until something wrote to it."""
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    os.mkfifo(root / "fifo.npz")
    # Python 3.13's resolve() and exists() no longer raise on these: "not an existing file"
    missing = "is not an existing file or directory"
    refused = {
        "a" * 300: f"cannot be looked up: File name too long|{missing}",
        "a/" * 3000: f"cannot be looked up: File name too long|{missing}",
        "loop_a": f"cannot be looked up: a symbolic link loop|{missing}",
        "loop_a/val.npz": f"cannot be looked up: a symbolic link loop|{missing}",
        "fifo.npz": "is not a regular file or a directory",
    }
    for path, reason in refused.items():
        with pytest.raises(InvalidInput, match=reason) as caught:
            load_user_data(path)
        assert caught.value.field == "validation_data" and str(root) not in str(caught.value)


def test_no_configured_roots_means_no_user_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HWNAS_DATA_ROOTS", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(InvalidInput, match="no data roots are configured"):
            load_user_data(tmp_path / "val.npz")
    finally:
        get_settings.cache_clear()


def test_files_over_the_size_limit_are_refused(root: Path) -> None:
    x, y = images_and_labels(50)
    np.savez_compressed(root / "val.npz", inputs=np.zeros((50, 28, 28), np.uint8), labels=y)
    small = (root / "val.npz").stat().st_size
    assert small < 50 * 28 * 28  # compressed: the unpacked size is what counts
    with pytest.raises(InvalidInput, match="over the limit"):
        load_user_data("val.npz", max_bytes=50 * 28 * 28)
    assert len(load_user_data("val.npz", max_bytes=10 * 2**20).labels) == 50


def test_pickled_content_is_refused(root: Path) -> None:
    x, y = images_and_labels()
    np.savez(root / "objects.npz", inputs=np.array([object()] * 20), labels=y)
    with pytest.raises(InvalidInput, match="without pickles") as caught:
        load_user_data("objects.npz")
    assert "object arrays" in str(caught.value) and "unsafe" not in str(caught.value)
    (root / "text.npz").write_text("inputs,labels\n1,2\n")
    for check in (load_user_data, check_path):  # refused at submission, and when read
        with pytest.raises(InvalidInput, match=r"text.npz: not a \.npz file \(numpy.savez"):
            check("text.npz")
    torch.save({"inputs": torch.zeros(2, 3), "labels": functools.partial(print)}, root / "p.pt")
    with pytest.raises(InvalidInput, match=r"weights_only=True"):
        load_user_data("p.pt")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"inputs": np.zeros((4, 3))}, "needs keys 'inputs' and 'labels'"),
        ({"inputs": np.zeros((4, 3)), "labels": np.zeros(4)}, "1-D integer"),
        ({"inputs": np.zeros((4, 3)), "labels": np.zeros(5, np.int64)}, "same number"),
        ({"inputs": np.zeros((4, 3)), "labels": np.full(4, 10)}, r"labels must lie in 0\.\.9"),
        (  # once read as negative numbers, wrapped by the conversion to int64
            {"inputs": np.zeros((4, 3)), "labels": np.full(4, 2**63, np.uint64)},
            r"labels holds values over 2\*\*63 - 1",
        ),
        (
            {"inputs": np.zeros((4, 3)), "labels": np.arange(4), "calib_inputs": np.zeros((0, 3))},
            r"calib_inputs \(0, 3\) holds no samples",
        ),
    ],
)
def test_malformed_files_are_refused_with_a_reason(
    root: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    np.savez(root / "bad.npz", **arrays)
    with pytest.raises(InvalidInput, match=message):
        load_user_data("bad.npz", num_classes=10)


def test_directories_need_an_image_format_and_other_files_a_known_type(root: Path) -> None:
    (root / "images" / "cat").mkdir(parents=True)  # read by models.user_images (its own tests)
    with pytest.raises(InvalidInput, match="a directory, but this supernet does not take images"):
        load_user_data("images")
    (root / "val.csv").write_text("1,2\n")
    with pytest.raises(InvalidInput, match="unsupported file type"):
        load_user_data("val.csv")


def test_fmnist_supernet_evaluates_on_a_user_file(root: Path) -> None:
    subset = data.load_subset()
    x, y = subset.val_x[:300], subset.val_y[:300]
    np.savez(root / "mine.npz", images=x, labels=y)
    mine = create_supernet("fmnist-ofa-cnn", validation_data="mine.npz")
    shipped = get_supernet("fmnist-ofa-cnn")
    for arch in (smallest_arch(), dict(smallest_arch(), r=28, k1_1=7, e1_1=6)):
        module = shipped.extract(arch)  # same calibration set: the same sub-network
        expected = accuracy(module, data.preprocess(x, arch["r"]), torch.from_numpy(y).long())
        assert mine.evaluate(arch) == {"accuracy": expected}
        assert torch.equal(mine.extract(arch).head[1].running_mean, module.head[1].running_mean)


def test_fmnist_recalibrates_on_the_users_calibration_images(root: Path) -> None:
    subset = data.load_subset()
    np.savez(
        root / "mine.pt.npz",
        inputs=subset.val_x[:200, None],  # (N, 1, H, W) is accepted too
        labels=subset.val_y[:200],
        calib_inputs=subset.val_x[200:400],
    )
    mine = create_supernet("fmnist-ofa-cnn", validation_data="mine.pt.npz")
    arch = smallest_arch()
    recalibrated = mine.extract(arch).head[1].running_mean
    assert not torch.equal(
        recalibrated, get_supernet("fmnist-ofa-cnn").extract(arch).head[1].running_mean
    )
    assert 0.5 < mine.evaluate(arch)["accuracy"] <= 1.0


def test_text_transformer_evaluates_on_user_token_ids(root: Path) -> None:
    ids, labels = synthetic_task(64, seed=5, length=24)
    torch.save(
        {"inputs": torch.from_numpy(ids).int(), "labels": torch.from_numpy(labels)}, root / "t.pt"
    )
    net = create_supernet("text-transformer-synth", validation_data="t.pt")
    arch = net.decode("e64-h2f128.h4f256")
    module = net.extract(arch)
    expected = accuracy(module, torch.from_numpy(ids), torch.from_numpy(labels))
    assert net.evaluate(arch) == {"accuracy": expected}


def test_registry_keeps_one_instance_per_data_path(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_DATA_INSTANCES", OrderedDict())
    ids, labels = synthetic_task(8, seed=1)
    for i in range(registry.DATA_INSTANCES_MAX + 1):
        np.savez(root / f"t{i}.npz", inputs=ids, labels=labels)
    first = get_supernet("text-transformer-synth", validation_data="t0.npz")
    assert get_supernet("text-transformer-synth", validation_data="t0.npz") is first
    assert first is not get_supernet("text-transformer-synth")
    for i in range(1, registry.DATA_INSTANCES_MAX + 1):
        get_supernet("text-transformer-synth", validation_data=f"t{i}.npz")
    assert len(registry._DATA_INSTANCES) == registry.DATA_INSTANCES_MAX
    assert get_supernet("text-transformer-synth", validation_data="t0.npz") is not first
    assert registry.takes_validation_data("fmnist-ofa-cnn")
    with pytest.raises(InvalidInput, match="does not measure accuracy on user data"):
        get_supernet("nb201-cifar10", validation_data="t0.npz")


def test_a_root_that_cannot_be_looked_up_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path is looked up under each root in turn: the one a look-up fails in
    (permission denied, a link loop) does not hide the next; its error is the answer only
    when no root holds the path."""
    first, second = tmp_path / "first", tmp_path / "second"
    (second / "x").mkdir(parents=True)
    first.mkdir()
    x, y = images_and_labels()
    np.savez(second / "x" / "val.npz", inputs=x, labels=y)
    resolve = Path.resolve

    def denied_in_first(self: Path, strict: bool = False) -> Path:
        if self.is_relative_to(first) and self != first:
            raise PermissionError(13, "Permission denied", str(self))
        return resolve(self, strict)

    monkeypatch.setattr(Path, "resolve", denied_in_first)
    assert confine("x/val.npz", [first, second]) == second / "x" / "val.npz"
    with pytest.raises(InvalidInput, match="'x/gone.npz' cannot be looked up: Permission denied"):
        confine("x/gone.npz", [first, second])


def test_a_data_file_changed_on_disk_is_loaded_again(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance bound to a data path measured on what the file held when it was first
    read: after the file changed (same name), a new one reads it, and its fingerprint (what
    warm starts match on) differs; the same bytes written again give the same fingerprint."""
    monkeypatch.setattr(registry, "_DATA_INSTANCES", OrderedDict())
    x, y = images_and_labels()
    np.savez(root / "v.npz", inputs=x, labels=y)
    first = get_supernet("fmnist-ofa-cnn", validation_data="v.npz")
    arch = smallest_arch()
    before, print_before = first.evaluate(arch), first.fingerprint()
    np.savez(root / "v.npz", inputs=x[:1], labels=y[:1])
    second = get_supernet("fmnist-ofa-cnn", validation_data="v.npz")
    assert second is not first and second.fingerprint() != print_before
    assert len(second._data.val_y) == 1 and first.evaluate(arch) == before  # each its own
    assert len(registry._DATA_INSTANCES) == 1  # the stale one is not kept beside it
    np.savez(root / "v.npz", inputs=x, labels=y)
    assert get_supernet("fmnist-ofa-cnn", validation_data="v.npz").fingerprint() == print_before
    assert get_supernet("fmnist-ofa-cnn").fingerprint() not in (None, print_before)


def test_images_in_a_directory_changed_on_disk_are_read_again(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.setattr(registry, "_DATA_INSTANCES", OrderedDict())
    for label in ("a", "b"):
        (root / "imgs" / label).mkdir(parents=True)
        Image.new("L", (28, 28), 40).save(root / "imgs" / label / "0.png")
    first = get_supernet("fmnist-ofa-cnn", validation_data="imgs").fingerprint()
    assert get_supernet("fmnist-ofa-cnn", validation_data="imgs").fingerprint() == first
    Image.new("L", (28, 28), 200).save(root / "imgs" / "b" / "0.png")  # rewritten in place
    os.utime(root / "imgs" / "b" / "0.png", ns=(1, 1))  # even with an older time
    assert get_supernet("fmnist-ofa-cnn", validation_data="imgs").fingerprint() != first


def test_a_link_out_of_the_roots_is_in_the_signature_but_not_walked(
    root: Path, tmp_path: Path
) -> None:
    """Security audit 31: a link to /usr in an image directory was walked whole (126,000
    files, 9 s before an export's 409) at each job's start and export, though loading
    refuses it anyway."""
    (root / "imgs" / "a").mkdir(parents=True)
    (root / "imgs" / "a" / "0.png").write_bytes(b"x")
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    for i in range(50):
        (outside / "deep" / f"{i}.png").write_bytes(b"y")
    before = data_signature("imgs", [root])
    (root / "imgs" / "a" / "up").symlink_to(outside, target_is_directory=True)
    after = data_signature("imgs", [root])
    assert after != before  # loading it again refuses the link
    [link] = [entry for entry in after if "outside the data roots" in entry]
    assert link[1] == "up" and len(after) == 2  # 0.png and the link: nothing under it
    (root / "inner").mkdir()
    (root / "inner" / "1.png").write_bytes(b"z")
    (root / "imgs" / "a" / "up").unlink()
    (root / "imgs" / "a" / "up").symlink_to(root / "inner", target_is_directory=True)
    assert any(entry[1] == "1.png" for entry in data_signature("imgs", [root]))  # inside


OFA = "ofa_mbv3_d234_e346_k357_w1.0"
TEXT = "text-transformer-synth"


def rgb(n: int = 4, size: int = 32) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


@pytest.mark.parametrize(
    ("supernet", "arrays", "message"),
    [
        ("fmnist-ofa-cnn", {"inputs": np.zeros((4, 28, 30)), "labels": np.arange(4)}, "square"),
        ("fmnist-ofa-cnn", {"inputs": np.zeros((4, 28, 28)), "labels": np.arange(7, 11)}, "0..9"),
        (
            "fmnist-ofa-cnn",
            {"inputs": np.full((4, 28, 28), np.nan), "labels": np.arange(4)},
            "inputs holds NaN or infinite values",
        ),
        (
            "fmnist-ofa-cnn",
            {
                "inputs": np.zeros((4, 28, 28)),
                "labels": np.arange(4),
                "calib_inputs": np.ones((3, 5)),
            },
            "calib_inputs must be square grey images",
        ),
        (OFA, {"inputs": np.zeros((4, 28, 28)), "labels": np.arange(4)}, "inputs must be RGB"),
        (
            OFA,
            {"inputs": rgb(), "labels": np.arange(4), "calib_inputs": np.zeros((2, 28, 28))},
            "calib_inputs must be RGB",
        ),
        (OFA, {"inputs": rgb(), "labels": np.full(4, 1000)}, r"0\.\.999"),
        # images stored scaled to 0..1 were scored at chance (the model divides by 255)
        (
            "fmnist-ofa-cnn",
            {"inputs": np.full((4, 28, 28), 0.5, np.float32), "labels": np.arange(4)},
            r"inputs look scaled to 0\.\.1 \(the largest value is 0\.5\)",
        ),
        (
            OFA,
            {"inputs": rgb(), "labels": np.arange(4), "calib_inputs": rgb(2) / 255.0},
            r"calib_inputs look scaled to 0\.\.1",
        ),
        (TEXT, {"inputs": np.zeros((4, 8)), "labels": np.arange(4)}, "integer token ids"),
        (TEXT, {"inputs": np.full((4, 8), 10**6), "labels": np.arange(4)}, "token ids must lie"),
    ],
)
def test_check_data_refuses_what_evaluate_could_not_measure(
    root: Path, monkeypatch: pytest.MonkeyPatch, supernet: str, arrays: dict, message: str
) -> None:
    """A job's data file is checked at submission (``registry.check_validation_data``):
    what its first evaluation would fail on is refused then, with the same reason."""
    monkeypatch.setattr(registry, "_DATA_CHECKS", CheckMemo(64))
    np.savez(root / "bad.npz", **arrays)
    with pytest.raises(InvalidInput, match=message) as caught:
        registry.check_validation_data(supernet, "bad.npz")
    assert caught.value.field == "validation_data"


@pytest.mark.parametrize(
    ("supernet", "arrays"),
    [
        ("fmnist-ofa-cnn", {"inputs": np.zeros((4, 1, 28, 28)), "labels": np.arange(4)}),
        (OFA, {"inputs": rgb().transpose(0, 2, 3, 1), "labels": np.arange(4)}),  # NHWC
        (TEXT, {"inputs": np.ones((4, 8), np.int32), "labels": np.arange(4) % 2}),
    ],
)
def test_check_data_passes_what_evaluate_measures(
    root: Path, monkeypatch: pytest.MonkeyPatch, supernet: str, arrays: dict
) -> None:
    monkeypatch.setattr(registry, "_DATA_CHECKS", CheckMemo(64))
    np.savez(root / "good.npz", **arrays)
    registry.check_validation_data(supernet, "good.npz")
    net = create_supernet(supernet, validation_data="good.npz")
    smallest = net.decode(net.encode({g: c[0] for g, c in net.space().items()}))
    assert 0.0 <= net.evaluate(smallest)["accuracy"] <= 1.0  # what passed is measurable


def test_checked_data_is_read_again_only_when_it_changed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_DATA_CHECKS", CheckMemo(64))
    monkeypatch.setattr(registry, "_DATA_INSTANCES", OrderedDict())
    x, y = images_and_labels()
    np.savez(root / "v.npz", inputs=x, labels=y)
    made = calls_of(monkeypatch, registry, "create_supernet")
    settle(root / "v.npz")
    registry.check_validation_data("fmnist-ofa-cnn", "v.npz")
    registry.check_validation_data("fmnist-ofa-cnn", "v.npz")
    assert made == ["fmnist-ofa-cnn"]  # the second check read nothing
    np.savez(root / "v.npz", inputs=x, labels=np.full(len(y), 12))  # changed: checked again
    with pytest.raises(InvalidInput, match=r"labels must lie in 0\.\.9, found 12\.\.12"):
        registry.check_validation_data("fmnist-ofa-cnn", "v.npz")
    np.savez(root / "v.npz", inputs=x, labels=y)
    held = get_supernet("fmnist-ofa-cnn", validation_data="v.npz")  # as a job's runner does
    made.clear()
    registry.check_validation_data("fmnist-ofa-cnn", "v.npz")
    assert made == [] and "_data" in vars(held)  # the job's instance was checked: one read


def calls_of(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[Any]:
    """``owner.name`` replaced by a wrapper that records each call's first argument (or
    None), then calls it: the list it fills."""
    calls: list[Any] = []
    real = getattr(owner, name)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return calls


def settle(*paths: Path) -> None:
    """Date ``paths`` and everything under them 10 s back: a state modified within the
    file system's clock tick is not trusted to tell a later change (``user_data.recent``)."""
    then = time.time_ns() - 10_000_000_000
    for path in paths:
        for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
            os.utime(item, ns=(then, then))


def test_a_refused_file_is_not_read_again_by_any_spelling_until_it_changes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused file was read whole again by every submission naming it, and one that
    passed by every new spelling of its path (``./v.npz``): a stream of requests kept the
    server's cores busy beside the latency timings (security review, session 20)."""
    monkeypatch.setattr(registry, "_DATA_CHECKS", CheckMemo(64))
    x, y = images_and_labels()
    np.savez(root / "v.npz", inputs=x, labels=np.full(len(y), 12))
    checks = calls_of(monkeypatch, type(get_supernet("fmnist-ofa-cnn")), "check_data")
    settle(root / "v.npz")
    held: list[str] = []

    class Guard:
        def __enter__(self) -> None:
            held.append("in")

        def __exit__(self, *exc: object) -> None:
            held.append("out")

    for spelling in ("v.npz", "./v.npz", "././v.npz", str(root / "v.npz")):
        with pytest.raises(InvalidInput, match=r"labels must lie in 0\.\.9") as caught:
            registry.check_validation_data("fmnist-ofa-cnn", spelling, Guard())
        assert caught.value.field == "validation_data"
    assert len(checks) == 1 and held == ["in", "out"]  # one read, under the guard
    np.savez(root / "v.npz", inputs=x, labels=y)  # fixed: read again, and passes
    registry.check_validation_data("fmnist-ofa-cnn", "./v.npz", Guard())
    registry.check_validation_data("fmnist-ofa-cnn", "v.npz", Guard())  # just written: again
    assert len(checks) == 3 and held == ["in", "out"] * 3
    settle(root / "v.npz")
    for _ in range(2):
        registry.check_validation_data("fmnist-ofa-cnn", "v.npz", Guard())
    assert len(checks) == 4  # settled: kept after one more read


def test_a_directory_is_walked_again_only_when_its_files_change(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``check_path`` walked an image directory whole (a stat per image) for every
    submission naming it, 0.8 s for 9,000 images; its answer is now kept until a file is
    added, removed or renamed under it, or classes.txt changes."""
    from models import user_data

    monkeypatch.setattr(user_data, "_DIRECTORY_CHECKS", CheckMemo(64))
    for name in ("a", "b"):
        (root / "imgs" / name / "deep").mkdir(parents=True)
        (root / "imgs" / name / "x.png").write_bytes(b"png")
    walks = calls_of(monkeypatch, user_data, "scan_images")
    check_path("imgs")  # just made: walked, nothing kept
    settle(root / "imgs")
    check_path("imgs")
    check_path("./imgs/")
    assert len(walks) == 2
    (root / "imgs" / "a" / "deep" / "y.png").write_bytes(b"png")  # a file added two levels down
    settle(root / "imgs")
    check_path("imgs")
    assert len(walks) == 3
    (root / "imgs" / "classes.txt").write_text("b\na\nc\n")
    settle(root / "imgs")
    check_path("imgs")
    check_path("imgs")
    assert len(walks) == 4
    for image in (root / "imgs" / "b").glob("*.png"):  # class b left without images
        image.unlink()
    settle(root / "imgs")
    for _ in range(2):
        with pytest.raises(InvalidInput, match="class 'b' has no images"):
            check_path("imgs")
    assert len(walks) == 5  # the refusal is kept too


def test_a_plugin_check_that_breaks_is_answered_as_its_data_error(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_DATA_CHECKS", CheckMemo(64))
    x, y = images_and_labels()
    np.savez(root / "v.npz", inputs=x, labels=y)
    fmnist = type(get_supernet("fmnist-ofa-cnn"))

    def broken(self: object) -> None:
        raise RuntimeError("shape mismatch in my check\nsecond line")

    monkeypatch.setattr(fmnist, "check_data", broken)
    with pytest.raises(
        InvalidInput,
        match="could not check the validation data: RuntimeError: shape mismatch in my check$",
    ):
        registry.check_validation_data("fmnist-ofa-cnn", "v.npz")


def test_files_that_lie_or_are_not_what_they_are_named_are_refused_with_a_reason(
    root: Path,
) -> None:
    """An array whose header declares more than any memory holds was a MemoryError with a
    traceback in the job; a text file named .pt was "refused by torch.load: 101"; an empty
    path was the data root itself, walked as an image directory."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**11, 28, 28)}
    )
    labels = io.BytesIO()
    np.save(labels, np.arange(4))
    with zipfile.ZipFile(root / "liar.npz", "w") as archive:
        archive.writestr("inputs.npy", header.getvalue() + bytes(16))
        archive.writestr("labels.npy", labels.getvalue())
    with pytest.raises(InvalidInput, match=r"liar\.npz: not a readable \.npz .*MemoryError"):
        load_user_data("liar.npz")
    (root / "text.pt").write_text("hello, not a tensor file\n")
    with pytest.raises(InvalidInput, match=r"not the zip archive torch\.save writes"):
        load_user_data("text.pt")
    for empty in ("", "  "):
        with pytest.raises(InvalidInput, match="empty: name a file or image directory"):
            check_path(empty)


class _Pickled:
    """What a tensor file must not hold: an object torch would unpickle by running code."""


def test_a_tensor_file_holding_python_objects_is_refused_in_one_plain_line(root: Path) -> None:
    """torch's text was its first line, about "two options" it did not show, with terminal
    escape codes (audit 29)."""
    torch.save({"inputs": torch.zeros(4, 28, 28), "extra": _Pickled()}, root / "evil.pt")
    with pytest.raises(InvalidInput) as refused:
        load_user_data("evil.pt")
    message = str(refused.value)
    assert message.startswith(
        "evil.pt: refused by torch.load(weights_only=True): it holds Python objects besides "
        "tensors (Unsupported global: GLOBAL tests.models.test_user_data._Pickled was not an "
        "allowed global by default): save a dict of tensors only"
    )
    assert "\x1b" not in message and "\n" not in message and "options" not in message


def test_a_supernet_that_cannot_be_built_without_its_weights_is_left_to_its_worker(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check builds an instance with the data alone; one whose class requires its
    weights refused every job naming data (422 on supernet) though its worker would run it."""
    from models.fmnist_cnn import FmnistOFACNN

    class NeedsWeights(FmnistOFACNN):
        name = "test-needs-weights"

        def __init__(self, *, weights: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)

    monkeypatch.setitem(registry._FACTORIES, NeedsWeights.name, NeedsWeights)
    monkeypatch.setattr(registry, "_DATA_CHECKS", CheckMemo(64))
    x, y = images_and_labels()
    np.savez(root / "v.npz", inputs=x, labels=np.full(len(y), 12))  # its worker would refuse
    settle(root / "v.npz")
    registry.check_validation_data(NeedsWeights.name, "v.npz")  # not checked here: no error
    assert not registry._DATA_CHECKS._answers  # nor kept as a pass


def test_a_supernet_that_reads_its_data_when_built_is_refused_then(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the check's instance is the check for such a class: its data error is the
    answer (422), not a reason to leave the check to the worker."""
    from models.fmnist_cnn import FmnistOFACNN

    class Eager(FmnistOFACNN):
        name = "test-eager-data"

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            _ = self._data

        def check_data(self) -> None:
            pass

    monkeypatch.setitem(registry._FACTORIES, Eager.name, Eager)
    monkeypatch.setattr(registry, "_DATA_CHECKS", CheckMemo(64))
    x, y = images_and_labels()
    np.savez(root / "v.npz", inputs=x, labels=np.full(len(y), 12))
    with pytest.raises(InvalidInput, match=r"labels must lie in 0\.\.9"):
        registry.check_validation_data(Eager.name, "v.npz")


def test_images_in_a_linked_class_folder_changed_on_disk_are_read_again(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Class folders linked in from elsewhere (a train/val split made of links): their
    images changed unseen, a running server measured and reused the old ones (audit 30)."""
    from PIL import Image

    monkeypatch.setattr(registry, "_DATA_INSTANCES", OrderedDict())
    for label in ("a", "b"):
        (root / "real" / label).mkdir(parents=True)
        Image.new("L", (28, 28), 40).save(root / "real" / label / "0.png")
        (root / "linked").mkdir(exist_ok=True)
        (root / "linked" / label).symlink_to(root / "real" / label)
    (root / "real" / "a" / "loop").symlink_to(root / "linked")  # walked once
    first = get_supernet("fmnist-ofa-cnn", validation_data="linked").fingerprint()
    Image.new("L", (28, 28), 200).save(root / "real" / "b" / "0.png")
    assert get_supernet("fmnist-ofa-cnn", validation_data="linked").fingerprint() != first


def test_a_data_file_s_name_is_said_escaped(root: Path) -> None:
    """Review 31: a .npz named with a newline and a terminal escape forged a log line in the
    job's failure traceback (image names were escaped, single files not)."""
    (root / "b\n2026 ERROR forged \x1b[31m.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidInput) as refused:
        load_user_data("b\n2026 ERROR forged \x1b[31m.npz")
    said = str(refused.value)
    assert said.startswith("b\\x0a2026 ERROR forged \\x1b[31m.npz: not a .npz file")
    assert "\n" not in said and "\x1b" not in said


@pytest.mark.parametrize("step", ["check_path", "load_user_data"])
def test_a_data_file_swapped_for_a_fifo_after_its_look_up_is_refused_not_waited_on(
    root: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Review 31b: the zip and size checks opened the file by name after the look-up: a
    FIFO put there meanwhile hung the check (holding the CPU lock) or the job's start."""
    images, labels = images_and_labels()
    np.savez(root / "val.npz", inputs=images, labels=labels)
    real_confine = user_data.confine

    def swapped(*args: Any, **kwargs: Any) -> Path:
        resolved = real_confine(*args, **kwargs)
        resolved.unlink()
        os.mkfifo(resolved)  # between the look-up and the read, as a racing writer would
        return resolved

    monkeypatch.setattr(user_data, "confine", swapped)
    check = check_path if step == "check_path" else load_user_data
    refused = raised_without_waiting(root / "val.npz", lambda: check("val.npz"))
    assert isinstance(refused, InvalidInput), refused
    assert str(refused).startswith("val.npz: not a regular file")
