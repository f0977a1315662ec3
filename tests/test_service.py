"""`make up` / `make down`: the service starts on 127.0.0.1 and stops again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import ROOT, free_port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_and_down(tmp_path: Path) -> None:
    prefect_port, webhook_port = free_port(), free_port()
    env = {
        **os.environ,
        "SHIPYARD_SERVICE_DIR": str(tmp_path / "service"),
        "SHIPYARD_PREFECT_PORT": str(prefect_port),
        "SHIPYARD_WEBHOOK_PORT": str(webhook_port),
    }
    for key in ("PREFECT_API_URL", "SHIPYARD_WEBHOOK_SECRET", "SHIPYARD_REGISTRY"):
        env.pop(key, None)
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
        with urllib.request.urlopen(
            f"http://127.0.0.1:{prefect_port}/api/deployments/name/nightly-reexport/nightly-reexport",
            timeout=5,
        ) as r:
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
