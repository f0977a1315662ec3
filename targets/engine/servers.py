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

from shipyard.json_lines import JsonLines, send_json_line
from shipyard.runtime_dir import runtime_dir
from shipyard.settings import settings
from targets.engine.family import Family
from targets.engine.fingerprint import code_digest, installed_versions
from targets.engine.limits import total_memory_mb

__all__ = [
    "NoRoomForServer",
    "RunningServer",
    "ServerStatus",
    "find_or_start",
    "idle_exit_s",
    "max_warm_servers",
    "ping",
    "running_servers",
    "runtime_dir",
    "server_status",
    "stop_servers",
]

START_TIMEOUT_S = 60.0  # until "ready": the server answers before it imports anything heavy
MAX_LOG_BYTES = 10 * 1024 * 1024


def idle_exit_s() -> float:
    """How long a shared server waits for work before it exits; 0: no shared servers."""
    return max(0.0, settings().warm_idle_s)  # a value that is no number counts as unset


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


@dataclass(frozen=True)
class ServerStatus:
    pid: int
    running: int  # steps running now
    idle_s: float  # since its last step request or step end
    retired: bool = False  # it agreed to exit (asked with retire=True, and no step ran)


def server_status(path: Path, timeout: float = 5.0, retire: bool = False) -> ServerStatus | None:
    """What the server listening at `path` says of itself (None if nothing answers); `retire`
    asks it to exit if no step runs."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(path))
            send_json_line(conn, {"retire": True} if retire else {"ping": True})
            said = JsonLines(conn).next()
        if said is None:
            return None
        # a server of an older version says only its pid: taken as busy, never retired
        return ServerStatus(
            int(said["pong"]),
            int(said.get("running", 1)),
            float(said.get("idle_s", 0)),
            bool(said.get("retired")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ping(path: Path, timeout: float = 5.0) -> int | None:
    """The pid of the server listening at `path`, or None if nothing answers."""
    status = server_status(path, timeout)
    return status.pid if status else None


def max_warm_servers() -> int:
    """$SHIPYARD_MAX_WARM_SERVERS, else one per 3 GB of this machine's memory (at least 2):
    each holds a toolchain (0.4-0.5 GB) and lends it to the steps it forks."""
    if (explicit := settings().max_warm_servers) is not None:
        return max(1, explicit)
    return max(2, total_memory_mb() // 3072)


def _make_room(folder: Path, starting: str) -> bool:
    """Retire idle servers, longest idle first, until one more fits under max_warm_servers();
    False when every other server is busy and none fits."""
    others = [(p, st) for p in folder.glob("*.sock") if p.stem != starting and (st := server_status(p, 2.0))]
    excess = len(others) + 1 - max_warm_servers()
    for path, _ in sorted((o for o in others if o[1].running == 0), key=lambda o: -o[1].idle_s):
        if excess <= 0:
            break
        answer = server_status(path, 2.0, retire=True)
        excess -= 1 if answer is not None and answer.retired else 0
    return excess <= 0


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


class NoRoomForServer(Exception):
    """Every warm server this user may have is busy: the step runs cold instead."""


def find_or_start(family: Family, environment: dict[str, str]) -> Path | None:
    """The socket of this family's shared server, started if none runs (retiring idle ones to stay
    within max_warm_servers()); None if it cannot be; NoRoomForServer if all are busy."""
    folder = runtime_dir()
    if folder is None:
        return None
    name = server_name(family, environment)
    path = folder / f"{name}.sock"
    if ping(path):
        return path
    with _locked(folder / f"{name}.lock"):  # one run starts it; the others wait, then find it
        if ping(path):
            return path
        with _locked(folder / "servers.lock"):  # the count of live servers is checked by one at a time
            if not _make_room(folder, name):
                raise NoRoomForServer(
                    f"{max_warm_servers()} warm servers are busy (SHIPYARD_MAX_WARM_SERVERS)"
                )
            if _start(family, path, environment, idle_exit_s(), folder / f"{name}.log"):
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
