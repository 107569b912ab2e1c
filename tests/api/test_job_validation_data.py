"""JobCreate.validation_data: a user data path, checked when the job is posted."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

import api.schemas
from api.schemas import JobCreate
from core.settings import get_settings
from models.user_data import check_path

from .helpers import job_spec, wait_for


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "data"
    root.mkdir()
    np.savez(root / "val.npz", inputs=np.zeros((4, 28, 28), np.uint8), labels=np.arange(4))
    monkeypatch.setenv("HWNAS_DATA_ROOTS", str(root))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


def test_absent_by_default_and_accepted_inside_the_roots(root: Path) -> None:
    assert JobCreate.model_validate(job_spec()).validation_data is None
    job = JobCreate.model_validate(job_spec(validation_data="val.npz"))
    assert job.validation_data == "val.npz"


def test_an_image_directory_is_refused_for_a_supernet_that_reads_tokens(root: Path) -> None:
    from PIL import Image

    (root / "images" / "cat").mkdir(parents=True)
    Image.new("L", (28, 28)).save(root / "images" / "cat" / "0.png")
    assert JobCreate.model_validate(job_spec(validation_data="images")).validation_data
    text = {"supernet": "text-transformer-synth", "objectives": {"accuracy": "max"}}
    with pytest.raises(ValidationError, match="reads tensor files only") as caught:
        JobCreate.model_validate(job_spec(**text, validation_data="images"))
    assert caught.value.errors()[0]["loc"] == ("validation_data",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"validation_data": "/etc/passwd"}, "inside the configured data roots"),
        ({"validation_data": "../outside.npz"}, "inside the configured data roots"),
        ({"validation_data": "."}, "no class sub-directories"),  # a directory of images
        (
            {
                "supernet": "nb201-cifar10",
                "device": "nb201-pixel3",
                "validation_data": "val.npz",
            },
            "does not measure accuracy on user data",
        ),
    ],
)
def test_refused_with_a_message_naming_the_field(root: Path, change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        JobCreate.model_validate(job_spec(**change))
    assert caught.value.errors()[0]["loc"] == ("validation_data",)


OFA = "ofa_mbv3_d234_e346_k357_w1.0"  # no validation data of its own


def test_a_supernet_without_data_of_its_own_needs_it_only_for_quality() -> None:
    accuracy = job_spec(supernet=OFA, objectives={"accuracy": "max", "latency_ms": "min"})
    with pytest.raises(ValidationError, match="no validation data of its own") as caught:
        JobCreate.model_validate(accuracy)
    assert caught.value.errors()[0]["loc"] == ("validation_data",)
    constrained = job_spec(
        supernet=OFA,
        objectives={"latency_ms": "min"},
        constraints={"accuracy": {"min": 0.7}},
    )
    with pytest.raises(ValidationError, match="cannot measure accuracy"):
        JobCreate.model_validate(constrained)
    latency_only = job_spec(supernet=OFA, objectives={"latency_ms": "min", "macs": "min"})
    assert JobCreate.model_validate(latency_only).validation_data is None


@pytest.mark.parametrize("supernet", [OFA, "ofa_mbv3_d234_e346_k357_w1.2", "ofa_resnet50"])
def test_a_supernet_without_data_of_its_own_takes_the_users(root: Path, supernet: str) -> None:
    """MobileNetV3's class takes ``validation_data`` through ``**kwargs`` (to the OFA base
    class); it was once read as not taking it, so such jobs could never be posted."""
    images = np.zeros((2, 3, 32, 32), np.uint8)  # RGB, as Once-for-All's networks take
    np.savez(root / "rgb.npz", inputs=images, labels=np.arange(2))
    spec = job_spec(supernet=supernet, objectives={"accuracy": "max", "latency_ms": "min"})
    assert JobCreate.model_validate({**spec, "validation_data": "rgb.npz"}).validation_data
    with pytest.raises(ValidationError, match="inputs must be RGB images") as caught:
        JobCreate.model_validate({**spec, "validation_data": "val.npz"})  # grey
    assert caught.value.errors()[0]["loc"] == ("validation_data",)


def test_the_file_check_of_a_post_leaves_the_event_loop_free(
    root: Path, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walking a large image directory (or slow storage) must not stall other requests:
    while one POST's check of validation_data is held, /healthz still answers."""
    entered, release = threading.Event(), threading.Event()

    def held_check(value: str, **kwargs: Any) -> Path:
        entered.set()
        release.wait(10)
        return check_path(value, **kwargs)

    monkeypatch.setattr(api.schemas, "check_path", held_check)
    answers: dict[str, int] = {}

    def post() -> None:
        spec = job_spec(validation_data="/etc/passwd")  # refused once the check runs
        answers["post"] = client.post("/v1/jobs", json=spec).status_code

    def health() -> None:
        answers["healthz"] = client.get("/healthz").status_code

    poster = threading.Thread(target=post)
    poster.start()
    try:
        assert entered.wait(10)
        checker = threading.Thread(target=health)
        checker.start()
        checker.join(5)
        answered_while_held = "healthz" in answers
    finally:
        release.set()
        poster.join(10)
    checker.join(10)
    assert answered_while_held
    assert answers == {"healthz": 200, "post": 422}


def test_a_post_with_validation_data_lists_every_error(root: Path, client: TestClient) -> None:
    """The file check runs apart from the others (api.bodies); its error and theirs are
    answered together, as for any other body."""
    spec = job_spec(validation_data="/etc/passwd", strategy="no-such-strategy")
    answer = client.post("/v1/jobs", json=spec)
    assert answer.status_code == 422
    fields = [error["loc"] for error in answer.json()["detail"]]
    assert ["body", "strategy"] in fields and ["body", "validation_data"] in fields
    accepted = client.post(
        "/v1/jobs", json=job_spec(validation_data="val.npz", budget={"evaluations": 1})
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] in {"queued", "running", "succeeded"}


def test_a_file_whose_contents_cannot_be_measured_is_refused_at_submission(
    root: Path, client: TestClient
) -> None:
    """Its keys, shapes and labels are read when the job is posted (on a worker thread, as
    the path check): a 422 naming the file's problem, not a job that fails in the queue."""
    np.savez(root / "bad.npz", inputs=np.zeros((4, 28, 28), np.uint8), labels=np.arange(8, 12))
    answer = client.post("/v1/jobs", json=job_spec(validation_data="bad.npz"))
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "validation_data"]
    assert "bad.npz: labels must lie in 0..9, found 8..11" in error["msg"]
    assert client.get("/v1/jobs").json()["data"] == []  # nothing was stored


def test_a_post_refused_for_another_field_does_not_read_its_data(
    root: Path, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each POST naming a large image directory walked it whole, even one refused for
    another field, so nothing was stored: a stream of them loaded the cores the embedded
    worker times on (security review, session 20). Only the path is checked then."""
    import models.user_data

    (root / "imgs" / "cat").mkdir(parents=True)
    (root / "imgs" / "cat" / "0.png").write_bytes(b"png")
    walks: list[Path] = []
    monkeypatch.setattr(models.user_data, "_scan", lambda folder, *a: walks.append(folder))
    answer = client.post("/v1/jobs", json=job_spec(validation_data="imgs", strategy="nope"))
    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", "strategy"]]
    assert walks == []
    outside = client.post("/v1/jobs", json=job_spec(validation_data="../x", strategy="nope"))
    fields = [e["loc"] for e in outside.json()["detail"]]
    assert ["body", "validation_data"] in fields  # the path itself is still answered


def test_the_data_check_waits_for_a_timing_in_flight(root: Path, client: TestClient) -> None:
    """It reads the file off the event loop, but not while this process times a
    sub-network on the CPU (``device_lock``, held by the embedded worker's timing)."""
    from hardware_profiles import device_lock

    np.savez(root / "new.npz", inputs=np.zeros((4, 28, 28), np.uint8), labels=np.arange(4))
    answers: list[int] = []
    spec = job_spec(validation_data="new.npz", budget={"evaluations": 1})
    poster = threading.Thread(
        target=lambda: answers.append(client.post("/v1/jobs", json=spec).status_code)
    )
    with device_lock("cpu"):
        poster.start()
        poster.join(1.0)
        assert answers == []  # held behind the timing
    poster.join(30)
    assert answers == [202]


def test_an_image_directory_of_more_classes_than_outputs_is_refused_at_submission(
    root: Path, client: TestClient
) -> None:
    """Fuzz L2: a directory of 11 classes for Fashion-MNIST's 10 outputs was accepted with
    202, and the job failed in the worker; it is a 422 naming both counts."""
    from PIL import Image

    for i in range(11):
        (root / "eleven" / f"c{i:02d}").mkdir(parents=True)
        Image.new("L", (28, 28)).save(root / "eleven" / f"c{i:02d}" / "0.png")
    answer = client.post("/v1/jobs", json=job_spec(validation_data="eleven"))
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "validation_data"]
    assert "eleven: 11 class directories, but the supernet predicts 10 classes" in error["msg"]
    assert client.get("/v1/jobs").json()["data"] == []  # nothing was stored
    # Listed in a classes.txt, more classes than outputs are refused too; fewer pass (a
    # subset that keeps the model's ids), without a job being run here.
    (root / "eleven" / "classes.txt").write_text("\n".join(f"c{i:02d}" for i in range(11)))
    with pytest.raises(ValidationError, match="its classes.txt names 11 classes") as caught:
        JobCreate.model_validate(job_spec(validation_data="eleven"))
    assert caught.value.errors()[0]["loc"] == ("validation_data",)
    for i in range(3, 11):  # c00..c02 left, labels 0..2 of the 10 listed
        shutil.rmtree(root / "eleven" / f"c{i:02d}")
    (root / "eleven" / "classes.txt").write_text("\n".join(f"c{i:02d}" for i in range(10)))
    assert JobCreate.model_validate(job_spec(validation_data="eleven")).validation_data


def test_the_job_names_the_data_it_measures_on(root: Path, client: TestClient) -> None:
    """As submitted (accuracy measured on it: the job says which); null for the
    supernet's own, and no fingerprint before the job's run starts."""
    np.savez(root / "mine.npz", inputs=np.zeros((4, 28, 28), np.uint8), labels=np.arange(4))
    spec = job_spec(device="cpu-all", validation_data="mine.npz", budget={"evaluations": 1})
    posted = client.post("/v1/jobs", json=spec).json()
    assert posted["validation_data"] == "mine.npz" and posted["measured_with"] is None
    assert client.get(posted["url"]).json()["validation_data"] == "mine.npz"
    own = client.post("/v1/jobs", json=job_spec(device="cpu-all")).json()
    assert own["validation_data"] is None


def test_file_names_that_are_not_text_are_refused_escaped_not_a_500(
    root: Path, client: TestClient
) -> None:
    """Security audit 31: a class directory named with a byte that is not UTF-8 made the
    422's text unencodable, a 500; a file name with a newline and a terminal escape forged a
    log line and coloured the job's message."""
    from PIL import Image

    odd = root / "odd"
    (odd / "ok").mkdir(parents=True)
    Image.new("L", (28, 28)).save(odd / "ok" / "0.png")
    os.mkdir(os.fsencode(odd) + b"/\xff")
    answer = client.post("/v1/jobs", json=job_spec(validation_data="odd"))
    assert answer.status_code == 422, answer.text
    assert "odd/\\xff: a class directory's name must be UTF-8 text" in answer.json()["message"]
    os.rmdir(os.fsencode(odd) + b"/\xff")
    (odd / "ok" / "b\n2026 ERROR forged \x1b[31m.png").write_bytes(b"not an image")
    answer = client.post("/v1/jobs", json=job_spec(validation_data="odd"))
    assert answer.status_code == 202, answer.text  # images are decoded by the job
    failed = wait_for(client, answer.json()["id"], until={"failed"})
    said = "odd/ok/b\\x0a2026 ERROR forged \\x1b[31m.png: not a readable image"
    assert said in failed["error"] and said in failed["message"]
    assert not {"\n", "\x1b"} & {*failed["error"], *failed["message"]}
