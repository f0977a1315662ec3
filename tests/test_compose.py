"""docker-compose.yml is checked offline (no engine here) with docker-compose's own validator."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT

ENV = {
    "S3_ACCESS_KEY": "k",
    "S3_SECRET_KEY": "s",
    "POSTGRES_PASSWORD": "p",
    "SHIPYARD_WEBHOOK_SECRET": "w",
    "PREFECT_API_AUTH_STRING": "shipyard:a",
}


def _config(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make test` installs it (Debian package docker-compose)"
    return subprocess.run(
        [binary, "-f", str(path), "config"],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        cwd=path.parent,
        timeout=60,
    )


def test_compose_file_is_valid_and_private() -> None:
    result = _config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"postgres", "prefect-server", "seaweedfs", "worker", "webhook"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else port.get("host_ip", "")
            assert "127.0.0.1" in str(published), (name, port)
    # SeaweedFS as `make up` starts it (telemetry off, its own listeners behind mutual TLS)
    assert services["seaweedfs"]["command"][:3] == ["python", "-m", "infra.seaweed"]
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert services["worker"]["command"] == ["python", "-m", "infra.worker"]  # as `make up` starts it
    assert services["deploy"]["command"] == ["python", "-m", "flows.deploy"]
    assert "volumes" not in services["worker"]  # replicas share nothing but the registry and Prefect
    assert services["worker"]["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    # the API is closed: the server asks for the auth string, every client of it sends it
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == "shipyard:a"
    for client in ("deploy", "worker", "webhook"):
        assert services[client]["environment"]["PREFECT_API_AUTH_STRING"] == "shipyard:a", client


def test_validator_rejects_unknown_keys(tmp_path: Path) -> None:
    text = (
        (ROOT / "docker-compose.yml").read_text().replace("  worker:\n", "  worker:\n    bogus_key: 1\n", 1)
    )
    (tmp_path / "docker-compose.yml").write_text(text)
    (tmp_path / "infra").mkdir()
    result = _config(tmp_path / "docker-compose.yml")
    assert result.returncode != 0
    assert "bogus_key" in result.stderr
