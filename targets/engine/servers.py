"""Shared warm servers: found by their socket, started by the first run that needs one.

A shared server (`targets.engine.forkserver --idle-exit S`) outlives the run that started it, so
the next run, the next `shipyard` command or the next flow run on this machine forks its steps
from a process that has imported the toolchain already. It serves only runs that would make
the same bytes: its socket's name holds a digest of the Python interpreter, Shipyard's own code,
every installed distribution's version and the step environment, so after an upgrade or an edit
a run starts a new server and the old one exits when idle. It exits after `SHIPYARD_WARM_IDLE_S`
seconds (default 900) without a request or a running step; `SHIPYARD_WARM_IDLE_S=0` keeps
servers private to each run, stopped when it ends.

The sockets live in a private folder of this user: `$SHIPYARD_RUNTIME_DIR`, else
`$XDG_RUNTIME_DIR/shipyard`, else `<tmp>/shipyard-<uid>`. A folder that another user owns or
others can enter is refused (the run then uses servers of its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shipyard.runtime_dir import runtime_dir
from targets._formats import Family
from targets.engine.fingerprint import code_digest, installed_versions

__all__ = [
    "RunningServer",
    "find_or_start",
    "idle_exit_s",
    "ping",
    "running_servers",
    "runtime_dir",
    "stop_servers",
]

DEFAULT_IDLE_S = 900.0
START_TIMEOUT_S = 60.0  # until "ready": the server answers before it imports anything heavy
MAX_LOG_BYTES = 10 * 1024 * 1024


def idle_exit_s() -> float:
    """How long a shared server waits for work before it exits; 0: no shared servers."""
    try:
        return max(0.0, float(os.environ.get("SHIPYARD_WARM_IDLE_S", DEFAULT_IDLE_S)))
    except ValueError:
        return DEFAULT_IDLE_S


def _installed() -> str:
    """Every installed distribution and its version, as one digest."""
    names = sorted(f"{name}=={version}" for name, version in installed_versions().items())
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def server_name(family: Family, environment: dict[str, str]) -> str:
    """`<family>-<digest>`: the same name means a server that makes the same bytes."""
    material = {
        "family": family.value,
        "python": sys.executable,
        "code": code_digest(),
        "installed": _installed(),
        "environment": environment,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return f"{family.value}-{digest[:24]}"


def ping(path: Path, timeout: float = 5.0) -> int | None:
    """The pid of the server listening at `path`, or None if nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(path))
            conn.sendall(b'{"ping": true}\n')
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    return None
                answer += chunk
        return int(json.loads(answer)["pong"])
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_log(path: Path) -> int:
    with contextlib.suppress(OSError):
        if path.stat().st_size > MAX_LOG_BYTES:
            path.unlink()
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)


def _start(family: Family, path: Path, environment: dict[str, str], idle_s: float, log: Path) -> bool:
    """Start a detached server at `path`; True once it said it is ready."""
    path.unlink(missing_ok=True)
    log_fd = _open_log(log)
    try:
        command = [sys.executable, "-m", "targets.engine.forkserver", family, str(path)]
        process = subprocess.Popen(
            [*command, "--idle-exit", str(idle_s)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            env=environment,
            cwd=path.parent,  # never a run's folder, which may be deleted while it runs
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    assert process.stdout is not None
    with process.stdout:
        process.wait()  # the launcher exits as soon as the server has detached from it
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        return bool(ready) and process.stdout.readline().strip() == b"ready"


def find_or_start(family: Family, environment: dict[str, str]) -> Path | None:
    """The socket of this family's shared server, started if none runs; None if it cannot be."""
    folder = runtime_dir()
    if folder is None:
        return None
    name = server_name(family, environment)
    path = folder / f"{name}.sock"
    if ping(path):
        return path
    with _locked(folder / f"{name}.lock"):  # one run starts it; the others wait, then find it
        if ping(path) or _start(family, path, environment, idle_exit_s(), folder / f"{name}.log"):
            return path
    return None


@dataclass(frozen=True)
class RunningServer:
    name: str  # <family>-<digest of what it serves>
    pid: int
    socket: Path
    started_at: float  # unix time

    def rss_mb(self) -> int | None:
        """Resident memory (shared with the steps it forks), if the process can be read."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        return int(status.split("VmRSS:")[1].split()[0]) // 1024 if "VmRSS:" in status else None


def running_servers() -> list[RunningServer]:
    """Every shared server of this user that answers."""
    folder = runtime_dir(create=False)
    if folder is None:
        return []
    found = []
    for path in sorted(folder.glob("*.sock")):
        pid = ping(path, timeout=2.0)
        if pid is not None:
            found.append(RunningServer(path.stem, pid, path, path.stat().st_mtime))
        else:
            path.unlink(missing_ok=True)  # a server that died without cleaning up
    return found


def stop_servers(timeout: float = 15.0) -> list[RunningServer]:
    """Stop every shared server of this user (their running steps are killed); returns them."""
    servers = running_servers()
    for server in servers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, 15)
    deadline = time.monotonic() + timeout
    for server in servers:
        while server.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return servers
