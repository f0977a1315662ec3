"""Fixtures: example models, an isolated Shipyard home, a real Prefect server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.models import save_convnet, save_multi_io

ROOT = Path(__file__).resolve().parents[1]
SHIPYARD = [sys.executable, "-m", "flows.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "convnet": save_convnet(folder / "convnet.pt2"),
        "multi_io": save_multi_io(folder / "multi_io.pt2"),
    }


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server (SQLite) for the whole session; stopped at the end."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
    else:
        proc.kill()
        raise RuntimeError("prefect server did not become healthy in 120 s")
    yield url
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh SHIPYARD_HOME (runs, default registry) for one test."""
    path = tmp_path / "shipyard-home"
    path.mkdir()
    return path


def run_cli(
    args: list[str], home: Path, prefect_api: str | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIPYARD_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("SHIPYARD_REGISTRY", None)
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    else:
        env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [*SHIPYARD, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


def registry_files(home: Path) -> list[str]:
    root = home / "registry"
    return (
        sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if root.exists()
        else []
    )


def parse_json(stdout: str) -> dict:
    return json.loads(stdout)


@pytest.fixture(scope="session")
def convnet_all(models: dict[str, Path], prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    """The conv net packaged for every target through the real Prefect server, once per session."""
    home = tmp_path_factory.mktemp("convnet-home")
    result = run_cli(["package", str(models["convnet"]), "--json"], home, prefect_api)
    return home, result
