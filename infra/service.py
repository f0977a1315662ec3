"""`make up` / `make down`: the Shipyard service on 127.0.0.1 without Docker.

Starts PostgreSQL (infra/postgres.py; SQLite only when PostgreSQL cannot start, and `up` says
so), the Prefect server on it (API and UI on :4200), the deployments (`python -m flows.serve`)
and the webhook (:8000). Usage: python -m infra.service up|down|status
Ports: SHIPYARD_PREFECT_PORT (4200), SHIPYARD_WEBHOOK_PORT (8000), SHIPYARD_POSTGRES_PORT (54320).
State (PostgreSQL's data too, kept across down/up), logs and pids live in
SHIPYARD_SERVICE_DIR (default .shipyard/service). The registry is $SHIPYARD_REGISTRY, else a
folder in the state folder. A webhook secret is generated once if SHIPYARD_WEBHOOK_SECRET is unset.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STATE = Path(os.environ.get("SHIPYARD_SERVICE_DIR", ".shipyard/service")).resolve()
PREFECT_PORT = int(os.environ.get("SHIPYARD_PREFECT_PORT", "4200"))
WEBHOOK_PORT = int(os.environ.get("SHIPYARD_WEBHOOK_PORT", "8000"))
POSTGRES_PORT = int(os.environ.get("SHIPYARD_POSTGRES_PORT", "54320"))
PROCESSES = ("prefect", "serve", "webhook")


def _env() -> dict[str, str]:
    secret_file = STATE / "webhook.secret"
    if not os.environ.get("SHIPYARD_WEBHOOK_SECRET") and not secret_file.exists():
        secret_file.write_text(secrets.token_hex(24))
        secret_file.chmod(0o600)
    return {
        **os.environ,
        "PREFECT_HOME": str(STATE / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "SHIPYARD_REGISTRY": os.environ.get("SHIPYARD_REGISTRY", (STATE / "registry").as_uri()),
        "SHIPYARD_HOME": os.environ.get("SHIPYARD_HOME", str(STATE / "home")),
        "SHIPYARD_WEBHOOK_SECRET": os.environ.get("SHIPYARD_WEBHOOK_SECRET") or secret_file.read_text(),
        "SHIPYARD_WEBHOOK_PORT": str(WEBHOOK_PORT),
    }


def _commands() -> dict[str, list[str]]:
    py = sys.executable
    return {
        "prefect": [
            py,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(PREFECT_PORT),
        ],
        "serve": [py, "-m", "flows.serve"],
        "webhook": [py, "-m", "flows.webhook"],
    }


def wait_http(url: str, timeout: float = 180, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll until `url` answers 2xx (True), the process dies or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def _wait(url: str, name: str, timeout: float = 180) -> None:
    if not wait_http(url, timeout):
        raise SystemExit(f"{name} did not answer at {url} in {timeout:.0f}s; see {STATE / (name + '.log')}")


def _pid(name: str) -> int | None:
    path = STATE / f"{name}.pid"
    if not path.exists():
        return None
    pid = int(path.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _database() -> dict[str, str]:
    """Prefect's database setting: PostgreSQL, else SQLite with the reason printed."""
    from infra import postgres

    try:
        url = postgres.start(STATE, POSTGRES_PORT)
    except (postgres.PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        print(f"PostgreSQL could not start ({exc}); Prefect uses SQLite under {STATE / 'prefect'}")
        return {}
    print(
        f"PostgreSQL: 127.0.0.1:{POSTGRES_PORT}, database {postgres.DATABASE}, data in {STATE / 'postgres'}"
    )
    return {"PREFECT_API_DATABASE_CONNECTION_URL": url}


def up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    env, database = _env(), _database()
    for name, cmd in _commands().items():
        if _pid(name):
            print(f"{name} already running (pid {_pid(name)})")
            continue
        log = (STATE / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd,
            env={**env, **database} if name == "prefect" else env,  # only the server sees the DB password
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        (STATE / f"{name}.pid").write_text(str(proc.pid))
        if name == "prefect":
            _wait(f"http://127.0.0.1:{PREFECT_PORT}/api/health", name)
    _wait(f"http://127.0.0.1:{WEBHOOK_PORT}/healthz", "webhook")
    for deployment in ("package-model/package-model", "nightly-reexport/nightly-reexport"):
        _wait(f"http://127.0.0.1:{PREFECT_PORT}/api/deployments/name/{deployment}", "serve")
    print(f"Prefect UI and API: http://127.0.0.1:{PREFECT_PORT} (API under /api)")
    print(
        f"Webhook: http://127.0.0.1:{WEBHOOK_PORT}  (secret in {STATE / 'webhook.secret'} "
        "unless SHIPYARD_WEBHOOK_SECRET is set)"
    )
    print(f"Registry: {env['SHIPYARD_REGISTRY']}; logs in {STATE}")


def down() -> None:
    from infra import postgres

    for name in reversed(PROCESSES):
        pid = _pid(name)
        if pid:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(60):
                if _pid(name) is None:
                    break
                time.sleep(0.5)
            else:
                os.killpg(pid, signal.SIGKILL)
            print(f"stopped {name} (pid {pid})")
        (STATE / f"{name}.pid").unlink(missing_ok=True)
    if postgres.stop(STATE):
        print(f"stopped postgres (its data stays in {STATE / 'postgres'})")


def status() -> None:
    from infra import postgres

    for name in PROCESSES:
        pid = _pid(name)
        print(f"{name:<8} {'running, pid ' + str(pid) if pid else 'stopped'}")
    print(f"{'postgres':<8} {'running' if postgres.running(STATE) else 'stopped'}")


if __name__ == "__main__":
    {"up": up, "down": down, "status": status}[sys.argv[1] if len(sys.argv) > 1 else "status"]()
