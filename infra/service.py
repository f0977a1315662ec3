"""`make up` / `make worker` / `make down`: the Shipyard service on 127.0.0.1 without Docker.

`up` starts, in order: PostgreSQL (infra/postgres.py; SQLite only when PostgreSQL cannot start,
and `up` says so), SeaweedFS as the S3 registry (unless SHIPYARD_REGISTRY names another), the
Prefect server on PostgreSQL (API and UI on :4200), registers the work pool, deployments and
automations (`python -m flows.deploy`), then one worker (infra/worker.py) and the webhook (:8000).
`worker` adds one more worker; each worker has a home folder of its own, since nothing a run
needs may live on one machine's disk. Usage: python -m infra.service up|worker|down|status

Ports: SHIPYARD_PREFECT_PORT (4200), SHIPYARD_WEBHOOK_PORT (8000), SHIPYARD_POSTGRES_PORT (54320),
SHIPYARD_S3_PORT (8333). State (PostgreSQL's and SeaweedFS's data too, kept across down/up),
logs and pids live in SHIPYARD_SERVICE_DIR (default .shipyard/service). A webhook secret, S3
keys and the Prefect API's auth string are generated once unless SHIPYARD_WEBHOOK_SECRET /
AWS_ACCESS_KEY_ID / PREFECT_API_AUTH_STRING are set; the Prefect server refuses every API call
without that auth string (the UI asks for it), and workers, deploy and the webhook send it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from infra._pidfile import live_pid, write_pid
from infra._secrets import stored_secret
from shipyard.settings import env_name, settings

_SETTINGS = settings()  # read once: the service's folder and ports are fixed for its life
STATE = _SETTINGS.service_dir.resolve()
PREFECT_PORT = _SETTINGS.prefect_port
WEBHOOK_PORT = _SETTINGS.webhook_port
POSTGRES_PORT = _SETTINGS.postgres_port
S3_PORT = _SETTINGS.s3_port
BUCKET = "shipyard"


def _secret(name: str, given: str | None) -> str:
    """`given`, else a secret generated once into the state folder (mode 0600)."""
    return given or stored_secret(STATE / name)


def _own_s3() -> bool:
    return not settings().registry


def prefect_auth_string(state: Path = STATE) -> str:
    """`user:password` of the Prefect API (HTTP basic auth): $PREFECT_API_AUTH_STRING, else
    `shipyard:<secret generated once into the state folder>`."""
    return (
        os.environ.get("PREFECT_API_AUTH_STRING") or f"shipyard:{stored_secret(state / 'prefect-api.secret')}"
    )


def _env() -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(STATE / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        env_name("home"): os.environ.get(env_name("home"), str(STATE / "home")),  # the service's own default
        env_name("webhook_secret"): _secret("webhook.secret", settings().webhook_secret),
        env_name("webhook_port"): str(WEBHOOK_PORT),
        "PREFECT_API_AUTH_STRING": prefect_auth_string(),
    }
    if _own_s3():
        env.update(
            {
                env_name("registry"): f"s3://{BUCKET}/registry",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
                "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID") or "shipyard",
                "AWS_SECRET_ACCESS_KEY": _secret("s3.secret", os.environ.get("AWS_SECRET_ACCESS_KEY")),
                "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            }
        )
    return env


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
    return live_pid(STATE / f"{name}.pid")


def _start(name: str, cmd: list[str], env: dict[str, str]) -> None:
    """Start `cmd` in its own session, logging to <name>.log, unless it already runs."""
    if _pid(name):
        print(f"{name} already running (pid {_pid(name)})")
        return
    with (STATE / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    write_pid(STATE / f"{name}.pid", proc.pid)


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


def _seaweedfs_ports() -> dict[str, int]:
    """Its internal ports, chosen once and kept (its data remembers where its volumes were)."""
    from infra.seaweed import internal_ports

    path = STATE / "seaweedfs.ports.json"
    if not path.exists():
        path.write_text(json.dumps(internal_ports()))
    ports: dict[str, int] = json.loads(path.read_text())
    return ports


def _start_seaweedfs(env: dict[str, str]) -> None:
    from infra.seaweed import start_seaweedfs, wait_for_s3

    if not _pid("seaweedfs"):
        proc = start_seaweedfs(
            STATE / "seaweedfs", S3_PORT, BUCKET, STATE / "seaweedfs.log", _seaweedfs_ports(), env
        )
        write_pid(STATE / "seaweedfs.pid", proc.pid)
    wait_for_s3(env["AWS_ENDPOINT_URL"], BUCKET, env=env, log=STATE / "seaweedfs.log")
    print(f"SeaweedFS S3: {env['AWS_ENDPOINT_URL']}, registry {env['SHIPYARD_REGISTRY']}")


def _worker_names() -> list[str]:
    return sorted(p.stem for p in STATE.glob("worker-*.pid"))


def start_worker(env: dict[str, str], name: str | None = None) -> str:
    """One more worker (worker-1, worker-2, ...), with its own home folder."""
    if name is None:
        name = next(f"worker-{i}" for i in itertools.count(1) if not _pid(f"worker-{i}"))
    home = STATE / name
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    worker_env = {**env, env_name("home"): str(home / "home"), "PREFECT_HOME": str(home / "prefect")}
    _start(name, [sys.executable, "-m", "infra.worker", "--name", name], worker_env)
    return name


def up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    env, database = _env(), _database()
    if _own_s3():
        _start_seaweedfs(env)
    # only the server sees the DB password; it refuses every API call without the auth string
    server_env = {**env, **database, "PREFECT_SERVER_API_AUTH_STRING": env["PREFECT_API_AUTH_STRING"]}
    _start("prefect", _prefect_server(), server_env)
    _wait(f"http://127.0.0.1:{PREFECT_PORT}/api/health", "prefect")
    with (STATE / "deploy.log").open("ab") as log:
        done = subprocess.run(
            [sys.executable, "-m", "flows.deploy"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise SystemExit(f"registering the deployments failed; see {STATE / 'deploy.log'}")
    if not _worker_names() or not any(_pid(n) for n in _worker_names()):
        start_worker(env, "worker-1")
    _start("webhook", [sys.executable, "-m", "flows.webhook"], env)
    _wait(f"http://127.0.0.1:{WEBHOOK_PORT}/healthz", "webhook")
    print(
        f"Prefect UI and API: http://127.0.0.1:{PREFECT_PORT} (API under /api); work pool 'shipyard'; "
        f"login (PREFECT_API_AUTH_STRING) in {STATE / 'prefect-api.secret'} as shipyard:<secret>"
    )
    print(f"Workers: {', '.join(n for n in _worker_names() if _pid(n))}; `make worker` adds one")
    print(
        f"Webhook: http://127.0.0.1:{WEBHOOK_PORT}  (secret in {STATE / 'webhook.secret'} "
        "unless SHIPYARD_WEBHOOK_SECRET is set)"
    )
    print(f"Registry: {env['SHIPYARD_REGISTRY']}; logs in {STATE}")


def worker() -> None:
    if not wait_http(f"http://127.0.0.1:{PREFECT_PORT}/api/health", 5):
        raise SystemExit("the Prefect server is not running; `make up` first")
    print(f"started {start_worker(_env())}")


def _prefect_server() -> list[str]:
    server = [sys.executable, "-m", "prefect", "server", "start"]
    return [*server, "--host", "127.0.0.1", "--port", str(PREFECT_PORT)]


def _stop(name: str) -> None:
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


def down() -> None:
    from infra import postgres

    for name in ["webhook", *_worker_names(), "prefect", "seaweedfs"]:
        _stop(name)
    if postgres.stop(STATE):
        print(f"stopped postgres (its data stays in {STATE / 'postgres'})")


def status() -> None:
    from infra import postgres

    for name in ["prefect", "seaweedfs", *_worker_names(), "webhook"]:
        pid = _pid(name)
        print(f"{name:<10} {'running, pid ' + str(pid) if pid else 'stopped'}")
    print(f"{'postgres':<10} {'running' if postgres.running(STATE) else 'stopped'}")


if __name__ == "__main__":
    commands = {"up": up, "worker": worker, "down": down, "status": status}
    command = sys.argv[1] if len(sys.argv) > 1 else "status"
    if command not in commands:
        raise SystemExit(f"usage: python -m infra.service {'|'.join(commands)}")
    commands[command]()
