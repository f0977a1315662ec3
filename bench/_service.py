"""The service as `make up` / `make worker` start it, for the benchmarks: a temp state folder, free ports."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["FINAL", "RunningService", "running_service"]

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class RunningService:
    api: str
    webhook: str
    env: dict[str, str]
    database: str  # PostgreSQL, or SQLite when PostgreSQL could not start
    auth: tuple[str, str]  # the Prefect API's basic auth (user, password)
    webhook_secret: str
    registry: str = "s3://shipyard/registry"  # the service's SeaweedFS; registry_env reaches it

    @property
    def registry_env(self) -> dict[str, str]:
        """What a process needs to use the service's registry and its workers' warm servers."""
        keys = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
        return {k: self.env[k] for k in (*keys, "SHIPYARD_RUNTIME_DIR")}

    def prefect(self, path: str, body: dict[str, Any]) -> Any:
        """POST to the Prefect API (it refuses calls without the service's auth string)."""
        answer = httpx.post(f"{self.api}{path}", json=body, timeout=30, auth=self.auth)
        answer.raise_for_status()
        return answer.json()

    def submit(self, name: str, model: bytes, targets: str) -> str:
        """A signed upload of `model` for `targets` to the webhook; the submission's run id."""
        from flows.signing import signed_body_headers

        path = f"/v1/models/{name}"
        request = httpx.Request(
            "POST", f"{self.webhook}{path}", files={"file": ("m.pt2", model)}, data={"targets": targets}
        )
        body = request.read()
        content_type = request.headers["Content-Type"]
        signing = signed_body_headers(self.webhook_secret, "POST", path, body, content_type)
        answer = httpx.post(request.url, content=body, headers={**request.headers, **signing}, timeout=120)
        answer.raise_for_status()
        return str(answer.json()["run_id"])

    def flow_runs(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """The Prefect flow runs the webhook started for these submissions (their idempotency keys)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(run_ids), 200):
            chunk = run_ids[start : start + 200]
            found += self.prefect(
                "/flow_runs/filter", {"flow_runs": {"idempotency_key": {"any_": chunk}}, "limit": len(chunk)}
            )
        return found

    def wait_final(self, run_ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        """The submissions' flow runs once every one is in a final state."""
        deadline = time.monotonic() + timeout_s
        while True:
            runs = self.flow_runs(run_ids)
            if len(runs) == len(run_ids) and all(r["state"]["type"] in FINAL for r in runs):
                return runs
            if time.monotonic() > deadline:
                done = sum(r["state"]["type"] in FINAL for r in runs)
                raise TimeoutError(f"{done} of {len(run_ids)} runs final after {timeout_s:.0f} s")
            time.sleep(1)

    def command(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr[-3000:])
        return done.stdout

    def wait_online(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = self.prefect("/work_pools/shipyard/workers/filter", {})
            if sum(1 for w in workers if w["status"] == "ONLINE") >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"{count} workers not online after {timeout} s")


@contextmanager
def running_service(workers: int, webhook_secret: str) -> Iterator[RunningService]:
    """`infra.service up` (+ `worker` until there are `workers`), stopped and removed afterwards."""
    from infra.seaweed import free_port

    state = Path(tempfile.mkdtemp(prefix="shipyard-bench-service-"))
    state.chmod(0o755)  # as root, PostgreSQL runs as a system user that must reach its data
    ports = {k: free_port() for k in ("PREFECT", "WEBHOOK", "POSTGRES", "S3")}
    env = {
        **os.environ,
        "SHIPYARD_SERVICE_DIR": str(state / "service"),
        **{f"SHIPYARD_{k}_PORT": str(v) for k, v in ports.items()},
        "SHIPYARD_WEBHOOK_SECRET": webhook_secret,
        "SHIPYARD_RUNTIME_DIR": str(state / "run"),  # its warm servers, apart from the user's own
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['S3']}",
        "AWS_ACCESS_KEY_ID": "shipyard",
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key in ("PREFECT_API_URL", "SHIPYARD_REGISTRY"):
        env.pop(key, None)
    auth = ("shipyard", secrets.token_hex(16))
    env["PREFECT_API_AUTH_STRING"] = ":".join(auth)
    service = RunningService(
        api=f"http://127.0.0.1:{ports['PREFECT']}/api",
        webhook=f"http://127.0.0.1:{ports['WEBHOOK']}",
        env={**env, "PREFECT_API_URL": f"http://127.0.0.1:{ports['PREFECT']}/api"},
        database="SQLite",
        auth=auth,
        webhook_secret=webhook_secret,
    )
    try:
        started = service.command("infra.service", "up")
        service.database = "PostgreSQL" if "PostgreSQL: " in started else "SQLite"
        for _ in range(workers - 1):
            service.command("infra.service", "worker")
        service.wait_online(workers)
        yield service
    finally:
        subprocess.run(
            [sys.executable, "-m", "infra.service", "down"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=300,
        )
        shutil.rmtree(state, ignore_errors=True)
