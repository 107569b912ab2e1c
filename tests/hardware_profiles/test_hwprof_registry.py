"""Loading profile files, listing, looking up and availability."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from core.errors import InvalidInput, UnknownName
from hardware_profiles import (
    BUILTIN_DIR,
    get_profile,
    is_available,
    list_profiles,
    load_profile,
)
from hardware_profiles.configured import named_devices

LIVE = {"cpu-1t", "cpu-all", "cpu-ort", "cpu-ts", "cuda-0"}
# One recorded profile per latency column of the shipped NAS-Bench-201 table.
SHIPPED = LIVE | {path.stem for path in BUILTIN_DIR.glob("nb201-*.yaml")}

RECORDED_YAML = """\
id: {id}
name: Recorded phone
kind: recorded
source: bench-data/latency.csv
recorded_column: pixel1_ms
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_shipped_profile_loads_and_is_named_after_its_file() -> None:
    files = sorted(BUILTIN_DIR.glob("*.yaml"))
    assert {path.stem for path in files} == SHIPPED
    assert len(SHIPPED - LIVE) == 27
    for path in files:
        assert load_profile(path).id == path.stem
    assert set(list_profiles()) == SHIPPED


def test_shipped_profiles_say_what_they_time() -> None:
    profiles = list_profiles()
    assert profiles["cpu-1t"].threads == 1 and profiles["cpu-1t"].runtime == "torch_eager"
    assert profiles["cpu-all"].threads is None
    assert profiles["cpu-ort"].runtime == "onnxruntime" and profiles["cpu-ort"].threads == 1
    assert profiles["cpu-ts"].runtime == "torchscript" and profiles["cpu-ts"].threads == 1
    assert profiles["cuda-0"].runtime == "cuda_graph" and profiles["cuda-0"].batch_size == 1
    assert all(profile.description for profile in profiles.values())
    recorded = [p for pid, p in profiles.items() if pid not in LIVE]
    assert all(p.kind == "recorded" and p.source == "nb201" for p in recorded)


def test_bad_field_names_file_field_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, "cpu-1t.yaml", """\
        id: cpu-1t
        name: CPU
        kind: cpu
        runtime: torch_eager
        protocol:
          warmup: -1
        """)  # fmt: skip
    with pytest.raises(InvalidInput) as exc:
        load_profile(path)
    assert str(exc.value) == (
        "cpu-1t.yaml: protocol.warmup: Input should be greater than or equal to 0"
    )
    assert exc.value.field == "protocol.warmup"


def test_every_bad_field_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "two.yaml", "id: two\nname: x\nkind: cpu\nruntime: nope\nturbo: 1\n")
    with pytest.raises(InvalidInput) as exc:
        load_profile(path)
    message = str(exc.value)
    assert message.startswith("two.yaml: runtime: Input should be 'torch_eager'")
    assert "turbo: Extra inputs are not permitted" in message


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "id: broken\nname: [unclosed\nkind: cpu\n")
    with pytest.raises(InvalidInput, match=r"^broken\.yaml: line \d+, column \d+: invalid YAML"):
        load_profile(path)


@pytest.mark.parametrize("text", ["- a list\n", "just a string\n", ""])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(InvalidInput, match=r"^odd\.yaml: expected a mapping"):
        load_profile(write(tmp_path, "odd.yaml", text))


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"^absent\.yaml: cannot read"):
        load_profile(tmp_path / "absent.yaml")


def test_unknown_device_lists_known_ids() -> None:
    with pytest.raises(UnknownName) as exc:
        get_profile("tpu-v9")
    assert exc.value.field == "device"
    assert exc.value.known == sorted(SHIPPED)
    known = "known: cpu-1t, cpu-all, cpu-ort, cpu-ts, cuda-0"
    assert f"unknown device 'tpu-v9'; {known}" in str(exc.value)


def test_extra_directories_add_profiles(tmp_path: Path) -> None:
    write(tmp_path, "phone.yaml", RECORDED_YAML.format(id="phone"))
    assert set(list_profiles([tmp_path])) == SHIPPED | {"phone"}
    assert get_profile("phone", extra_dirs=[tmp_path]).recorded_column == "pixel1_ms"
    assert "phone" not in list_profiles()


def test_the_builtins_come_as_a_new_dict_each_time(tmp_path: Path) -> None:
    """Without extra directories the built-ins are served from memory: a caller that
    changes its copy changes nobody else's, and they are the ones a scan finds."""
    first = list_profiles()
    first.pop("cpu-1t")
    first["phone"] = first["cpu-all"]
    assert set(list_profiles([])) == SHIPPED == set(list_profiles(()))
    assert list_profiles() == list_profiles([tmp_path])  # an empty extra directory


def test_duplicate_ids_raise(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", RECORDED_YAML.format(id="cpu-1t"))
    with pytest.raises(InvalidInput, match=r"a\.yaml: id: 'cpu-1t' is already defined by .*cpu-1t"):
        list_profiles([tmp_path])


def test_missing_extra_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a directory"):
        list_profiles([tmp_path / "nowhere"])


def test_availability(tmp_path: Path) -> None:
    profiles = list_profiles()
    assert is_available(profiles["cpu-1t"]) and is_available(profiles["cpu-all"])
    assert is_available(profiles["cpu-ort"])  # onnxruntime is a dependency
    assert is_available(profiles["cuda-0"]) == torch.cuda.is_available()
    write(tmp_path, "phone.yaml", RECORDED_YAML.format(id="phone"))
    assert not is_available(get_profile("phone", extra_dirs=[tmp_path]))


def test_a_device_list_takes_ids_and_patterns_and_refuses_what_names_nothing() -> None:
    recorded = named_devices("nb201-*", field="--devices")
    assert len(recorded) == 27 and all(pid.startswith("nb201-") for pid in recorded)
    assert named_devices(" cpu-1t , cpu-*,cpu-1t", field="f")[:1] == ["cpu-1t"]
    assert sorted(named_devices("cpu-1t,cpu-*", field="f")) == sorted(
        {"cpu-1t", *named_devices("cpu-*", field="f")}
    )
    assert named_devices(" , ", field="f") == []
    with pytest.raises(
        InvalidInput, match="device pattern 'gpu-\\*' matches no profile; known: cpu-1t"
    ) as raised:
        named_devices("cpu-1t,gpu-*", field="--devices")
    assert raised.value.field == "--devices"
    with pytest.raises(UnknownName, match="unknown device 'gpu-9'"):
        named_devices("gpu-9", field="--devices")
