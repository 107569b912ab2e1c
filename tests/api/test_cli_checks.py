"""What `hwnas serve` and `hwnas worker` refuse before starting anything: one line on
stderr and exit code 2, not a traceback per process or a worker that fails every job."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from api.cli import main, parse_constraints
from core.errors import HwnasError, InvalidInput
from core.settings import get_settings
from hardware_profiles.configured import device_profile, servable


@pytest.fixture(autouse=True)
def _logging_kept() -> Iterator[None]:
    """``serve`` configures logging in this process (api.log_config): put it back after, so
    later tests' log captures see what they did before."""
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.Logger.manager.loggerDict)]
    kept = [(lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers]
    yield
    for logger, level, handlers, propagate, disabled in kept:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate, logger.disabled = propagate, disabled


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Settings read afresh from the environment this test sets (a database of its own)."""
    monkeypatch.setenv("HWNAS_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    monkeypatch.setenv("HWNAS_BROKER_URL", "redis://127.0.0.1:6379/15")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def _set(env: pytest.MonkeyPatch, **values: str) -> None:
    """These ``HWNAS_*`` variables for what follows, the settings read afresh."""
    for name, value in values.items():
        env.setenv(name, value)
    get_settings.cache_clear()


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_a_worker_needs_a_broker(env: pytest.MonkeyPatch, capsys) -> None:
    _set(env, HWNAS_BROKER_URL="")
    assert "set HWNAS_BROKER_URL" in _refused(["worker", "--devices", "cpu-1t"], capsys)


def test_a_worker_refuses_devices_it_could_not_serve(env: pytest.MonkeyPatch, capsys) -> None:
    assert "unknown device 'cpu-lt'" in _refused(["worker", "--devices", "cpu-1t,cpu-lt"], capsys)
    assert "device pattern 'nb301-*' matches no profile" in _refused(
        ["worker", "--devices", "nb301-*"], capsys
    )
    assert "names no device" in _refused(["worker", "--devices", " , "], capsys)
    if not servable(device_profile("cuda-0")):  # the machines tests run on have no GPU
        err = _refused(["worker", "--devices", "cpu-1t,cuda-0"], capsys)
        assert "this machine cannot run cuda-0" in err


def test_a_worker_refuses_an_unmigrated_database_and_names_it(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    err = _refused(["worker", "--devices", "nb201-*"], capsys)  # the pattern is fine
    assert "fresh.db is at revision (none)" in err and "hwnas db-upgrade" in err


def test_serve_refuses_an_unmigrated_database_before_starting_processes(
    env: pytest.MonkeyPatch, capsys
) -> None:
    """Several uvicorn processes that fail to start left their supervisor exiting 0."""
    _set(env, HWNAS_AUTO_MIGRATE="false", HWNAS_API_PROCESSES="2")
    err = _refused(["serve", "--port", "1"], capsys)
    assert "fresh.db is at revision (none)" in err and "hwnas db-upgrade" in err


@pytest.mark.parametrize("bound", ["latency_ms<=.", "latency_ms<=1e999", "latency_ms=2"])
def test_a_bad_constraint_is_an_error_with_exit_code_2(bound: str, capsys) -> None:
    err = _refused(["submit", "--constraint", bound, "--url", "http://127.0.0.1:1"], capsys)
    assert f"bad constraint {bound!r}" in err and "finite number" in err


def test_a_bound_given_twice_is_an_error_not_the_last_one(capsys) -> None:
    args = ["submit", "--constraint", "latency_ms<=1", "--constraint", "latency_ms<=3"]
    err = _refused([*args, "--url", "http://127.0.0.1:1"], capsys)
    assert "latency_ms<= is given twice (1 and 3)" in err
    both = parse_constraints(["latency_ms<=3", "latency_ms>=1"])
    assert both == {"latency_ms": {"max": 3.0, "min": 1.0}}


def test_an_objective_given_twice_is_an_error_not_the_last_one(capsys) -> None:
    args = ["submit", "--objective", "accuracy=max", "--objective", "accuracy=min"]
    err = _refused([*args, "--url", "http://127.0.0.1:1"], capsys)
    assert "accuracy is given twice (accuracy=max and accuracy=min)" in err


def test_an_unreachable_service_is_an_error_not_a_traceback(capsys) -> None:
    err = _refused(["pareto", "some-job", "--url", "http://127.0.0.1:1"], capsys)
    assert err.startswith("hwnas: GET /v1/jobs/some-job/pareto: cannot reach hwnas at")
    assert "Traceback" not in err


def test_a_broker_url_without_a_scheme_is_refused_by_name(env: pytest.MonkeyPatch, capsys) -> None:
    _set(env, HWNAS_BROKER_URL="redis//127.0.0.1:6379/9")
    err = _refused(["worker", "--devices", "cpu-1t"], capsys)
    assert err.startswith("hwnas: bad settings: HWNAS_BROKER_URL: must be a URL")


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("HWNAS_API_PROCESSES", "2", "HWNAS_API_PROCESSES > 1 needs the distributed mode"),
        (  # the variable named too (operator probe, session 22)
            "HWNAS_EMBEDDED_DEVICES",
            "cpu-1t,cpu-lt",
            "hwnas: HWNAS_EMBEDDED_DEVICES: unknown device 'cpu-lt'; known: cpu-1t",
        ),
    ],
)
def test_serve_refuses_an_embedded_server_it_could_not_run(
    env: pytest.MonkeyPatch, capsys, setting: str, value: str, says: str
) -> None:
    _set(env, HWNAS_BROKER_URL="", **{setting: value})
    assert says in _refused(["serve", "--port", "1"], capsys)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("HWNAS_API_THREADS", "0"), ("HWNAS_MAX_BUDGET", "0"), ("HWNAS_HEARTBEAT_S", "-1"),
     ("HWNAS_STALE_AFTER_S", "-1"), ("HWNAS_WARM_START_MAX", "-5")],
)  # fmt: skip
def test_a_number_out_of_its_range_stops_the_start(
    env: pytest.MonkeyPatch, capsys, setting: str, value: str
) -> None:
    """No request handler threads hung every request (and the shutdown); a budget limit of
    0 refused every job."""
    _set(env, **{setting: value})
    err = _refused(["serve", "--port", "1"], capsys)
    assert err.startswith(f"hwnas: bad settings: {setting}: Input should be greater than")


@pytest.mark.parametrize(
    ("setting", "value"), [("HWNAS_HEARTBEAT_S", "nan"), ("HWNAS_MAX_DATA_FILE_MB", "inf")]
)
def test_a_setting_that_is_not_a_finite_number_stops_the_start(
    env: pytest.MonkeyPatch, capsys, setting: str, value: str
) -> None:
    """ "nan" was refused as "not greater than 0", "inf" accepted (operator probe, session 22)."""
    _set(env, **{setting: value})
    err = _refused(["serve", "--port", "1"], capsys)
    assert err.startswith(f"hwnas: bad settings: {setting}: Input should be a finite number")


def test_stale_after_below_two_heartbeats_stops_the_start(env: pytest.MonkeyPatch, capsys) -> None:
    """A live worker's job read "its worker stopped heartbeating" between beats, and a
    cancel ended it as dead (operator probe, session 22)."""
    _set(env, HWNAS_HEARTBEAT_S="30", HWNAS_STALE_AFTER_S="5")
    err = _refused(["serve", "--port", "1"], capsys)
    assert "HWNAS_STALE_AFTER_S (5) must be at least twice HWNAS_HEARTBEAT_S (30)" in err
    _set(env, HWNAS_STALE_AFTER_S="60")
    assert get_settings().stale_after_s == 60


def test_a_data_dir_that_cannot_be_written_stops_the_start(
    env: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    """Every export was a 500 (NotADirectoryError) instead (operator probe, session 22)."""
    (tmp_path / "a-file").write_text("")
    _set(env, HWNAS_DATA_DIR=str(tmp_path / "a-file" / "var"))
    err = _refused(["serve", "--port", "1"], capsys)
    assert "HWNAS_DATA_DIR" in err and "is not a writable directory: Not a directory" in err


def test_a_port_in_use_exits_2_before_the_app_starts(env: pytest.MonkeyPatch, capsys) -> None:
    """uvicorn's start-up failure (3) leaked out: 3 is "nothing feasible"; and uvicorn binds
    after the app's start-up, which had resumed the queued jobs by then (operator probe)."""
    _set(env, HWNAS_BROKER_URL="")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _refused(["serve", "--port", str(port)], capsys)
    assert f"cannot serve on 127.0.0.1 port {port}: Address already in use" in err
    assert "uvicorn" not in err  # refused before uvicorn started the app
    with pytest.raises(SystemExit) as caught:  # argparse's usage error
        main(["serve", "--port", "70000"])
    assert caught.value.code == 2 and "not a port number" in capsys.readouterr().err


@pytest.mark.parametrize("processes", ["1", "2"])
def test_serve_serves_on_the_socket_its_check_bound(
    env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch, processes: str
) -> None:
    """The port was probed, let go, and bound again by uvicorn after the app's start-up: two
    servers started together could both pass the probe (review 23b, M5). Now the socket the
    check bound, listening, is the one uvicorn serves on, in one process or several."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    served: list[socket.socket] = []

    def serve(_self: object, sockets: list[socket.socket] | None = None) -> None:
        assert sockets is not None and len(sockets) == 1
        served.extend(sockets)
        assert sockets[0].getsockname() == ("127.0.0.1", port)
        with socket.socket() as second, pytest.raises(OSError):  # taken until served on
            second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            second.bind(("127.0.0.1", port))
        if isinstance(_self, uvicorn.Server):
            _self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", serve)
    monkeypatch.setattr(Multiprocess, "run", lambda self: serve(self, self.sockets))
    if processes == "1":
        _set(env, HWNAS_BROKER_URL="")
    _set(env, HWNAS_API_PROCESSES=processes)
    assert main(["serve", "--port", str(port)]) == 0
    assert len(served) == 1 and served[0].fileno() == -1  # closed once served


def test_serve_refuses_a_bad_api_key_before_starting_processes(
    env: pytest.MonkeyPatch, capsys
) -> None:
    """Each of several uvicorn processes would otherwise fail its start-up on the key."""
    _set(env, HWNAS_API_KEYS="a-fine-key-of-enough-length-123,short", HWNAS_API_PROCESSES="2")
    err = _refused(["serve", "--port", "1"], capsys)
    assert err.startswith("hwnas: ") and "HWNAS_API_KEYS" in err and "Traceback" not in err


def test_serve_refuses_a_plugin_that_does_not_load_in_one_line(
    env: pytest.MonkeyPatch, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It printed uvicorn's traceback of the app's start-up (67 lines), the reason last."""
    from models import registry

    monkeypatch.setattr(registry, "_plugins_loaded", False)
    _set(env, HWNAS_SUPERNET_PLUGINS="no_such_module_here.nets:Net")
    err = _refused(["serve", "--port", "1"], capsys)
    assert err.startswith("hwnas: plugin 'no_such_module_here.nets:Net': cannot import")
    assert "Traceback" not in err and err.count("\n") == 1


def test_db_upgrade_makes_the_folder_of_a_new_sqlite_file(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    """The default database is ./var/hwnas.db: a fresh directory has no ./var."""
    path = tmp_path / "not" / "yet" / "hwnas.db"
    _set(env, HWNAS_DATABASE_URL=f"sqlite:///{path}")
    assert main(["db-upgrade"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("database migrated from schema revision (none) to ") and path.is_file()
    assert main(["db-upgrade"]) == 0  # said what it did: "database at head" either way before
    head = said.split()[-1]
    assert (
        capsys.readouterr().out == f"database at head: schema revision {head}, nothing to migrate\n"
    )
    # keys this version refuses: said before migrating, not at serve's start after it
    other = tmp_path / "other.db"
    _set(env, HWNAS_DATABASE_URL=f"sqlite:///{other}", HWNAS_API_KEYS="team-a-key-0123456789,")
    assert main(["db-upgrade"]) == 2 and not other.exists()
    assert "HWNAS_API_KEYS: entry 2 of 2 is empty" in capsys.readouterr().err


def test_two_db_upgrades_at_once_say_that_one_migrated(tmp_path: Path) -> None:
    """Both read the revision before waiting for the other's migration and both said they
    migrated from none (audit 30): it is read under the migration lock now."""
    database = tmp_path / "both.db"
    env = {**os.environ, "HWNAS_DATABASE_URL": f"sqlite:///{database}"}
    command = [sys.executable, "-m", "api.cli", "db-upgrade"]
    with open(f"{database}.migrate-lock", "w") as lock:  # held as another migration holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
        ]
        time.sleep(6)  # both started, read what they read before the lock, and wait on it
    said = sorted(run.communicate(timeout=120)[0] for run in runs)
    assert [run.returncode for run in runs] == [0, 0]
    assert said[0].startswith("database at head: schema revision ")
    assert said[1].startswith("database migrated from schema revision (none) to ")


@pytest.mark.parametrize("command", [["db-upgrade"], ["serve", "--port", "1"]])
def test_an_unreachable_database_is_one_line_that_hides_the_password(
    env: pytest.MonkeyPatch, capsys, command: list[str]
) -> None:
    _set(env, HWNAS_DATABASE_URL="postgresql+psycopg://hwnas:s3cret@127.0.0.1:1/hwnas")
    err = _refused(command, capsys)
    assert err.startswith("hwnas: cannot migrate the database postgresql+psycopg://hwnas:***@")
    assert "s3cret" not in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("pg:/hwnas:s3cret@host/db", "of HWNAS_DATABASE_URL (not a database URL)"),
        ("postgresql+asyncpg://hwnas:s3cret@127.0.0.1:1/x", "No module named 'asyncpg'"),
        ("sqlite:////dev/null/hwnas.db", "File exists"),  # /dev/null is no folder
    ],
)
def test_a_database_it_cannot_migrate_is_one_line(
    env: pytest.MonkeyPatch, capsys, url: str, says: str
) -> None:
    _set(env, HWNAS_DATABASE_URL=url)
    err = _refused(["db-upgrade"], capsys)
    assert err.startswith("hwnas: cannot migrate the database ") and says in err
    assert "s3cret" not in err and err.count("\n") == 1


def test_a_revision_this_code_does_not_know_is_one_line(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    """A database migrated by newer code (then this code started against it): said so in a
    line, by every command that would serve it or migrate it."""
    assert main(["db-upgrade"]) == 0
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff0000'"))
    engine.dispose()
    newer = "fresh.db is at revision ffff0000, newer than this version's"
    for command, auto in (("db-upgrade", "true"), ("serve", "true"), ("serve", "false")):
        _set(env, HWNAS_AUTO_MIGRATE=auto)
        err = _refused([command, "--port", "1"] if command == "serve" else [command], capsys)
        [said] = [line for line in err.splitlines() if line.startswith("hwnas:")]  # alembic's
        assert newer in said and "Traceback" not in err  # INFO lines aside
        assert "restore the backup taken before the upgrade" in said  # upgrade audit 31: it
        assert "db-upgrade" not in said  # advised db-upgrade, which failed in turn
    _set(env, HWNAS_BROKER_URL="")  # hwnas run: before it times the latency limit, one line
    err = _refused(["run"], capsys)  # (it was two tracebacks and exit 1, after timing)
    [said] = [line for line in err.splitlines() if line.startswith("hwnas:")]
    assert newer in said and "Traceback" not in err and "latency limit" not in err


def test_an_unreachable_database_without_migrating_is_one_line_too(
    env: pytest.MonkeyPatch, capsys
) -> None:
    _set(
        env,
        HWNAS_DATABASE_URL="postgresql+psycopg://hwnas:s3cret@127.0.0.1:1/hwnas",
        HWNAS_AUTO_MIGRATE="false",
    )
    err = _refused(["serve", "--port", "1"], capsys)
    assert err.startswith("hwnas: cannot reach the database postgresql+psycopg://hwnas:***@")
    assert "s3cret" not in err and err.count("\n") == 1


@pytest.mark.parametrize("seconds", ["-1", "nan", "soon"])
def test_a_timeout_that_is_no_duration_is_an_argument_error(seconds: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["wait", "some-job", "--timeout", seconds, "--url", "http://127.0.0.1:1"])
    assert exited.value.code == 2 and "is not a number of seconds" in capsys.readouterr().err


def test_ctrl_c_is_one_line_saying_the_job_goes_on(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import api.cli

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api.cli.HwnasClient, "wait", interrupted)
    assert main(["wait", "j1", "--url", "http://127.0.0.1:1"]) == 130
    assert (
        capsys.readouterr().err
        == "\nhwnas: interrupted; job j1 goes on (hwnas cancel j1 stops it)\n"
    )


def test_download_into_a_folder_named_with_a_slash_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`-o models/` for a folder not there yet wrote a file named "models"."""
    import api.cli

    asked: list[Path] = []

    def download(self: object, job: str, subnet: str, fmt: str, path: Path) -> Path:
        asked.append(path)
        (path / "net_s.onnx").write_bytes(b"x")
        return path / "net_s.onnx"

    monkeypatch.setattr(api.cli.HwnasClient, "download", download)
    folder = tmp_path / "models"
    assert main(["download", "j1", "--subnet", "s", "-o", f"{folder}/", "--url", "http://x:1"]) == 0
    assert folder.is_dir() and asked == [folder]
    assert capsys.readouterr().out == f"{folder / 'net_s.onnx'}\n"


@pytest.mark.parametrize(
    ("output", "given", "asked"),
    [
        ("model.pt", None, "torchscript"),
        ("model.ZIP", None, "state_dict"),
        ("model.onnx", None, "onnx"),
        ("model.bin", None, "onnx"),
        ("-", None, "onnx"),
        ("models/", None, "onnx"),
        ("model.bin", "torchscript", "torchscript"),
        ("model.pt", "torchscript", "torchscript"),
        ("-", "state_dict", "state_dict"),
    ],
)
def test_download_takes_its_format_from_the_file_name_unless_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, given: str | None, asked: str
) -> None:
    import api.cli

    formats: list[str] = []

    def download(self: object, job: str, subnet: str, fmt: str, path: object) -> None:
        formats.append(fmt)

    monkeypatch.setattr(api.cli.HwnasClient, "download", download)
    monkeypatch.chdir(tmp_path)
    chosen = [] if given is None else ["--format", given]
    argv = ["download", "j1", "--subnet", "s", "-o", output, *chosen, "--url", "http://x:1"]
    assert main(argv) == 0
    assert formats == [asked]


def test_a_file_name_whose_suffix_names_no_format_is_said_to_get_onnx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import api.cli

    monkeypatch.setattr(api.cli.HwnasClient, "download", lambda *args: None)
    monkeypatch.chdir(tmp_path)
    assert main(["download", "j1", "--subnet", "s", "-o", "model.pth", "--url", "http://x:1"]) == 0
    assert capsys.readouterr().err == (
        "hwnas: .pth names no format: downloading ONNX (--format torchscript or state_dict "
        "for the others)\n"
    )
    (tmp_path / "exports.d").mkdir()  # folders, whatever their names: nothing to say
    for folder in ("out.v2/", "exports.d"):
        assert main(["download", "j1", "--subnet", "s", "-o", folder, "--url", "http://x:1"]) == 0
        assert capsys.readouterr().err == ""


def test_a_format_the_file_name_contradicts_is_refused_before_any_request(capsys) -> None:
    """``-o model.onnx --format torchscript`` wrote a TorchScript file named .onnx (audit 28)."""
    argv = ["download", "j1", "--subnet", "s", "-o", "model.onnx", "--format", "torchscript"]
    assert main([*argv, "--url", "http://127.0.0.1:1"]) == 2  # no service there: not asked
    err = capsys.readouterr().err
    assert (
        "-o model.onnx: a .onnx file is onnx, but --format is torchscript: name the file .pt, "
        "or leave --format out to download onnx" in err
    )


@pytest.mark.parametrize("command", [["serve"], ["worker", "--devices", "cpu-1t"], ["run"]])
def test_a_weights_setting_that_names_no_supernet_is_refused(
    env: pytest.MonkeyPatch, capsys, command: list[str]
) -> None:
    """A typo (``fmnist_ofa_cnn=`` for ``fmnist-ofa-cnn=``) was ignored: the supernet was
    searched with its built-in or random weights, and nothing said so (plugin probe)."""
    if command == ["run"]:  # embedded only: a broker is refused first
        _set(env, HWNAS_BROKER_URL="")
    _set(env, HWNAS_SUPERNET_CHECKPOINTS="fmnist_ofa_cnn=/ckpt/trained.pt")
    err = _refused(command, capsys)
    assert (
        "HWNAS_SUPERNET_CHECKPOINTS names supernet 'fmnist_ofa_cnn', which is not registered" in err
    )
    assert "fmnist-ofa-cnn" in err  # the known names
    _set(env, HWNAS_SUPERNET_CHECKPOINTS="/ckpt/trained.pt")
    assert "'/ckpt/trained.pt' is not <supernet>=<weights file>" in _refused(command, capsys)
    # A file that is not there: the start went on with the supernet broken (operator probe).
    _set(env, HWNAS_SUPERNET_CHECKPOINTS="fmnist-ofa-cnn=/ckpt/missing.pt")
    assert (
        "the weights file of 'fmnist-ofa-cnn', '/ckpt/missing.pt', is not a file that exists"
        in (_refused(command, capsys))
    )


def test_serving_beyond_this_machine_without_keys_is_warned_of(
    env: pytest.MonkeyPatch, capsys
) -> None:
    import uvicorn

    import api.cli

    served: list[str] = []

    def run(self: uvicorn.Server, sockets: list[socket.socket]) -> None:
        served.append(self.config.host)
        self.started = True

    env.setattr(api.cli, "_check_before_serving", lambda *args: socket.socket())
    env.setattr(uvicorn.Server, "run", run)
    _set(env, HWNAS_BROKER_URL="", HWNAS_API_KEYS="")
    for host, warned in [("127.0.0.1", False), ("localhost", False), ("::1", False),
                         ("0.0.0.0", True), ("10.1.2.3", True), ("myhost", True)]:  # fmt: skip
        assert main(["serve", "--host", host]) == 0
        err = capsys.readouterr().err
        assert ("without API keys" in err) is warned, host
    _set(env, HWNAS_API_KEYS="k" * 32)
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert "without API keys" not in err and served[-1] == "0.0.0.0"
    # keys, on a public address, no public URL: a client's Host header chose the job URLs
    assert "serving on 0.0.0.0 without HWNAS_PUBLIC_URL: job URLs and redirects" in err
    _set(env, HWNAS_PUBLIC_URL="https://nas.example.com")
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    assert "HWNAS_PUBLIC_URL" not in capsys.readouterr().err
    env.delenv("HWNAS_PUBLIC_URL")
    # the client's variable for the server's, one letter short: no key was required
    _set(env, HWNAS_API_KEYS="", HWNAS_API_KEY="k" * 32)
    assert main(["serve"]) == 0
    assert "HWNAS_API_KEY is set, HWNAS_API_KEYS is not" in capsys.readouterr().err
    _set(env, HWNAS_API_KEYS="k" * 32)
    assert main(["serve"]) == 0
    assert "HWNAS_API_KEY is set" not in capsys.readouterr().err
    # admin keys that change nothing: every key sees every job (security test 34 L5)
    _set(env, HWNAS_ADMIN_API_KEYS="a" * 32)
    assert main(["serve"]) == 0
    assert "HWNAS_ADMIN_API_KEYS are keys like the others" in capsys.readouterr().err
    _set(env, HWNAS_JOB_VISIBILITY="own")
    assert main(["serve"]) == 0
    assert "HWNAS_ADMIN_API_KEYS" not in capsys.readouterr().err


def test_db_upgrade_gives_a_copy_a_new_identity_when_asked(env: pytest.MonkeyPatch, capsys) -> None:
    from store.db import database_id, make_engine, make_session_factory

    assert main(["db-upgrade"]) == 0
    head = capsys.readouterr().out.split()[-1]
    engine = make_engine(get_settings().database_url)
    try:
        first = database_id(make_session_factory(engine))
        assert main(["db-upgrade", "--new-identity"]) == 0
        renewed = database_id(make_session_factory(engine))
    finally:
        engine.dispose()
    assert capsys.readouterr().out == (
        f"database at head: schema revision {head}, nothing to migrate\n"
        f"database identity {renewed}\n"
    )
    assert first is not None and renewed != first


def test_failures_are_a_budget_of_their_own_with_or_without_an_evaluations_budget() -> None:
    from api.cli import build_parser, build_spec

    parse = build_parser().parse_args
    assert build_spec(parse(["submit", "--failures", "2"]))["budget"] == {"failures": 2}
    both = build_spec(parse(["submit", "--failures", "0", "--budget", "9"]))["budget"]
    assert both == {"evaluations": 9, "failures": 0}
    assert "budget" not in build_spec(parse(["submit"]))  # the server's defaults


def test_data_without_a_supernet_says_it_searches_the_default(capsys) -> None:
    """A user's own data, whose shape the default took, was searched on the built-in
    Fashion-MNIST supernet without a word (audit 29)."""
    from api.cli import build_parser, build_spec

    parse = build_parser().parse_args
    assert build_spec(parse(["submit", "--validation-data", "mine.npz"]))["supernet"] == (
        "fmnist-ofa-cnn"
    )
    assert capsys.readouterr().err == (
        "hwnas: searching fmnist-ofa-cnn, the default supernet, on mine.npz (--supernet "
        "names another: hwnas supernets)\n"
    )
    for argv in (["submit"], ["submit", "--supernet", "fmnist-ofa-cnn", "--validation-data", "v"]):
        build_spec(parse(argv))
        assert capsys.readouterr().err == ""


def test_the_latency_prior_is_sent_only_when_turned_off() -> None:
    """A server older than ``latency_prior`` refuses the key (422): sent only when needed."""
    from api.cli import build_parser, build_spec

    parse = build_parser().parse_args
    assert "latency_prior" not in build_spec(parse(["submit"]))
    assert build_spec(parse(["run", "--no-latency-prior"]))["latency_prior"] is False


def test_labels_are_sent_only_when_given_and_each_needs_a_name() -> None:
    from api.cli import build_parser, build_spec, parse_labels

    parse = build_parser().parse_args
    assert "labels" not in build_spec(parse(["submit"]))  # an older server refuses the key
    given = parse(["submit", "--label", "project=kws", "--label", "run=a=b", "--label", "e="])
    assert build_spec(given)["labels"] == {"project": "kws", "run": "a=b", "e": ""}
    assert parse_labels(["project", "run=7"], values=False) == {"project": None, "run": "7"}
    for wrong, values in [("project", True), ("=kws", True), ("=", False)]:
        with pytest.raises(InvalidInput, match="--label"):
            parse_labels([wrong], values=values)
    with pytest.raises(InvalidInput, match="--label run is given twice"):
        parse_labels(["run=1", "run=2"], values=True)


def test_the_jobs_table_fits_its_longest_names_and_shows_labels_as_json() -> None:
    from api.cli import format_jobs

    def job(supernet: str, labels: dict[str, str]) -> dict[str, Any]:
        progress = {"evaluations_done": 3, "budget": 60, "front_size": 2}
        return {"id": "j" * 32, "status": "running", "kind": "search", "supernet": supernet,
                "device": "nb201-samsung_a50", "progress": progress,
                "created_at": "2026-12-07T05:00:00.123+00:00", "labels": labels}  # fmt: skip

    long = "ofa_mbv3_d234_e346_k357_w1.0"
    header, rule, first, second = format_jobs([job(long, {"a": "x,y=z"}), job("s", {})]).split("\n")
    assert header.split() == ["id", "status", "kind", "supernet", "device", "done", "front",
                              "created", "(UTC)", "labels"]  # fmt: skip
    assert first.index("nb201-samsung_a50") == second.index("nb201-samsung_a50")  # aligned
    assert first.endswith('  {"a": "x,y=z"}') and second.endswith("2026-12-07 05:00:00")
    assert len(rule) == len(header) and set(rule) == {"-"}


def test_the_default_budget_of_failures_is_half_the_evaluations_at_least_3() -> None:
    from api.schemas import BudgetIn
    from store.job_keys import failures_allowed

    assert BudgetIn(evaluations=60).failures is None  # stored as not given: a default
    assert failures_allowed(BudgetIn(evaluations=60).model_dump()) == 30
    assert failures_allowed(BudgetIn(evaluations=4).model_dump()) == 3
    assert failures_allowed(BudgetIn(evaluations=60, failures=0).model_dump()) == 0


def test_an_ipv6_host_is_bound_as_ipv6() -> None:
    from api.cli import _bind

    try:
        sock = _bind("::1", 0)
    except HwnasError as exc:  # a machine without IPv6 loopback
        pytest.skip(str(exc))
    with sock:
        assert sock.family == socket.AF_INET6 and sock.getsockname()[0] == "::1"
        with socket.socket(socket.AF_INET6) as client:  # listening already
            client.connect(("::1", sock.getsockname()[1]))


def test_the_evaluations_table_prints_counts_plainly() -> None:
    """Multi-objective audit 33: `hwnas evaluations` printed MACs as 4.93682e+06."""
    from api.cli import _number

    assert [_number(v) for v in (4936820.0, 52714.0, 0.91234567, 12345.6, None)] == [
        "4936820", "52714", "0.912346", "12345.6", "-",
    ]  # fmt: skip
