"""User validation data as a directory of images: layout, conversion, limits, supernet wiring."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import InvalidInput
from core.settings import get_settings
from models import data, registry, user_images
from models.base import ImageFormat
from models.fmnist_cnn import smallest_arch
from models.ofa_mbv3 import OFAMobileNetV3
from models.registry import create_supernet, get_supernet
from models.user_data import check_path, load_user_data

from .fifo import raised_without_waiting

GREY8 = ImageFormat(mode="L", size=8)
RGB10 = ImageFormat(mode="RGB", size=10)
#: Fashion-MNIST's class names in label order; sorted, they are in another order.
FMNIST_CLASSES = "T-shirt_top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag Ankle_boot"


def write_image(path: Path, pixels: np.ndarray | tuple[int, ...], size: int = 12) -> Path:
    """An image file (format from the suffix): ``pixels`` as an array, or one solid colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(pixels, tuple):
        shape = (size, size, len(pixels)) if len(pixels) > 1 else (size, size)
        pixels = np.full(shape, pixels, np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def image_tree(top: Path, counts: dict[str, int]) -> Path:
    """``counts[name]`` grey images in ``top/name``, image i solid with value i."""
    for name, count in counts.items():
        for i in range(count):
            write_image(top / name / f"{i}.png", (i,))
    return top


def test_labels_follow_sorted_class_directories_or_classes_txt(root: Path) -> None:
    image_tree(root / "set", {"b": 2, "a": 1, "c": 1, "_calib": 1})
    (root / "set" / "b" / "README.txt").write_text("not an image: ignored")
    write_image(root / "set" / "b" / ".hidden.png", (9,))  # hidden: ignored
    write_image(root / "set" / "a" / "deeper" / "more.PNG", (9,))  # any depth, any case
    loaded = load_user_data("set", image_format=GREY8)
    assert loaded.labels.tolist() == [0, 0, 1, 1, 2]  # a (2 images), b (2), c (1)
    assert loaded.inputs.shape == (5, 8, 8) and loaded.inputs.dtype == torch.uint8
    (root / "set" / "classes.txt").write_text("c\nb\n\na\n")
    assert load_user_data("set", image_format=GREY8).labels.tolist() == [0, 1, 1, 2, 2]
    (root / "set" / "classes.txt").write_text("c\nb\nd\nb\n")
    with pytest.raises(InvalidInput, match=r"not listed: \['a'\], listed twice: \['b'\]"):
        load_user_data("set", image_format=GREY8)
    # A few of the model's classes keep their ids: the list may name classes with no
    # directory here (the images of 3 of ImageNet's 1,000 classes were labelled 0..2).
    (root / "set" / "classes.txt").write_text("z\nc\ny\nb\nx\na\nw\n")
    assert load_user_data("set", image_format=GREY8).labels.tolist() == [1, 3, 3, 5, 5]


def test_images_are_converted_resized_and_centre_cropped(root: Path) -> None:
    write_image(root / "set" / "x" / "solid.png", (200, 100, 50), size=40)
    thirds = np.zeros((10, 30, 3), np.uint8)  # red | green | blue, 10 x 30
    thirds[:, :10, 0] = thirds[:, 10:20, 1] = thirds[:, 20:, 2] = 255
    write_image(root / "set" / "y" / "thirds.bmp", thirds)
    rgb = load_user_data("set", image_format=RGB10).inputs
    assert rgb.shape == (2, 3, 10, 10)
    assert rgb[0].flatten(1).tolist() == [[200] * 100, [100] * 100, [50] * 100]
    assert rgb[1].flatten(1).tolist() == [[0] * 100, [255] * 100, [0] * 100]  # the middle
    grey = load_user_data("set", image_format=GREY8).inputs
    assert grey.shape == (2, 8, 8)
    assert grey[0].unique().tolist() == [124]  # ITU-R 601-2 luma of (200, 100, 50)


def test_calibration_images_come_from_the_calib_directory(root: Path) -> None:
    image_tree(root / "set", {"a": 2, "b": 1})
    write_image(root / "set" / "_calib" / "one.jpg", (40,))
    write_image(root / "set" / "_calib" / "nested" / "two.gif", (80,))
    loaded = load_user_data("set", image_format=GREY8)
    assert loaded.calib is not None and loaded.calib.shape == (2, 8, 8)
    assert loaded.calib[1].unique().tolist() == [80]  # lossless GIF, after the flat file
    assert len(loaded.labels) == 3  # _calib is not a class
    for path in (root / "set" / "_calib").rglob("*.*"):
        path.unlink()
    with pytest.raises(InvalidInput, match="_calib holds no images"):
        load_user_data("set", image_format=GREY8)


def test_a_file_that_does_not_decode_is_refused_by_name(root: Path) -> None:
    image_tree(root / "set", {"a": 1})
    (root / "set" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InvalidInput, match=r"set/a/broken\.png: not a readable image"):
        load_user_data("set", image_format=GREY8)
    (root / "set" / "a" / "broken.png").unlink()
    (root / "set" / "a" / "script.jpg").write_bytes(b"#!/bin/sh\necho hi\n")
    with pytest.raises(InvalidInput, match=r"set/a/script\.jpg: not a readable image") as caught:
        load_user_data("set", image_format=GREY8)
    assert "BytesIO" not in str(caught.value)  # Pillow's text named its buffer's address
    for i in range(12):  # each job found the next one (audit 30): named together
        (root / "set" / "a" / f"more{i:02d}.gif").write_bytes(b"GIF89a?")
    with pytest.raises(InvalidInput) as caught:
        load_user_data("set", image_format=GREY8)
    assert str(caught.value).startswith("set/a/more00.gif: not a readable image (")
    assert str(caught.value).endswith(
        "; 12 other images do not decode either: set/a/more01.gif, set/a/more02.gif, "
        "set/a/more03.gif, set/a/more04.gif, set/a/more05.gif, set/a/more06.gif, "
        "set/a/more07.gif, set/a/more08.gif, set/a/more09.gif, set/a/more10.gif and 2 more"
    )


def test_an_image_swapped_for_a_fifo_after_the_scan_is_refused_not_waited_on(root: Path) -> None:
    """The scan checked each name; the read opened it later: a FIFO put there meanwhile hung
    the worker on its read until someone wrote to it (security audit 31)."""
    top = image_tree(root / "set", {"a": 2, "b": 1})
    folder = user_images.scan_images(top, roots=[root], max_bytes=2**20, max_images=10)
    fifo = top / "a" / "1.png"
    fifo.unlink()
    os.mkfifo(fifo)
    refused = raised_without_waiting(
        fifo, lambda: user_images.read_images(folder.samples, GREY8, max_bytes=2**20)
    )
    assert isinstance(refused, InvalidInput), refused
    assert str(refused).startswith("set/a/1.png: not a regular file (a FIFO")


def test_an_image_swapped_for_a_link_after_the_scan_is_refused_in_words(root: Path) -> None:
    """Review 31b L7: the refusal was the system's "Too many levels of symbolic links"."""
    top = image_tree(root / "set", {"a": 2, "b": 1})
    folder = user_images.scan_images(top, roots=[root], max_bytes=2**20, max_images=10)
    (top / "a" / "1.png").unlink()
    (top / "a" / "1.png").symlink_to(top / "a" / "0.png")  # inside the roots, and an image
    with pytest.raises(InvalidInput) as refused:
        user_images.read_images(folder.samples, GREY8, max_bytes=2**20)
    assert str(refused.value) == f"set/a/1.png: {user_images.BECAME_A_LINK}"


def test_a_directory_or_file_it_may_not_read_is_refused_by_name(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission denied (these tests run as root, whom modes do not stop, so the system's
    refusal is raised here as the system would): a 422 naming the user's path, not a 500
    whose text holds the data roots."""
    image_tree(root / "set", {"a": 1, "b": 1})
    listing, opening, os_open, scandir = Path.iterdir, Path.open, os.open, os.scandir

    def refuse(denied: Path, real):  # type: ignore[no-untyped-def]
        def call(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
            if Path(self) == denied:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        return call

    for denied, method, real, shown in (
        (root / "set", "iterdir", listing, "'set'"),
        (root / "set" / "b", "iterdir", listing, "set/b"),
        (root / "set" / "a" / "0.png", "open", opening, "set/a/0.png"),
    ):
        if method == "open":  # opened by descriptor (user_images.open_regular)
            monkeypatch.setattr(os, "open", refuse(denied.resolve(), os_open))
        else:  # a class folder is listed by os.scandir (user_images._Scan._listed)
            monkeypatch.setattr(Path, method, refuse(denied.resolve(), real))
            monkeypatch.setattr(os, "scandir", refuse(denied.resolve(), scandir))
        with pytest.raises(InvalidInput, match="cannot be looked up: Permission denied") as caught:
            load_user_data("set", image_format=GREY8)
        assert shown in str(caught.value) and str(root) not in str(caught.value)
        monkeypatch.setattr(Path, method, real)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "scandir", scandir)


def test_images_over_the_pixel_limit_are_refused_before_decoding(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_tree(root / "set", {"a": 1})
    write_image(root / "set" / "a" / "big.png", (1,), size=13)  # the other is 12 x 12
    monkeypatch.setattr(user_images, "MAX_PIXELS", 150)
    with pytest.raises(InvalidInput, match=r"big\.png: 13x13 pixels is over the limit of 150"):
        load_user_data("set", image_format=GREY8)


def test_images_over_the_pixel_limit_in_all_are_refused_before_decoding_them(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security audit 31: only bytes on disk were counted, and a blank 40 MP PNG is 39 KB."""
    image_tree(root / "set", {"a": 3})  # 12 x 12 each: 144 pixels
    monkeypatch.setattr(user_images, "MAX_TOTAL_PIXELS", 144 * 3)
    assert len(load_user_data("set", image_format=GREY8).labels) == 3
    decoded: list[str] = []
    decode = user_images._decode
    monkeypatch.setattr(
        user_images,
        "_decode",
        lambda data, fmt, name: decoded.append(name) or decode(data, fmt, name),
    )
    monkeypatch.setattr(user_images, "MAX_TOTAL_PIXELS", 144 * 3 - 1)
    with pytest.raises(InvalidInput, match=r"set/a/2\.png: the images are over the limit of 431"):
        load_user_data("set", image_format=GREY8)
    assert decoded == ["set/a/0.png", "set/a/1.png"]  # the third, over the limit, was not


def test_a_directory_of_too_many_entries_is_refused_as_they_are_listed(root: Path) -> None:
    """Security audit 31: only images counted, and 300,000 other files in a class folder
    took 16 s to list at each submission."""
    top = image_tree(root / "set", {"a": 1, "b": 1})
    for i in range(1007):  # with the folders a and b: one over 4 x 2 + 1,000 besides images
        (top / "a" / f"{i}.txt").touch()
    with pytest.raises(InvalidInput, match=r"^set: more than 1,008 files and folders besides"):
        user_images.scan_images(top, roots=[root], max_bytes=2**20, max_images=2)
    (top / "a" / "0.txt").unlink()
    folder = user_images.scan_images(top, roots=[root], max_bytes=2**20, max_images=2)
    assert len(folder.samples) == 2
    # Images over the limit are said as such, however many (review 31b: the entries' limit
    # was said first of a folder of images alone)
    image_tree(root / "many", {"a": 1100})
    with pytest.raises(InvalidInput, match=r"^many: more than 2 images \(HWNAS_MAX_DATA_IMAGES"):
        user_images.scan_images(root / "many", roots=[root], max_bytes=2**30, max_images=2)


def test_links_out_of_the_roots_are_refused(root: Path, tmp_path: Path) -> None:
    image_tree(root / "set", {"a": 1, "b": 1})
    outside = image_tree(tmp_path / "elsewhere", {"x": 1})
    (root / "set" / "a" / "link.png").symlink_to(outside / "x" / "0.png")
    with pytest.raises(InvalidInput, match=r"set/a/link\.png resolves outside") as caught:
        check_path("set")
    assert str(tmp_path) not in str(caught.value)  # the server's layout is not disclosed
    (root / "set" / "a" / "link.png").unlink()
    (root / "set" / "c").symlink_to(outside / "x", target_is_directory=True)
    with pytest.raises(InvalidInput, match=r"set/c resolves outside"):
        load_user_data("set", image_format=GREY8)
    (root / "set" / "c").unlink()
    (root / "set" / "c").symlink_to(root / "set" / "b", target_is_directory=True)  # inside
    (root / "set" / "b" / "loop").symlink_to(root / "set" / "b", target_is_directory=True)
    assert load_user_data("set", image_format=GREY8).labels.tolist() == [0, 1, 2]


def test_count_and_total_size_limits(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image_tree(root / "set", {"a": 2, "_calib": 1})
    total = sum(path.stat().st_size for path in (root / "set").rglob("*.png"))
    assert check_path("set", max_images=3, max_bytes=total) == (root / "set").resolve()
    with pytest.raises(InvalidInput, match=r"more than 2 images \(HWNAS_MAX_DATA_IMAGES\)"):
        load_user_data("set", image_format=GREY8, max_images=2)
    with pytest.raises(InvalidInput, match=r"over the limit .* \(HWNAS_MAX_DATA_FILE_MB\)"):
        load_user_data("set", image_format=GREY8, max_bytes=total - 1)
    monkeypatch.setenv("HWNAS_MAX_DATA_IMAGES", "2")
    get_settings.cache_clear()
    with pytest.raises(InvalidInput, match="more than 2 images"):
        check_path("set")  # what the API runs when a job is posted


def test_layouts_without_images_are_refused_with_a_reason(root: Path) -> None:
    (root / "flat").mkdir()
    write_image(root / "flat" / "0.png", (1,))
    with pytest.raises(InvalidInput, match="no class sub-directories"):
        check_path("flat")
    (root / "flat" / "cat").mkdir()
    (root / "flat" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(InvalidInput, match=r"class 'cat' has no images \(\.png"):
        check_path("flat")


def test_supernets_that_take_no_images_refuse_a_directory(root: Path) -> None:
    image_tree(root / "set", {"a": 1})
    net = create_supernet("text-transformer-synth", validation_data="set")
    with pytest.raises(InvalidInput, match="a directory, but this supernet does not take images"):
        net.evaluate(net.decode("e64-h2f128"))
    assert net.image_format() is None
    fmnist = create_supernet("fmnist-ofa-cnn", validation_data="set")
    assert fmnist.image_format() == ImageFormat("L", 28)
    image_tree(root / "eleven", {f"c{i:02d}": 1 for i in range(11)})
    with pytest.raises(InvalidInput, match="11 class directories, but the supernet predicts 10"):
        load_user_data("eleven", num_classes=10, image_format=GREY8)


def test_a_directory_of_more_classes_than_the_supernet_predicts_is_refused_unread(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked at submission from the class names alone (fuzz L2: such a job was accepted,
    then failed in the worker), held to the supernet's number of outputs; no image is
    decoded."""

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the class check decoded an image")

    monkeypatch.setattr("models.user_data.read_images", no_decoding)
    image_tree(root / "eleven", {f"c{i:02d}": 1 for i in range(11)})
    with pytest.raises(InvalidInput) as caught:
        registry.check_validation_data("fmnist-ofa-cnn", "eleven")
    assert caught.value.field == "validation_data"
    assert str(caught.value) == (
        "eleven: 11 class directories, but the supernet predicts 10 classes "
        "(labels must lie in 0..9)"
    )
    # A classes.txt naming more classes than outputs, whatever directories are present
    image_tree(root / "listed", {"a": 1, "b": 1})
    (root / "listed" / "classes.txt").write_text("\n".join(["a", "b", *"cdefghijkl"]))
    with pytest.raises(InvalidInput, match=r"^listed: its classes.txt names 12 classes, but"):
        registry.check_validation_data("fmnist-ofa-cnn", "listed")
    # Fewer classes than outputs: a subset keeping its ids, or the first few sorted.
    (root / "listed" / "classes.txt").write_text("x\nb\ny\na\n")
    registry.check_validation_data("fmnist-ofa-cnn", "listed")
    image_tree(root / "ten", {f"c{i}": 1 for i in range(10)})
    registry.check_validation_data("fmnist-ofa-cnn", "ten")
    assert get_supernet("fmnist-ofa-cnn").num_outputs() == 10
    assert OFAMobileNetV3(num_classes=3).num_outputs() == 3  # what it holds directories to


def test_fmnist_accuracy_on_png_files_equals_the_same_samples_as_npz(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_DATA_INSTANCES", OrderedDict())
    subset = data.load_subset()
    names = FMNIST_CLASSES.split()
    picks = np.concatenate([np.flatnonzero(subset.val_y == c)[:15] for c in range(10)])
    for i in picks:  # class-major, file names in index order: the order the reader keeps
        write_image(root / "fm" / names[subset.val_y[i]] / f"{i:05d}.png", subset.val_x[i])
    (root / "fm" / "classes.txt").write_text("\n".join(names) + "\n")
    np.savez(root / "fm.npz", inputs=subset.val_x[picks], labels=subset.val_y[picks])
    from_pngs = get_supernet("fmnist-ofa-cnn", validation_data="fm")
    from_npz = get_supernet("fmnist-ofa-cnn", validation_data="fm.npz")
    for arch in (smallest_arch(), dict(smallest_arch(), r=28, k1_1=7, e1_1=6)):
        accuracy = from_pngs.evaluate(arch)["accuracy"]
        assert accuracy == from_npz.evaluate(arch)["accuracy"]
        assert 0.5 < accuracy <= 1.0


def test_ofa_evaluates_and_recalibrates_on_an_image_directory(root: Path) -> None:
    rng = np.random.default_rng(0)
    for i, label in enumerate((3, 3, 7)):  # class directories "003", "007": labels 0, 1
        pixels = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
        write_image(root / "in" / f"{label:03d}" / f"{i}.png", pixels)
    write_image(root / "in" / "_calib" / "c.jpg", rng.integers(0, 256, (64, 64, 3), np.uint8))
    net = OFAMobileNetV3(validation_data="in")
    assert net.image_format() == ImageFormat("RGB", 256)
    loaded = load_user_data("in", image_format=net.image_format())
    assert loaded.inputs.shape == (3, 3, 256, 256) and loaded.calib is not None
    np.savez(root / "in.npz", inputs=loaded.inputs, labels=loaded.labels, calib_inputs=loaded.calib)
    same = OFAMobileNetV3(validation_data="in.npz")
    arch = {g: c[0] for g, c in net.space().items()}
    assert net.evaluate(arch) == same.evaluate(arch)
    means = [n.extract(arch).first_conv.bn.running_mean for n in (net, same)]  # type: ignore
    assert torch.equal(means[0], means[1])
    assert not torch.equal(means[0], net.module.first_conv.bn.running_mean)  # type: ignore


def test_an_image_directory_names_the_classes_of_an_ofa_export(root: Path, tmp_path: Path) -> None:
    """Once-for-All's weights do not name their classes: the card of an export measured on
    an image directory that names every class carries them (user probe, session 21)."""
    from models.export import export_subnet

    for i, name in enumerate(("cat", "dog", "emu")):
        write_image(root / "three" / name / f"{i}.png", (i, i, i), size=40)
    (root / "three" / "classes.txt").write_text("emu\ncat\ndog\n")
    net = OFAMobileNetV3(validation_data="three", num_classes=3)
    assert net.output_classes() == ("emu", "cat", "dog")  # classes.txt's order: the labels'
    arch = {g: c[0] for g, c in net.space().items()}
    path = export_subnet(net, arch, "state_dict", tmp_path / "net.zip")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["output"]["classes"] == ["emu", "cat", "dog"]
    # Naming fewer classes than the network predicts, or no names at all: nothing.
    assert OFAMobileNetV3(validation_data="three").output_classes() is None
    np.savez(root / "t.npz", inputs=np.zeros((1, 3, 8, 8), np.uint8), labels=np.zeros(1, np.int64))
    assert OFAMobileNetV3(validation_data="t.npz", num_classes=3).output_classes() is None
    assert OFAMobileNetV3(num_classes=3).output_classes() is None


@pytest.mark.parametrize("answer", [RuntimeError("broken"), 0, True, "10"])
def test_a_plugin_num_outputs_that_fails_checks_no_class_count(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, answer: object
) -> None:
    """A plugin's ``num_outputs`` that raises or gives no whole number >= 1 is logged and
    checks nothing (the worker's load still holds the data to the network): no 500."""

    def num_outputs(self: object) -> object:
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(type(get_supernet("fmnist-ofa-cnn")), "num_outputs", num_outputs)
    image_tree(root / "eleven", {f"c{i:02d}": 1 for i in range(11)})
    registry.check_validation_data("fmnist-ofa-cnn", "eleven")
    assert "num_outputs()" in caplog.text


def test_an_export_card_says_how_an_image_file_became_the_input_measured(root: Path) -> None:
    """An OFA card gave only the resize per resolution, not the one to 256 before it: a
    deployer who followed it got other predictions on 14 % of the images (audit 30). The
    card's recipe, followed step by step, gives the very tensor hwnas measured on."""
    from models.export import architecture_card
    from models.ofa_common import imagenet_preprocess

    rng = np.random.default_rng(3)
    for i, (height, width) in enumerate(((90, 120), (300, 200), (256, 256))):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        write_image(root / "imgs" / "a" / f"{i}.png", pixels)
    net = get_supernet("ofa_mbv3_d234_e346_k357_w1.0", validation_data="imgs")
    arch = {**{g: c[0] for g, c in net.space().items()}, "r": 160}
    card_input = architecture_card(net, arch, None)["input"]
    stage = card_input["image_file"]
    assert stage == {"decoder": "Pillow", "mode": "RGB", "shorter_side": 256,
                     "resample": "BILINEAR", "centre_crop": 256}  # fmt: skip
    assert card_input["preprocess"].startswith("the image file decoded with Pillow")
    assert "; then RGB 0..255 values, shorter side resized to 183" in card_input["preprocess"]
    for i, path in enumerate(sorted((root / "imgs" / "a").iterdir())):
        with Image.open(path) as image:
            image = image.convert(stage["mode"])
            short, (width, height) = stage["shorter_side"], image.size
            if image.size != (short, short):
                width, height = short * width // min(image.size), short * height // min(image.size)
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            crop = stage["centre_crop"]
            left, top = (width - crop) // 2, (height - crop) // 2
            pixels = np.asarray(image.crop((left, top, left + crop, top + crop)))
        ours = imagenet_preprocess(torch.from_numpy(pixels.copy())[None], 160)
        measured = imagenet_preprocess(net._data.inputs[i : i + 1], 160)  # type: ignore[attr-defined]
        assert torch.equal(ours, measured)
    # measured on arrays, or on its own data: no image stage
    np.savez(root / "a.npz", inputs=rng.integers(0, 256, (2, 3, 64, 64), np.uint8),
             labels=np.zeros(2, np.int64))  # fmt: skip
    arrays = get_supernet("ofa_mbv3_d234_e346_k357_w1.0", validation_data="a.npz")
    assert "image_file" not in architecture_card(arrays, arch, None)["input"]


def test_16_bit_grey_images_are_scaled_and_a_byte_order_mark_is_no_class_name(
    root: Path,
) -> None:
    """A 16-bit mid-grey PNG became white (Pillow's convert clips); a classes.txt saved
    with a byte-order mark refused its first class as unlisted (audit 30)."""
    (root / "deep" / "b").mkdir(parents=True)
    Image.fromarray(np.full((12, 12), 32896, np.uint16)).save(root / "deep" / "b" / "0.png")
    write_image(root / "deep" / "a" / "0.png", (7,))
    eight_in_32 = np.full((12, 12), 200, np.int32)  # mode I: 8-bit values kept as they are
    Image.fromarray(eight_in_32, mode="I").save(root / "deep" / "a" / "1.tif")
    dark = np.full((12, 12), 2570, np.uint16)  # a dark 16-bit PGM: Pillow's mode I, scaled
    Image.fromarray(dark).save(root / "deep" / "a" / "2.pgm")  # (review 30b: read as 8-bit)
    (root / "deep" / "classes.txt").write_bytes("\ufeffb\r\na\r\n".encode())
    loaded = load_user_data("deep", image_format=GREY8)
    assert loaded.classes == ("b", "a")
    pixels = sorted(zip(loaded.labels.tolist(), loaded.inputs.reshape(4, -1)[:, 0].tolist(),
                        strict=True))  # fmt: skip
    assert pixels == [(0, 128), (1, 7), (1, 10), (1, 200)]  # b: 32896 / 257 = 128, not 255


def test_class_directories_of_the_model_s_classes_in_sorted_order_are_refused(
    root: Path,
) -> None:
    """Fashion-MNIST's class folders without their classes.txt were labelled in sorted
    order: Ankle_boot scored as T-shirt/top, accuracy 0.38 for 0.93, without a word (audit
    30). Refused, with the classes.txt to write; given it, or in the model's order, or
    other classes than the model's: taken."""
    names = FMNIST_CLASSES.split()
    image_tree(root / "fm", dict.fromkeys(names, 1))
    with pytest.raises(InvalidInput) as refused:
        registry.check_validation_data("fmnist-ofa-cnn", "fm")
    assert "Ankle_boot would be class 0, the model's 9" in str(refused.value)
    said = str(refused.value).rpartition("one a line: ")[2].split(", ")
    (root / "fm" / "classes.txt").write_text("\n".join(said) + "\n")
    assert said == names  # the folders' own names, in the model's order
    registry.check_validation_data("fmnist-ofa-cnn", "fm")
    image_tree(root / "few", {"Trouser": 1, "Coat": 1})  # sorted: Coat 0, the model's 4
    with pytest.raises(InvalidInput, match=r"add a classes.txt .*: T-shirt/top, Trouser, "):
        registry.check_validation_data("fmnist-ofa-cnn", "few")
    image_tree(root / "own", {"cat": 1, "dog": 1})  # not the model's: the user's labels
    registry.check_validation_data("fmnist-ofa-cnn", "own")


def test_ofa_says_when_its_data_has_no_images_to_recalibrate_on(root: Path, tmp_path: Path) -> None:
    """Without ``_calib/`` each sub-network kept the checkpoint's BatchNorm statistics,
    with nothing said (audit 30)."""
    torch.save(OFAMobileNetV3(num_classes=2).module.state_dict(), tmp_path / "w.pt")
    image_tree(root / "plain", {"a": 1, "b": 1})
    image_tree(root / "calibrated", {"a": 1, "b": 1, "_calib": 1})
    warnings = {
        data: OFAMobileNetV3(
            checkpoint=tmp_path / "w.pt", validation_data=data, num_classes=2
        ).quality_warning()
        for data in ("plain", "calibrated")
    }
    assert (warnings["plain"] or "").startswith("no calibration images")
    assert warnings["calibrated"] is None
    assert OFAMobileNetV3().quality_warning() == (
        "random weights (no checkpoint given): accuracy is meaningless"
    )
