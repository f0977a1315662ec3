"""`make up` / `make down`: the service starts on 127.0.0.1 and stops again."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.seaweed import free_port as free_s3_port
from tests.conftest import ROOT, free_port


def _authorized(state: Path) -> dict[str, str]:
    """The Authorization header of the Prefect API `up` set up (its generated auth string)."""
    secret = (state / "prefect-api.secret").read_text().strip()
    return {"Authorization": "Basic " + base64.b64encode(f"shipyard:{secret}".encode()).decode()}


def _without_outside_settings(env: dict[str, str]) -> None:
    """Drop what would point `up` at another server, registry or secret than its own."""
    outside = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "SHIPYARD_WEBHOOK_SECRET")
    for key in (*outside, "SHIPYARD_REGISTRY", "AWS_ACCESS_KEY_ID"):
        env.pop(key, None)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _service(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.service", command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _prefect_tables(port: int, password: str) -> list[str]:
    """The Prefect database's tables as `name:owner`, read straight from PostgreSQL."""
    from infra.postgres import DATABASE, bin_dir

    query = "select tablename || ':' || tableowner from pg_tables where schemaname = 'public'"
    done = subprocess.run(
        [
            str(bin_dir() / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            DATABASE,
            "-Atc",
            query,
        ],
        env={**os.environ, "PGPASSWORD": password},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A state folder other users can pass through (pytest's own tmp root is private): as root,
    PostgreSQL runs as a system user that must reach its data."""
    folder = Path(tempfile.mkdtemp(prefix="shipyard-service-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_prefect_runs_on_postgresql_and_keeps_its_data_across_down_and_up(open_folder: Path) -> None:
    tmp_path = open_folder
    prefect_port, webhook_port, postgres_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    env = {
        **os.environ,
        "SHIPYARD_SERVICE_DIR": str(tmp_path / "service"),
        "SHIPYARD_PREFECT_PORT": str(prefect_port),
        "SHIPYARD_WEBHOOK_PORT": str(webhook_port),
        "SHIPYARD_POSTGRES_PORT": str(postgres_port),
        "SHIPYARD_S3_PORT": str(free_s3_port()),
    }
    _without_outside_settings(env)
    try:
        up = _service("up", env)
        assert up.returncode == 0, up.stderr[-2000:] + up.stdout
        assert f"PostgreSQL: 127.0.0.1:{postgres_port}" in up.stdout, up.stdout
        password = (tmp_path / "service/postgres.password").read_text().strip()
        tables = dict(t.split(":") for t in _prefect_tables(postgres_port, password))
        assert {"flow", "deployment", "flow_run"} <= set(tables)
        assert set(tables.values()) == {"prefect"}  # Prefect connects as its own role, not the superuser
        marker = json.dumps({"name": "shipyard_marker", "value": "kept"}).encode()
        auth = _authorized(tmp_path / "service")
        request = urllib.request.Request(
            f"{api}/variables/",
            data=marker,
            headers={"Content-Type": "application/json", **auth},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 201
        assert _service("down", env).returncode == 0
        assert not _listening(postgres_port)
        again = _service("up", env)
        assert again.returncode == 0, again.stderr[-2000:] + again.stdout
        kept = urllib.request.Request(f"{api}/variables/name/shipyard_marker", headers=auth)
        with urllib.request.urlopen(kept, timeout=10) as r:
            assert json.loads(r.read())["value"] == "kept"
    finally:
        down = _service("down", env)
    assert down.returncode == 0, down.stderr
    assert not _listening(prefect_port) and not _listening(postgres_port)


def test_up_and_down(tmp_path: Path) -> None:
    prefect_port, webhook_port = free_port(), free_port()
    env = {
        **os.environ,
        "SHIPYARD_SERVICE_DIR": str(tmp_path / "service"),
        "SHIPYARD_PREFECT_PORT": str(prefect_port),
        "SHIPYARD_WEBHOOK_PORT": str(webhook_port),
        "SHIPYARD_POSTGRES_PORT": str(free_port()),
        "SHIPYARD_S3_PORT": str(free_s3_port()),
    }
    _without_outside_settings(env)
    try:
        up = subprocess.run(
            [sys.executable, "-m", "infra.service", "up"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert up.returncode == 0, up.stderr[-2000:] + up.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{prefect_port}/api/health", timeout=5) as r:
            assert r.status == 200
        nightly = urllib.request.Request(
            f"http://127.0.0.1:{prefect_port}/api/deployments/name/nightly-reexport/nightly-reexport",
            headers=_authorized(tmp_path / "service"),
        )
        with urllib.request.urlopen(nightly, timeout=5) as r:
            assert b"0 3 * * *" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{webhook_port}/healthz", timeout=5) as r:
            assert r.status == 200
        assert len((tmp_path / "service/webhook.secret").read_text()) >= 32
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "infra.service", "down"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down.returncode == 0, down.stderr
    assert not _listening(prefect_port) and not _listening(webhook_port)
