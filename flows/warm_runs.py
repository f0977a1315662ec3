"""Flow runs forked from a warm process of their worker, instead of a fresh interpreter each.

A flow run on Prefect's process worker is `python -m prefect.engine` in a new interpreter, which
spends ~1.3 s of CPU importing Prefect and Shipyard before the run's first step: most of what a
small model's flow run cost beyond `shipyard package` (bench/service.py). Each Shipyard worker
(infra/worker.py) therefore starts one warm server that has imported them, and the worker's run
command is this module's launcher:

    python -m flows.warm_runs run        (the flow run's process, as Prefect sees it)
    python -m flows.warm_runs serve SOCK (the worker's warm server; exits when stdin closes)

The launcher imports nothing heavy. It hands the server its environment, working folder and
stdin/stdout/stderr (SCM_RIGHTS over a Unix socket in the user's private runtime folder),
the server forks a child that runs `prefect.engine` exactly as `python -m` would (settings read
again from that environment), and the launcher forwards SIGTERM/SIGINT to it and exits with its
exit code. So Prefect's cancellation, output streaming and exit codes see what they would see
with a fresh interpreter. The child dies with the server, and its process group is killed when
the launcher goes away (even by SIGKILL). Without a server (none started, or its socket gone) the
launcher becomes `python -m prefect.engine` itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from typing import Any, NoReturn

from shipyard.json_lines import JsonLines, send_json_line

__all__ = ["FORKED_ENV", "SERVER_ENV", "launcher_command", "main", "process_origin"]

SERVER_ENV = "SHIPYARD_FLOW_SERVER"  # the socket of the worker's warm server
FORKED_ENV = "SHIPYARD_FLOW_FORKED_FROM"  # set in a forked run: the warm server's pid
PRELOAD = ("prefect.engine", "prefect.flow_engine", "flows.package", "flows.nightly")


def launcher_command() -> str:
    return f"{sys.executable} -m flows.warm_runs run"


def process_origin() -> str:
    """How this flow run's process started, for its log."""
    server = os.environ.get(FORKED_ENV)
    return f"forked from the worker's warm server (pid {server})" if server else "a fresh interpreter"


# -- the launcher (the flow run's process) ---------------------------------------------------


def _cold() -> NoReturn:
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine"])


def run() -> int:
    """Ask the warm server for a forked flow run process; wait for it and return its exit code."""
    path = os.environ.get(SERVER_ENV)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not path:
            raise OSError("no warm server")
        conn.connect(path)
        request = json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}).encode() + b"\n"
        socket.send_fds(conn, [request], [0, 1, 2])
        lines = JsonLines(conn)
        started = lines.next()
    except OSError:
        started = None
    if not started or "pid" not in started:
        conn.close()
        _cold()  # does not return
    pid = int(started["pid"])

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    ended = lines.next()  # recv() resumes by itself after a forwarded signal (PEP 475)
    return 70 if ended is None else int(ended["exit"])  # None: the server died, its runs with it


# -- the server (one per worker) ---------------------------------------------------------------


def _run_engine(request: dict[str, Any], fds: list[int], server_pid: int) -> int:
    """In the forked child: become the flow run's process and run Prefect's engine."""
    import runpy

    from prefect.context import refresh_global_settings_context

    from targets.engine.child import die_with_parent

    os.setsid()  # its own group: killed as a whole when the launcher goes away
    die_with_parent()
    if os.getppid() != server_pid:
        return 70
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[FORKED_ENV] = str(server_pid)
    refresh_global_settings_context()  # Prefect's settings come from this run's environment
    sys.argv = ["prefect.engine"]
    sys.modules.pop("prefect.engine", None)  # preloaded for its imports; run afresh as __main__
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


def _fork_run(conn: socket.socket, server_pid: int, servers_fds: list[int]) -> int | None:
    """Read one request and fork its flow run process; its pid, or None for a bad request."""
    conn.settimeout(10)
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    conn.settimeout(None)
    try:
        request = json.loads(data.partition(b"\n")[0])
        if len(fds) != 3 or not isinstance(request.get("env"), dict):
            return None
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)  # the server's signal plumbing is not the run's
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (conn.fileno(), *servers_fds):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                code = _run_engine(request, fds, server_pid)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        return pid
    finally:
        for fd in fds:
            os.close(fd)


def serve(path: str) -> None:
    """Import Prefect and the flows, then fork a flow run process per request until stdin closes."""
    import importlib
    import selectors

    for module in PRELOAD:
        importlib.import_module(module)
    server_pid = os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        if os.path.exists(path):
            os.unlink(path)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(64)
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "accept")
        selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
        clients: dict[int, socket.socket] = {}  # child pid -> its launcher's connection
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)  # select() is retried after a signal: a byte here wakes it
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector.register(wake_read, selectors.EVENT_READ, "wake")
        selector_fd = selector.fileno()
        try:
            while True:
                for key, _ in selector.select(timeout=5.0):
                    if key.data == "wake":
                        os.read(wake_read, 4096)
                    elif key.data == "stdin":
                        if not os.read(sys.stdin.fileno(), 4096):
                            return  # the worker went away
                    elif key.data == "accept":
                        conn, _ = listener.accept()
                        servers_fds = [listener.fileno(), selector_fd, wake_read, wake_write]
                        servers_fds += [c.fileno() for c in clients.values()]
                        pid = _fork_run_safely(conn, server_pid, servers_fds)
                        if pid is None:  # not a flow run request
                            conn.close()
                            continue
                        try:
                            send_json_line(conn, {"pid": pid})
                        except OSError:  # its launcher is gone already
                            _kill_group(pid)
                            conn.close()
                            continue
                        clients[pid] = conn
                        selector.register(conn, selectors.EVENT_READ, pid)
                    elif not key.fileobj.recv(4096):  # type: ignore[union-attr]
                        selector.unregister(key.fileobj)  # its launcher was killed: so is its run
                        _kill_group(key.data)
                _reap(clients, selector)
        finally:
            for pid in clients:
                _kill_group(pid)
            os.unlink(path)


def _fork_run_safely(conn: socket.socket, server_pid: int, servers_fds: list[int]) -> int | None:
    try:
        return _fork_run(conn, server_pid, servers_fds)
    except (OSError, ValueError):
        return None


def _kill_group(pid: int) -> None:
    """The run's process group, and the run itself in case it has not made its group yet (safe:
    only called for a run not yet reaped, so its pid cannot belong to another process; unlike
    targets.engine.workers._kill_group, which also kills groups of reaped steps)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _reap(clients: dict[int, socket.socket], selector: Any) -> None:
    """Tell each ended run's launcher its exit code (a run killed by a signal: 128 + signal)."""
    from targets.engine.child import ended_children

    for pid, status in ended_children():
        conn = clients.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if conn.fileno() in selector.get_map():
            selector.unregister(conn)
        with contextlib.suppress(OSError):  # its launcher is gone
            send_json_line(conn, {"exit": code if code >= 0 else 128 - code})
        conn.close()


def main() -> None:
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 3:
        serve(sys.argv[2])
    elif sys.argv[1:] == ["run"]:
        sys.exit(run())
    else:
        raise SystemExit("usage: python -m flows.warm_runs serve SOCKET | run")


if __name__ == "__main__":
    main()
