"""What a downloaded file's card says of the job's constraints."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.export_cache import EXPORTS
from tests.conftest import embedded_settings

from .helpers import job_spec, wait_for


def _card(client: TestClient, job_id: str, subnet_id: str) -> dict:
    answer = client.get(f"/v1/jobs/{job_id}/subnets/{subnet_id}/export", params={"format": "onnx"})
    assert answer.status_code == 200, answer.text
    props = onnx.load_from_string(answer.content).metadata_props
    return json.loads(next(p.value for p in props if p.key == "hwnas.card"))


def test_the_card_says_the_bounds_and_whether_the_sub_network_kept_them(tmp_path: Path) -> None:
    """Vision audit L9: an infeasible sub-network's file did not say it broke the job's
    bounds (a deployer reading the card alone took it for a front point). Upgrade audit 32:
    the bounds are those of the job downloaded from, not of the job a warm start copied the
    measurement from (a front point of a job without bounds was called infeasible)."""
    bounds = {"accuracy": {"min": 0.0}, "params": {"max": 1.0}}  # no sub-network has <= 1
    spec = job_spec(
        supernet="text-transformer-synth",
        objectives={"accuracy": "max", "latency_ms": "min"},
        constraints=bounds,
        strategy="random",
        budget={"evaluations": 2},
    )
    settings = embedded_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        job = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "succeeded", job
        measured = client.get(f"/v1/jobs/{job['id']}/evaluations").json()["data"]
        assert measured and not any(e["feasible"] for e in measured)
        subnet = measured[0]["subnet_id"]
        card = _card(client, job["id"], subnet)
        assert card["constraints"] == job["constraints"] and card["feasible"] is False
        assert list(card["objectives"].items()) == [("accuracy", "max"), ("latency_ms", "min")]
        assert card["constraints"]["params"] == {"min": None, "max": 1.0}  # as the job says

        loose = wait_for(
            client, client.post("/v1/jobs", json=dict(spec, constraints={}, seed=1)).json()["id"]
        )
        kept = {e["subnet_id"]: e for e in client.get(f"/v1/jobs/{loose['id']}/evaluations")
                .json()["data"]}  # fmt: skip
        assert kept[subnet]["details"]["reused_from"] == job["id"] and kept[subnet]["feasible"]
        copy = _card(client, loose["id"], subnet)
        assert copy["constraints"] == {} and copy["feasible"] is True
        assert copy["job_id"] == job["id"]  # measured there, whatever bounds it had

        strict = wait_for(client, client.post("/v1/jobs", json=dict(spec, seed=2)).json()["id"])
        assert _card(client, strict["id"], subnet) == card  # its bounds: that job's file
        reordered = dict(spec, seed=3, objectives={"latency_ms": "min", "accuracy": "max"})
        other_aim = wait_for(client, client.post("/v1/jobs", json=reordered).json()["id"])
        aimed = _card(client, other_aim["id"], subnet)  # the objectives in its order
        assert list(aimed["objectives"]) == ["latency_ms", "accuracy"]
        assert aimed["job_id"] == job["id"] and aimed["constraints"] == card["constraints"]
        exports = Path(settings.data_dir) / EXPORTS
        assert [p.name for p in (exports / job["id"]).glob("*.onnx")] == [f"{subnet}.onnx"]
        [own] = (exports / loose["id"]).glob("*.onnx")  # the copy's, in its job's folder
        assert own.name.startswith(f"{subnet}.c")
        assert client.delete(f"/v1/jobs/{loose['id']}").status_code == 204
        assert not own.exists()  # deleted with its job (review 32c)


def test_a_copy_s_file_is_not_served_when_its_measuring_job_goes_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 32d: a copy's file under other bounds (in its own job's folder) was served
    with a card naming the job deleted meanwhile; 503 "ask again", as for a shared file."""
    import api.routes.jobs as routes

    settings = embedded_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        first, copy, subnet = _measured_then_copied_under_other_bounds(client)
        real = routes.export_subnet

        def deleting_the_measurer(*args: object, **kwargs: object) -> None:
            assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204
            real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(routes, "export_subnet", deleting_the_measurer)
        answer = client.get(f"/v1/jobs/{copy['id']}/subnets/{subnet}/export")
    assert answer.status_code == 503, answer.text
    assert "which measured this sub-network, was deleted while its file" in answer.text
    assert not list((Path(settings.data_dir) / EXPORTS / copy["id"]).glob("*.onnx"))


def test_a_copy_s_file_under_other_bounds_goes_when_its_measuring_job_does(tmp_path: Path) -> None:
    """Review 32d: after the measuring job was deleted, the copy's file under other bounds
    stayed in its job's folder, unused (the job's own file serves it then), until that job
    was deleted."""
    settings = embedded_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        first, copy, subnet = _measured_then_copied_under_other_bounds(client)
        assert _card(client, copy["id"], subnet)["job_id"] == first["id"]
        folder = Path(settings.data_dir) / EXPORTS / copy["id"]
        [variant] = folder.glob("*.onnx")
        assert variant.name.startswith(f"{subnet}.c")
        (folder / f"{subnet}.c0123456789ab.pt").write_bytes(b"another format's")
        (folder / f"{subnet}x.c0123456789ab.onnx").write_bytes(b"another sub-network's")
        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204
        card = _card(client, copy["id"], subnet)
    assert card["job_id"] == copy["id"] and card["feasible"] is True
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{subnet}.onnx", f"{subnet}.json", f"{subnet}x.c0123456789ab.onnx"]
    )  # the variants of every format went, and their card; another sub-network's stayed


def _measured_then_copied_under_other_bounds(client: TestClient) -> tuple[dict, dict, str]:
    """A job measuring one sub-network under a bound it breaks, then a job without bounds
    that a warm start copies it into: both jobs, and the sub-network."""
    spec = job_spec(
        supernet="text-transformer-synth",
        objectives={"accuracy": "max", "latency_ms": "min"},
        constraints={"params": {"max": 1.0}},
        strategy="random",
        budget={"evaluations": 1},
    )
    first = wait_for(client, client.post("/v1/jobs", json=spec).json()["id"])
    [subnet] = [e["subnet_id"] for e in client.get(f"/v1/jobs/{first['id']}/evaluations")
                .json()["data"]]  # fmt: skip
    loose = dict(spec, constraints={}, seed=1)
    return first, wait_for(client, client.post("/v1/jobs", json=loose).json()["id"]), subnet
