"""The webhook over real HTTP on 127.0.0.1, with a real Prefect server and a served deployment."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows._signing import sign
from infra.service import wait_http
from tests.conftest import ROOT, free_port

SECRET = "test-webhook-secret-0123456789"


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    if not wait_http(url, timeout, proc):
        raise RuntimeError(f"{url} did not answer: {log.read_text()[-2000:]}")


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


@pytest.fixture(scope="session")
def service(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Webhook + `flows.serve` (the deployments), sharing a local registry."""
    root = tmp_path_factory.mktemp("service")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "SHIPYARD_HOME": str(root / "home"),
        "SHIPYARD_REGISTRY": (root / "registry").as_uri(),
        "SHIPYARD_WEBHOOK_SECRET": SECRET,
        "SHIPYARD_WEBHOOK_PORT": str(port),
        "SHIPYARD_WEBHOOK_MAX_MB": "4",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    webhook = _start(["flows.webhook"], env, root / "webhook.log")
    server = _start(["flows.serve"], env, root / "serve.log")
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", webhook, root / "webhook.log")
        _wait_http(
            f"{prefect_api}/deployments/name/package-model/package-model",
            server,
            root / "serve.log",
            timeout=180,
        )
        yield {"url": f"http://127.0.0.1:{port}", "registry": root / "registry", "root": root}
    finally:
        _stop(webhook)
        _stop(server)


def _post(
    url: str,
    name: str,
    model: bytes,
    fields: dict[str, str] | None = None,
    secret: str = SECRET,
    timestamp: int | None = None,
    signed: bool = True,
) -> httpx.Response:
    request = httpx.Request(
        "POST", f"{url}/v1/models/{name}", files={"file": ("model.pt2", model)}, data=fields or {}
    )
    body = request.read()
    headers = dict(request.headers)
    if signed:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers.update({"X-Shipyard-Timestamp": ts, "X-Shipyard-Signature": sign(secret, ts, body)})
    return httpx.post(request.url, content=body, headers=headers, timeout=60)


def _incoming(service: dict) -> list[Path]:
    folder = service["registry"] / "incoming"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_signed_upload_runs_the_deployment(service: dict, models: dict[str, Path]) -> None:
    model = models["convnet"].read_bytes()
    fields = {"targets": "triton", "spec": json.dumps({"dims": {"batch": {"max": 8}}})}
    answer = _post(service["url"], "hooked", model, fields)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert set(body) == {"run_id", "status_url", "source_sha256"}
    assert body["status_url"].endswith(f"/v1/runs/{body['run_id']}")
    again = _post(service["url"], "hooked", model, fields)
    assert again.json()["run_id"] == body["run_id"]  # a redelivered request starts no second run

    deadline = time.monotonic() + 600
    status: dict = {}
    while time.monotonic() < deadline:
        status = httpx.get(body["status_url"], timeout=30).json()
        if status["state"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            break
        time.sleep(2)
    assert status["state"] == "COMPLETED", status
    assert status["source_sha256"] == body["source_sha256"]
    assert status["model"] == "hooked" and status["version"] == 1
    triton = status["targets"]["triton"]
    assert triton["status"] == "passed", triton["error"]
    assert triton["envelope"] == {"batch": {"min": 1, "max": 8}}
    assert {"max_abs_err", "max_rel_err", "cosine", "latency_ms_p50", "artifact_bytes"} <= set(
        triton["metrics"]
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"signed": False}, "missing X-Shipyard"),
        ({"secret": "some-other-secret-123456"}, "signature does not match"),
        ({"timestamp": int(time.time()) - 3600}, "replay or clock skew"),
    ],
)
def test_unsigned_or_forged_requests_are_refused(
    service: dict, models: dict[str, Path], kwargs: dict, message: str
) -> None:
    before = _incoming(service)
    answer = _post(service["url"], "forged", models["convnet"].read_bytes(), **kwargs)
    assert answer.status_code == 401
    assert message in answer.json()["error"]
    assert _incoming(service) == before


def test_tampered_body_is_refused(service: dict, models: dict[str, Path]) -> None:
    request = httpx.Request("POST", f"{service['url']}/v1/models/x", files={"file": ("m.pt2", b"abc")})
    body = request.read()
    ts = str(int(time.time()))
    headers = {**request.headers, "X-Shipyard-Timestamp": ts, "X-Shipyard-Signature": sign(SECRET, ts, body)}
    answer = httpx.post(request.url, content=body.replace(b"abc", b"abd"), headers=headers)
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("model", "fields", "status", "message"),
    [
        (os.urandom(2048), {}, 422, "not a recognized model"),
        (pickle.dumps({"x": 1}), {}, 422, "pickle"),
        (None, {"targets": "ort-web,coreml"}, 422, "unknown target 'coreml'"),
        (None, {"spec": "dims: {batch: {min: lots}}"}, 422, "dims.batch.min"),
        (None, {"spec": "gatez: 1"}, 422, "gatez"),
        (None, {"spec": "samples: /etc/passwd"}, 422, "samples: not accepted over the webhook"),
    ],
)
def test_bad_uploads_get_a_one_line_reason(
    service: dict, models: dict[str, Path], model: bytes | None, fields: dict, status: int, message: str
) -> None:
    before = _incoming(service)
    answer = _post(service["url"], "bad", model or models["convnet"].read_bytes(), fields)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error
    assert _incoming(service) == before


def test_oversized_upload_is_refused(service: dict) -> None:
    answer = _post(service["url"], "big", os.urandom(5 * 1024 * 1024))
    assert answer.status_code == 413


@pytest.mark.parametrize("name", ["Bad_Name", "..", "a%2F..%2Fb"])
def test_model_names_with_tricks_are_refused(service: dict, models: dict[str, Path], name: str) -> None:
    before = _incoming(service)
    answer = _post(service["url"], name, models["convnet"].read_bytes())
    assert answer.status_code in (400, 404)
    assert _incoming(service) == before


def test_status_of_unknown_runs(service: dict) -> None:
    assert httpx.get(f"{service['url']}/v1/runs/not-a-uuid").status_code == 400
    missing = httpx.get(f"{service['url']}/v1/runs/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
