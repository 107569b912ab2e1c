"""An export is refused once the supernet measures otherwise than the job did."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from core import loaded_code
from core.settings import get_settings
from models import registry
from models.base import code_version, earlier_code_versions
from models.text_transformer import TextTransformerSupernet
from store import job_keys
from store import jobs as q
from store.db import transaction
from tests.conftest import embedded_settings

from .helpers import job_spec, wait_for

NAME = "test-export-no-inputs"


class NoQualityInputs(TextTransformerSupernet):
    """A plugin with a weights file that leaves ``quality_inputs`` out (it is optional)."""

    name = NAME

    def quality_inputs(self) -> Sequence[Any]:
        return ()


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "weights.pt"
    torch.save(NoQualityInputs().module.state_dict(), path)
    monkeypatch.setitem(registry._FACTORIES, NAME, NoQualityInputs)
    monkeypatch.setenv("HWNAS_SUPERNET_CHECKPOINTS", f"{NAME}={path}")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()
    registry._INSTANCES.pop(NAME, None)


def test_a_plugin_without_quality_inputs_is_not_exported_after_its_weights_changed(
    tmp_path: Path, weights: Path
) -> None:
    """Audit 29: the file was built from the new weights and carried the old job's
    metrics on its card (accuracy 0.996 on the card, 0.23 measured), answered 200."""
    spec = job_spec(supernet=NAME, strategy="random", budget={"evaluations": 2}, constraints={})
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "succeeded" and job["measured_with"] is not None
        measured = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
        first, second = (e["subnet_id"] for e in measured)
        url = f"/v1/jobs/{job['id']}/subnets/{{}}/export"
        assert client.get(url.format(first)).status_code == 200
        state = torch.load(weights, weights_only=True)
        torch.save({k: v + 0.5 if v.is_floating_point() else v for k, v in state.items()}, weights)
        later = time.time_ns() + 2_000_000_000
        os.utime(weights, ns=(later, later))
        refused = client.get(url.format(second))
        assert refused.status_code == 409, refused.text
        assert "measured with other weights or validation data" in refused.json()["message"]
        assert client.get(url.format(first)).status_code == 200  # exported before: served


def test_a_file_exported_before_is_served_while_the_weights_file_is_away(
    tmp_path: Path, weights: Path
) -> None:
    """The supernet was built before the file was looked for: with its weights file moved
    away, a download of a file exported before was 422 (audit 29)."""
    spec = job_spec(supernet=NAME, strategy="random", budget={"evaluations": 2}, constraints={})
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        measured = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
        first, second = (e["subnet_id"] for e in measured)
        url = f"/v1/jobs/{job['id']}/subnets/{{}}/export"
        exported = client.get(url.format(first))
        assert exported.status_code == 200
        weights.rename(weights.with_name("away.pt"))
        registry._INSTANCES.pop(NAME, None)  # as in a server started since
        again = client.get(url.format(first))
        assert again.status_code == 200 and again.content == exported.content
        assert client.get(url.format(second)).status_code == 422  # a new file needs them


def test_a_job_is_not_exported_after_its_plugin_s_code_changed(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code is a fingerprint of its own (``measured_code``), and its change is said as
    such, not as other weights or data (review 29)."""
    spec = job_spec(supernet=NAME, strategy="random", budget={"evaluations": 1}, constraints={})
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        [measured] = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
        edited = type("NoQualityInputs", (NoQualityInputs,), {"version": "2"})  # code edited,
        monkeypatch.setitem(registry._FACTORIES, NAME, edited)  # in a server started since
        registry._INSTANCES.pop(NAME, None)
        refused = client.get(f"/v1/jobs/{job['id']}/subnets/{measured['subnet_id']}/export")
        later = wait_for(client, client.post("/v1/jobs", json=dict(spec, seed=1)).json()["id"])
    assert refused.status_code == 409, refused.text
    assert f"measured with other code of {NAME} than it has now" in refused.json()["message"]
    assert later["progress"]["evaluations_reused"] == 0
    assert (  # plugin audit 32: nothing said why nothing was reused
        f"warm start: 1 measurement of jobs that measured with other code of {NAME} not "
        "reused (an edit of any file of its package, or another version: docs/plugins.md)"
    ) in later["message"]


#: The plugin's layer, in a module of its own: what its sub-networks run.
_LAYERS = """import torch


class Scale(torch.nn.Module):
    def forward(self, x):
        return x * {scale}
"""


def _package_plugin(folder: Path, monkeypatch: pytest.MonkeyPatch) -> type[Any]:
    """A plugin package whose layers live in a module of their own, imported and
    registered (as ``models.plugins`` registers one: its code read as loaded)."""
    package = folder / "exp_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text(_LAYERS.format(scale=1))
    (package / "net.py").write_text(
        "import torch\n"
        "from models.text_transformer import TextTransformerSupernet\n"
        "from exp_pkg.layers import Scale\n\n\n"
        "class Net(TextTransformerSupernet):\n"
        '    name = "test-export-pkg"\n\n'
        "    def extract(self, arch):\n"
        "        return torch.nn.Sequential(super().extract(arch), Scale())\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(loaded_code, "_AS_LOADED", {})
    cls: type[Any] = importlib.import_module("exp_pkg.net").Net
    for name in ("exp_pkg", "exp_pkg.net", "exp_pkg.layers"):
        monkeypatch.setitem(sys.modules, name, sys.modules[name])  # forgotten after the test
    monkeypatch.setitem(registry._FACTORIES, cls.name, cls)
    code_version(cls)  # at registration
    return cls


def test_a_job_stored_before_its_plugin_s_modules_were_hashed_is_exported_till_one_is_edited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session 30 hashes a plugin's other modules too: a job that recorded the code as
    session 29 hashed it is still exported. An edit of a module on disk while the service
    runs: the TorchScript child, which imports it afresh, would trace the new code's network
    (review 29c); it refuses."""
    net = _package_plugin(tmp_path / "plugin", monkeypatch)
    spec = job_spec(supernet=net.name, strategy="random", budget={"evaluations": 1}, constraints={})
    with TestClient(
        create_app(embedded_settings(tmp_path, embedded_devices="cpu-1t,cpu-ts"))
    ) as client:
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "succeeded", job
        [measured] = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
        factory = client.app.state.session_factory  # type: ignore[attr-defined]
        with transaction(factory) as session:
            row = q.get_job(session, job["id"])
            assert row.spec[job_keys.MEASURED_CODE] == code_version(net)
            [earlier] = earlier_code_versions(net)
            row.spec = {**row.spec, job_keys.MEASURED_CODE: earlier}  # as session 29 recorded it
        url = f"/v1/jobs/{job['id']}/subnets/{measured['subnet_id']}/export?format={{}}"
        assert client.get(url.format("onnx")).status_code == 200
        layers = tmp_path / "plugin" / "exp_pkg" / "layers.py"
        layers.write_text(_LAYERS.format(scale=2))
        refused = client.get(url.format("torchscript"))
        # A job timed in a child (cpu-ts) fails at once, its first anchor too: skipped as a
        # sub-network's fault, the next measurement failed it (review 30 L2)
        timed = {**spec, "device": "cpu-ts", "budget": {"evaluations": 10}, "warm_start": False}
        failed = wait_for(client, client.post("/v1/jobs", json=timed).json()["id"])
        with transaction(factory) as session:
            failures = q.get_job(session, failed["id"]).spec.get(job_keys.FAILED, [])
    assert refused.status_code == 409, refused.text
    assert "layers.py changed on disk since the service loaded it" in refused.json()["message"]
    assert failed["status"] == "failed" and failed["progress"]["evaluations_done"] == 0, failed
    assert "layers.py changed on disk since the service loaded it" in failed["error"]
    assert failures == [] and "skipped" not in (failed["message"] or "")


def test_a_job_that_recorded_an_earlier_form_of_the_code_is_said_so_not_edited(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrade audit 32 L2: jobs that recorded the plugin's code as an earlier hwnas told
    it were said to be of code edited since (nothing was); they are exported, not reused."""
    spec = job_spec(supernet=NAME, strategy="random", budget={"evaluations": 1}, constraints={})
    with TestClient(create_app(embedded_settings(tmp_path))) as client:
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        [measured] = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
        told_then = NoQualityInputs().code_fingerprint()

        class TellsItNow(NoQualityInputs):  # the same code, told otherwise by this hwnas
            def code_fingerprint(self) -> str | None:
                return "source told-now"

            def code_fingerprints(self) -> tuple[str | None, ...]:
                return ("source told-now", told_then)

        monkeypatch.setitem(registry._FACTORIES, NAME, TellsItNow)
        registry._INSTANCES.pop(NAME, None)
        exported = client.get(f"/v1/jobs/{job['id']}/subnets/{measured['subnet_id']}/export")
        later = wait_for(client, client.post("/v1/jobs", json=dict(spec, seed=1)).json()["id"])
    assert exported.status_code == 200, exported.text
    assert later["progress"]["evaluations_reused"] == 0
    assert (
        f"warm start: 1 measurement of jobs that recorded the code of {NAME} as an earlier "
        "hwnas told it not reused (they are exported and resumed: docs/plugins.md version)"
    ) in later["message"]
    assert "other code" not in later["message"]
