"""The webhook over real HTTP on 127.0.0.1, with a real Prefect server and a served deployment."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from flows.signing import sign_body, sign_request
from infra.service import wait_http
from tests.conftest import ROOT, free_port
from tests.corrupt import LISTING, corruptions, with_failing_checksum
from tests.models import save_convnet_onnx, save_keras_cnn, save_saved_model

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
    """Webhook + the deployments (flows/deploy.py) + one worker, sharing a local registry."""
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
        "SHIPYARD_WEBHOOK_MAX_UPLOADS": "2",
        "SHIPYARD_WEBHOOK_MAX_SMALL_UPLOADS": "2",
        "SHIPYARD_WEBHOOK_SPOOL_DIR": str(root / "spool"),
        "SHIPYARD_WEBHOOK_READ_TIMEOUT_S": "6",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    (root / "spool").mkdir()
    deployed = subprocess.run(
        [sys.executable, "-m", "flows.deploy"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    webhook = _start(["flows.webhook"], env, root / "webhook.log")
    worker = _start(["infra.worker", "--name", "webhook-tests"], env, root / "worker.log")
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", webhook, root / "webhook.log")
        yield {
            "url": f"http://127.0.0.1:{port}",
            "port": port,
            "registry": root / "registry",
            "root": root,
            "spool": root / "spool",
        }
    finally:
        _stop(webhook)
        _stop(worker)


def _signing(
    secret: str, ts: str, method: str, path: str, body: bytes, headers: dict[str, str], legacy: bool = False
) -> dict[str, str]:
    """The signing headers: the headers signed (declaring the body's digest), or the deprecated
    MAC over the body."""
    if legacy:
        return {"X-Shipyard-Timestamp": ts, "X-Shipyard-Signature": sign_body(secret, ts, method, path, body)}
    digest = hashlib.sha256(body).hexdigest()
    length, kind = headers.get("content-length", ""), headers.get("content-type", "")
    signature = sign_request(secret, ts, method, path, length, kind, digest)
    return {
        "X-Shipyard-Timestamp": ts,
        "X-Shipyard-Content-SHA256": digest,
        "X-Shipyard-Signature": signature,
    }


def _signed_request(
    url: str,
    name: str,
    model: bytes,
    fields: dict[str, str] | None = None,
    secret: str = SECRET,
    timestamp: int | None = None,
    signed: bool = True,
    signed_path: str | None = None,
    files: dict[str, tuple[str, bytes]] | None = None,
    legacy: bool = False,
) -> tuple[str, bytes, dict[str, str]]:
    """The URL, multipart body and headers of a model upload, signed unless `signed` is False."""
    request = httpx.Request(
        "POST",
        f"{url}/v1/models/{name}",
        files={"file": ("model.pt2", model), **(files or {})},
        data=fields or {},
    )
    body = request.read()
    headers = dict(request.headers)
    if signed:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        path = signed_path or f"/v1/models/{name}"
        headers.update(_signing(secret, ts, "POST", path, body, headers, legacy))
    return str(request.url), body, headers


def _post(
    url: str, name: str, model: bytes, fields: dict[str, str] | None = None, **kwargs
) -> httpx.Response:
    target, body, headers = _signed_request(url, name, model, fields, **kwargs)
    return httpx.post(target, content=body, headers=headers, timeout=60)


def _wait_done(url: str, status_url: str, timeout: float = 600) -> dict:
    path = urlparse(status_url).path
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = _get(url, path).json()
        if status["state"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            break
        time.sleep(2)
    return status


def _get(url: str, path: str, signed: bool = True, legacy: bool = False) -> httpx.Response:
    ts = str(int(time.time()))
    headers = _signing(SECRET, ts, "GET", path, b"", {}, legacy) if signed else {}
    return httpx.get(f"{url}{path}", headers=headers, timeout=30)


def prefect_post(url: str, payload: dict) -> httpx.Response:
    """A POST to the test's Prefect server, tried again on a 5xx: its SQLite database refuses a
    write while another holds the lock ("database is locked"), as Prefect's own client retries."""
    for attempt in range(5):
        answer = httpx.post(url, json=payload, timeout=30)
        if answer.status_code < 500:
            return answer
        time.sleep(0.5 * (attempt + 1))
    answer.raise_for_status()
    return answer


def flow_run_of(
    prefect_api: str, run_id: str, timeout: float = 60, auth: tuple[str, str] | None = None
) -> str:
    """The Prefect flow run the webhook started for a submission (its idempotency key)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.post(
            f"{prefect_api}/flow_runs/filter",
            json={"flow_runs": {"idempotency_key": {"any_": [run_id]}}, "limit": 1},
            timeout=30,
            auth=auth,
        )
        found = answer.json() if answer.status_code < 500 else []  # a locked SQLite: ask again
        if found:
            return str(found[0]["id"])
        time.sleep(0.5)
    raise AssertionError(f"no flow run for submission {run_id} after {timeout} s")


def _incoming(service: dict) -> list[Path]:
    folder = service["registry"] / "incoming"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_signed_upload_runs_the_deployment(service: dict, models: dict[str, Path]) -> None:
    model = models["convnet"].read_bytes()
    fields = {"targets": "triton", "spec": json.dumps({"dims": {"batch": {"max": 8}}})}
    url, raw, headers = _signed_request(service["url"], "hooked", model, fields)
    answer = httpx.post(url, content=raw, headers=headers, timeout=60)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    replayed = httpx.post(url, content=raw, headers=headers, timeout=60)  # captured and sent again
    assert replayed.status_code == 409 and "sent before" in replayed.json()["error"]
    assert set(body) == {"run_id", "status_url", "source_sha256"}
    assert body["status_url"].endswith(f"/v1/runs/{body['run_id']}")
    again = _post(service["url"], "hooked", model, fields)  # signed anew: a redelivery
    assert again.json()["run_id"] == body["run_id"]  # starts no second run

    path = urlparse(body["status_url"]).path
    assert _get(service["url"], path, legacy=True).status_code == 200  # the deprecated signature, still
    assert _get(service["url"], path, signed=False).status_code == 401  # status reads are signed too
    status = _wait_done(service["url"], body["status_url"])
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
        ({"signed_path": "/v1/models/other"}, "signature does not match"),  # replayed to another name
        ({"legacy": True, "secret": "some-other-secret-123456"}, "signature does not match"),
        ({"legacy": True, "signed_path": "/v1/models/other"}, "signature does not match"),
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


@pytest.mark.parametrize("legacy", [False, True])
def test_tampered_body_is_refused(service: dict, legacy: bool) -> None:
    url, body, headers = _signed_request(service["url"], "x", b"abc", legacy=legacy)
    answer = httpx.post(url, content=body.replace(b"abc", b"abd"), headers=headers)
    assert answer.status_code == 401
    assert ("Content-SHA256" in answer.json()["error"]) is not legacy
    assert list(service["spool"].iterdir()) == []


def test_a_refused_signed_upload_may_be_sent_again(service: dict) -> None:
    """Only an accepted request uses up its signature (replays of accepted ones: see the first test)."""
    url, body, headers = _signed_request(service["url"], "resent", b"not a model")
    for _ in range(2):
        answer = httpx.post(url, content=body, headers=headers)
        assert answer.status_code == 422 and "not a recognized model" in answer.json()["error"]


@pytest.mark.parametrize(
    ("model", "fields", "status", "message"),
    [
        (os.urandom(2048), {}, 422, "not a recognized model"),
        (pickle.dumps({"x": 1}), {}, 422, "pickle"),
        (None, {"targets": "ort-web,coreml"}, 422, "unknown target 'coreml'"),
        (None, {"spec": "dims: {batch: {min: lots}}"}, 422, "dims.batch.min"),
        (None, {"spec": "gatez: 1"}, 422, "gatez"),
        (None, {"spec": "targets: {triton: {memory_mb: 99000000}}"}, 422, "above this service's limit"),
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
    assert str(service["spool"]) not in error and "/tmp" not in error  # no server paths in answers
    assert _incoming(service) == before


def test_archives_with_a_damaged_listing_are_422(
    service: dict, models: dict[str, Path], tmp_path: Path
) -> None:
    """What the door sees from headers and the listing alone (a damaged zip, names that leave the
    archive or are not UTF-8) is refused at once; the rest is the prepare step's to find."""
    marker = tmp_path / "pwned"
    before = _incoming(service)
    for case in corruptions(models["convnet"], marker, count=14, seed=2):
        if case.kind not in LISTING:
            continue
        answer = _post(service["url"], "corrupt", case.data)
        assert answer.status_code == 422, (case.name, answer.text)
        error = answer.json()["error"]
        assert "\n" not in error and "/tmp" not in error and "uploaded file" in error, (case.name, error)
    assert _incoming(service) == before
    assert not marker.exists()


def test_an_entry_failing_its_checksum_fails_the_run_and_says_why(
    service: dict, models: dict[str, Path]
) -> None:
    """The door reads no entry (an 8 MB zip bomb costs it nothing); the prepare step finds the
    damage, and the run's status names it without a server path."""
    answer = _post(service["url"], "damaged", with_failing_checksum(models["convnet"]), {"targets": "triton"})
    assert answer.status_code == 202, answer.text
    status = _wait_done(service["url"], answer.json()["status_url"])
    assert status["state"] == "FAILED", status
    assert "fails its checksum" in status["error"] and "/tmp" not in status["error"], status


def _npz(**arrays) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_uploaded_samples_are_checked_then_validated_against(
    service: dict, models: dict[str, Path], tmp_path: Path
) -> None:
    import numpy as np

    model = models["convnet"].read_bytes()
    objects = _npz(image=np.array([{"a": 1}], dtype=object))
    refused = _post(service["url"], "sampled", model, files={"samples": ("s.npz", objects)})
    assert refused.status_code == 422 and "holds Python objects" in refused.json()["error"]
    not_npz = _post(service["url"], "sampled", model, files={"samples": ("s.npz", b"just bytes")})
    assert not_npz.status_code == 422 and "not an .npz" in not_npz.json()["error"]

    images = np.random.default_rng(5).random((3, 3, 32, 32), dtype=np.float32)
    samples = tmp_path / "samples.npz"
    samples.write_bytes(_npz(image=images))
    env = {**os.environ, "SHIPYARD_WEBHOOK_SECRET": SECRET, "SHIPYARD_WEBHOOK_URL": service["url"]}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "submit", str(models["convnet"]), "--name", "sampled",
         "--targets", "triton", "--samples", str(samples), "--wait", "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    triton = json.loads(done.stdout)["targets"]["triton"]
    assert any(v["variant"] == "samples" and v["dims"] == {"batch": 3} for v in triton["variants"])


def _schema_of(prefect_api: str, deployment: str) -> dict:
    found = httpx.get(f"{prefect_api}/deployments/name/{deployment}", timeout=30)
    assert found.status_code == 200, found.text
    return found.json()["parameter_openapi_schema"]


def _resolve(schema: dict, node: dict) -> dict:
    """A schema node with a $ref (or a one-type anyOf around one) replaced by what it points at."""
    options = [o for o in node.get("anyOf", [node]) if o.get("type") != "null"]
    node = options[0] if len(options) == 1 else node
    ref = node.get("$ref")
    return schema["definitions"][ref.rsplit("/", 1)[-1]] if ref else node


def test_the_ui_run_forms_are_typed_and_described(service: dict, prefect_api: str) -> None:
    """What the Prefect UI renders: target names to pick from, the spec as fields, every field told."""
    from targets import all_targets

    schema = _schema_of(prefect_api, "package-model/package-model")
    props = schema["properties"]
    assert set(props) >= {"source", "targets", "spec", "name", "registry", "keep_workdir", "samples"}
    assert all(p.get("description") for p in props.values()), {
        k for k, p in props.items() if not p.get("description")
    }
    items = _resolve(schema, _resolve(schema, props["targets"])["items"])
    assert sorted(items["enum"]) == sorted(t.name for t in all_targets())
    spec = _resolve(schema, props["spec"])
    assert {"name", "inputs", "outputs", "dims", "seed", "targets"} <= set(spec["properties"])
    by_target = _resolve(schema, spec["properties"]["targets"])["properties"]
    assert set(by_target) == {t.name for t in all_targets()}
    litert = _resolve(schema, _resolve(schema, by_target["litert-int4"])["properties"]["options"])
    assert "dynamic_wi4_afp32" in json.dumps(litert["properties"]["recipe"])
    nightly = _schema_of(prefect_api, "nightly-reexport/nightly-reexport")["properties"]
    assert all(p.get("description") for p in nightly.values())


def test_a_form_error_names_the_field(service: dict, prefect_api: str, models: dict[str, Path]) -> None:
    deployment = httpx.get(f"{prefect_api}/deployments/name/package-model/package-model", timeout=30).json()
    bad = {"source": str(models["convnet"]), "targets": ["coreml"]}
    created = prefect_post(
        f"{prefect_api}/deployments/{deployment['id']}/create_flow_run", {"parameters": bad}
    )
    assert created.status_code == 409 and "targets" in created.text, created.text


def test_the_readme_curl_recipe_works_as_written(
    service: dict, models: dict[str, Path], tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    recipe = readme.split("By hand, with curl and openssl", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    recipe = recipe.replace("http://127.0.0.1:8000", service["url"])  # the test service's own port
    (tmp_path / "model.pt2").write_bytes(models["multi_io"].read_bytes())
    env = {**os.environ, "SHIPYARD_WEBHOOK_SECRET": SECRET}
    done = subprocess.run(
        ["bash", "-c", recipe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) == {"run_id", "status_url", "source_sha256"}, answer


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
    assert _get(service["url"], "/v1/runs/not-a-uuid").status_code == 400
    assert _get(service["url"], "/v1/runs/00000000-0000-4000-8000-000000000000").status_code == 404


def _raw(port: int, head: str, body: bytes = b"", wait_s: float = 10) -> bytes:
    """Send raw bytes over one HTTP/1.1 connection (a client that may not finish); the first answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as conn:
        conn.sendall(head.encode("latin-1") + body)
        return conn.recv(65536)


BOUNDARY = "shipyard-test-boundary"
PART_HEAD = (  # a well-formed multipart start, so only the body's slowness or size can fail it
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="m"\r\n\r\n'.encode()
)


def _signed_head(
    name: str, length: int | str, secret: str = SECRET, legacy: bool = False, digest: str = "0" * 64
) -> str:
    """Request headers signed for a body the client may never finish: the headers' MAC is valid
    (with `secret`), the declared digest is `digest`; `legacy` sends a well-formed deprecated
    body signature instead, which only the whole body could prove."""
    ts = str(int(time.time()))
    kind = f"multipart/form-data; boundary={BOUNDARY}"
    declared = str(length) if isinstance(length, int) else ""
    if legacy:
        signing = f"X-Shipyard-Signature: sha256={'0' * 64}\r\n"
    else:
        signature = sign_request(secret, ts, "POST", f"/v1/models/{name}", declared, kind, digest)
        signing = f"X-Shipyard-Content-SHA256: {digest}\r\nX-Shipyard-Signature: {signature}\r\n"
    size = f"Content-Length: {length}\r\n" if declared else "Transfer-Encoding: chunked\r\n"
    return (
        f"POST /v1/models/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n{size}Content-Type: {kind}\r\n"
        f"X-Shipyard-Timestamp: {ts}\r\n{signing}\r\n"
    )


def _open_slow(port: int, head: str, first: bytes = PART_HEAD) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(head.encode("latin-1") + first)
    return conn


def _wait_spools(service: dict, count: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while len(list(service["spool"].iterdir())) != count and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(list(service["spool"].iterdir()))


def test_unsigned_upload_is_refused_before_its_body_is_read(service: dict) -> None:
    """The answer comes while the client has sent none of its 3 MB body."""
    head = "POST /v1/models/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3000000\r\n\r\n"
    assert _raw(service["port"], head).startswith(b"HTTP/1.1 401")
    assert list(service["spool"].iterdir()) == []


def test_malformed_signature_headers_are_401(service: dict) -> None:
    ts = str(int(time.time()))
    for value in ("sha256=\u00e9" + "0" * 63, "md5=abc", "sha256=" + "A" * 64):
        head = (
            "POST /v1/models/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
            f"X-Shipyard-Timestamp: {ts}\r\nX-Shipyard-Signature: {value}\r\n\r\n"
        )
        assert _raw(service["port"], head, b"{}").startswith(b"HTTP/1.1 401"), value
    status = _get(service["url"], "/v1/runs/00000000-0000-4000-8000-000000000000", signed=False)
    assert status.status_code == 401


def test_uploads_beyond_the_limit_wait_and_spools_never_outlive_them(service: dict) -> None:
    """Two slow signed uploads hold both slots: a third gets 503; when they disconnect, nothing is left."""
    # distinct declared digests: the same signed headers twice would be a replay (409)
    slow = [
        _open_slow(service["port"], _signed_head("slow", 1_000_000, digest=f"{i:064x}")) for i in range(2)
    ]
    assert _wait_spools(service, 2) == 2
    busy = _post(service["url"], "third", b"abc")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
    for conn in slow:
        conn.close()
    assert _wait_spools(service, 0) == 0


def test_slow_forgeries_hold_no_slot_and_delay_no_signed_upload(
    service: dict, models: dict[str, Path]
) -> None:
    """64 connections with a bad MAC that would trickle a 3 MB body get 401 from their headers;
    slow uploads with the deprecated signature fill only their own 4 slots; a good signed upload
    is received meanwhile."""
    forged = [
        _open_slow(service["port"], _signed_head("flood", 3_000_000, secret="x" * 20)) for _ in range(64)
    ]
    legacy = [_open_slow(service["port"], _signed_head("flood", 3_000_000, legacy=True)) for _ in range(4)]
    try:
        for conn in forged:
            assert conn.recv(65536).startswith(b"HTTP/1.1 401")
        assert _wait_spools(service, 4) == 4  # the legacy ones, each in a slot of its own kind
        fifth = _raw(service["port"], _signed_head("flood", 3_000_000, legacy=True), PART_HEAD)
        assert fifth.startswith(b"HTTP/1.1 503")
        started = time.monotonic()
        good = _post(service["url"], "flood", b"not a model")  # judged on its content: received
        assert good.status_code == 422 and "not a recognized model" in good.json()["error"]
        assert time.monotonic() - started < 3  # not waiting for any slot (generous on 2 cores)
    finally:
        for conn in forged + legacy:
            conn.close()
    assert _wait_spools(service, 0) == 0


def test_a_body_slower_than_the_minimum_rate_is_cut_off(service: dict) -> None:
    """Signed correctly but stalling after its first bytes: 408 after the read timeout, nothing kept."""
    conn = _open_slow(service["port"], _signed_head("stall", 200_000))
    try:
        conn.settimeout(30)
        assert conn.recv(65536).startswith(b"HTTP/1.1 408")
    finally:
        conn.close()
    assert _wait_spools(service, 0) == 0


def test_chunked_upload_over_the_cap_is_413_and_leaves_nothing(service: dict) -> None:
    chunk = b"x" * (1 << 20)
    body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in [PART_HEAD] + [chunk] * 6)
    answer = _raw(service["port"], _signed_head("chunky", "chunked"), body + b"0\r\n\r\n", wait_s=30)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert _wait_spools(service, 0) == 0


def test_status_is_only_for_runs_submitted_here(service: dict, prefect_api: str) -> None:
    """A flow run started another way (the UI, the API) is not the webhook's to describe."""
    flow = prefect_post(f"{prefect_api}/flows/", {"name": "not-from-the-webhook"}).json()
    run = prefect_post(f"{prefect_api}/flow_runs/", {"flow_id": flow["id"]}).json()
    answer = _get(service["url"], f"/v1/runs/{run['id']}")
    assert answer.status_code == 404 and "submitted here" in answer.json()["error"]


def test_server_paths_are_dropped_from_status_fields() -> None:
    from flows.webhook import _without_server_paths

    given = {"error": "failed: see /srv/shipyard/work/x1/steps/export.log (exit 1)", "n": [1, "a/b c"]}
    said = _without_server_paths(given)
    assert said == {"error": "failed: see export.log (exit 1)", "n": [1, "a/b c"]}
    assert (
        _without_server_paths("https://example.com/a/b and ./rel/x") == "https://example.com/a/b and ./rel/x"
    )


def test_a_redelivery_after_a_cancelled_run_starts_a_new_one(
    service: dict, prefect_api: str, models: dict[str, Path]
) -> None:
    model = models["multi_io"].read_bytes()
    fields = {"targets": "triton", "spec": json.dumps({"seed": 7})}
    first = _post(service["url"], "retried", model, fields).json()["run_id"]
    cancelled = prefect_post(
        f"{prefect_api}/flow_runs/{flow_run_of(prefect_api, first)}/set_state",
        {"state": {"type": "CANCELLED", "name": "Cancelled"}, "force": True},
    )
    assert cancelled.status_code in (200, 201), cancelled.text
    second = _post(service["url"], "retried", model, fields).json()["run_id"]
    assert second != first
    assert _post(service["url"], "retried", model, fields).json()["run_id"] == second  # still one per try


def test_shipyard_submit_signs_for_the_user(service: dict, models: dict[str, Path], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SHIPYARD_WEBHOOK_SECRET": SECRET,
        "SHIPYARD_WEBHOOK_URL": service["url"],
    }
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "submit", str(models["multi_io"]), "--name", "submitted",
         "--targets", "triton", "--wait", "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["state"] == "COMPLETED" and answer["targets"]["triton"]["status"] == "passed"
    forged = {**env, "SHIPYARD_WEBHOOK_SECRET": "x" * 20}
    wrong = subprocess.run(
        [sys.executable, "-m", "flows.cli", "submit", str(models["multi_io"]), "--name", "submitted"],
        capture_output=True, text=True, env=forged, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 2 and "401" in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.parametrize("kind", ["onnx", "keras", "saved-model"])
def test_onnx_keras_and_saved_model_uploads_run_every_target_that_can_take_them(
    service: dict, models: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    """Detected by content (the upload is called model.pt2); the torch-only targets are skipped."""
    if kind == "onnx":
        model, dim = save_convnet_onnx(models["convnet"], tmp_path / "convnet.onnx"), "N"
    elif kind == "keras":
        model, dim = save_keras_cnn(tmp_path / "cnn.keras"), "batch"
    else:  # a zipped SavedModel folder
        folder = save_saved_model(tmp_path / "saved_model")
        model, dim = Path(shutil.make_archive(str(tmp_path / "sm"), "zip", folder)), "batch"
    spec = json.dumps({"dims": {dim: {"max": 4}}})
    answer = _post(service["url"], f"from-{kind}", model.read_bytes(), {"spec": spec})
    assert answer.status_code == 202, answer.text
    status = _wait_done(service["url"], answer.json()["status_url"])
    assert status["state"] == "COMPLETED", status
    states = {name: t["status"] for name, t in status["targets"].items()}
    assert states == {
        "ort-web": "passed",
        "triton": "passed",
        "tfjs": "passed",
        "litert-int4": "passed",
        "executorch": "skipped",
        "aoti": "skipped",
    }, {n: t["error"] for n, t in status["targets"].items()}
    assert status["version"] == 1


def test_a_status_that_cannot_be_read_is_not_a_failed_upload() -> None:
    """`submit --wait` after a 202: status reads that time out or meet a 5xx (a webhook restarting
    behind its proxy) are tried again, and in the end say the run goes on, not that it failed."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from flows._client import StatusUnreadable, WebhookClient

    reads = []

    class Restarting(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reads.append(self.path)
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "restarting"}')

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Restarting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        client = WebhookClient(url, SECRET, timeout_s=2)
        with pytest.raises(StatusUnreadable, match="restarting") as raised:
            client.wait(f"{url}/v1/runs/00000000-0000-4000-8000-000000000000", poll_s=0.2)
    finally:
        server.shutdown()
    assert len(reads) > 1  # tried again, not given up at the first 503
    assert raised.value.status_url.endswith("/v1/runs/00000000-0000-4000-8000-000000000000")


def test_a_language_model_folder_uploaded_as_an_archive_is_packaged(
    service: dict, tiny_lms: dict[str, Path], tmp_path: Path
) -> None:
    """A Hugging Face folder in a .tar.gz: detected by content, packaged for executorch, proven by
    generation; the targets that build no language model are skipped with the reason."""
    archive = Path(shutil.make_archive(str(tmp_path / "qwen"), "gztar", tiny_lms["qwen3"]))
    answer = _post(service["url"], "tiny-qwen", archive.read_bytes(), {})
    assert answer.status_code == 202, answer.text
    status = _wait_done(service["url"], answer.json()["status_url"])
    assert status["state"] == "COMPLETED", status
    executorch = status["targets"]["executorch"]
    assert executorch["status"] == "passed", executorch["error"]
    assert executorch["metrics"]["token_agreement"] == 1.0
    assert status["targets"]["triton"] == {**status["targets"]["triton"], "status": "skipped"}
    assert "builds no causal-lm model" in status["targets"]["triton"]["error"]
