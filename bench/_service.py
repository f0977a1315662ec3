"""The service as `make up` / `make worker` start it, for the benchmarks: a temp state folder, free ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["RunningService", "running_service"]


@dataclass
class RunningService:
    api: str
    webhook: str
    env: dict[str, str]
    database: str  # PostgreSQL, or SQLite when PostgreSQL could not start

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
            workers = httpx.post(f"{self.api}/work_pools/shipyard/workers/filter", json={}, timeout=30).json()
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
    }
    for key in ("PREFECT_API_URL", "SHIPYARD_REGISTRY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key, None)
    service = RunningService(
        api=f"http://127.0.0.1:{ports['PREFECT']}/api",
        webhook=f"http://127.0.0.1:{ports['WEBHOOK']}",
        env={**env, "PREFECT_API_URL": f"http://127.0.0.1:{ports['PREFECT']}/api"},
        database="SQLite",
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
