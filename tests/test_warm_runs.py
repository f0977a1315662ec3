"""Flow runs forked from the worker's warm server behave as `python -m prefect.engine` would.

No Prefect server here: the engine either refuses a bad flow run id at once or hangs on an API
that accepts connections and never answers, which is what the signal and kill paths need.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT


@pytest.fixture
def warm_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "flows.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.warm_runs", "serve", str(path)], stdin=subprocess.PIPE, cwd=ROOT
    )
    deadline = time.monotonic() + 60
    while not path.exists():
        assert server.poll() is None and time.monotonic() < deadline, "the warm server did not start"
        time.sleep(0.1)
    try:
        yield server, path
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(10)


def _launcher(env: dict[str, str], tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.warm_runs", "run"],
        env={**os.environ, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def waiting_run(warm_server) -> Iterator[dict[str, str]]:
    """The environment of a run whose Prefect API accepts connections and never answers: its
    engine waits there, forked from the warm server."""
    _, path = warm_server
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield {
            "PREFECT__FLOW_RUN_ID": str(uuid.uuid4()),
            "PREFECT_API_URL": f"http://127.0.0.1:{listener.getsockname()[1]}/api",
            "SHIPYARD_FLOW_SERVER": str(path),
        }


def _forked_runs(server: subprocess.Popen[bytes], timeout: float = 30) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(server.pid).children()
        if children:
            return children
        time.sleep(0.1)
    raise AssertionError("no flow run process was forked")


def test_a_forked_run_ends_as_a_fresh_interpreter_would(warm_server, tmp_path: Path) -> None:
    _, path = warm_server
    bad_id = {"PREFECT__FLOW_RUN_ID": "not-a-uuid"}
    warm = _launcher({**bad_id, "SHIPYARD_FLOW_SERVER": str(path)}, tmp_path)
    cold = _launcher({**bad_id, "SHIPYARD_FLOW_SERVER": ""}, tmp_path)
    _, warm_err = warm.communicate(timeout=120)
    _, cold_err = cold.communicate(timeout=120)
    assert warm.returncode == cold.returncode == 1
    assert "Invalid flow run id" in warm_err and "Invalid flow run id" in cold_err  # the child's stderr
    assert "RuntimeWarning" not in warm_err


def test_a_missing_server_falls_back_to_a_fresh_interpreter(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.sock")
    gone = _launcher({"PREFECT__FLOW_RUN_ID": "x", "SHIPYARD_FLOW_SERVER": missing}, tmp_path)
    _, err = gone.communicate(timeout=120)
    assert gone.returncode == 1 and "Invalid flow run id" in err


def test_sigterm_reaches_the_forked_run(warm_server, waiting_run, tmp_path: Path) -> None:
    server, _ = warm_server
    launcher = _launcher(waiting_run, tmp_path)
    (run,) = _forked_runs(server)
    assert run.pid != launcher.pid and run.cwd() == str(tmp_path)
    launcher.send_signal(signal.SIGTERM)
    launcher.communicate(timeout=60)
    assert launcher.returncode != 0
    assert not run.is_running() or run.status() == psutil.STATUS_ZOMBIE


def test_a_killed_launcher_takes_its_run_down(warm_server, waiting_run, tmp_path: Path) -> None:
    server, _ = warm_server
    launcher = _launcher(waiting_run, tmp_path)
    (run,) = _forked_runs(server)
    launcher.kill()  # as Prefect kills a run it cannot stop gently, or as the OOM killer would
    launcher.wait(10)
    run.wait(30)  # its process group is killed by the server
    assert server.poll() is None  # the server goes on for the worker's next run


def test_the_server_and_its_runs_end_with_the_worker(warm_server, waiting_run, tmp_path: Path) -> None:
    server, path = warm_server
    launcher = _launcher(waiting_run, tmp_path)
    (run,) = _forked_runs(server)
    assert server.stdin is not None
    server.stdin.close()  # what the worker's exit does
    server.wait(30)
    run.wait(30)
    launcher.communicate(timeout=30)
    assert launcher.returncode != 0
    assert not path.exists()
