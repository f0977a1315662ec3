"""The warm process server: imports the toolchains once, then forks one process per step.

Run by `targets.engine.workers` as `python -m targets.engine.forkserver FAMILY SOCKET_PATH
[--idle-exit SECONDS]`, one server per toolchain family (torch, tf), so torch steps never wait
behind TensorFlow's import. It listens on a Unix socket in a private (0700) folder. A client
connects, sends one JSON line (function, job, result and log paths, memory cap, working folder),
gets `{"pid": N}` back as soon as the step process exists, and `{"status": S}` (a waitpid
status) when it has ended. `{"ping": true}` is answered with `{"pong": PID, "running": N,
"idle_s": S}`; `{"retire": true}` the same, plus `"retired"`: whether it exits now (only when
no step runs). Neither counts as activity for the idle exit.

Two lifetimes. Owned by one run (no --idle-exit): it stops when its parent goes away (stdin
closes). Shared (--idle-exit): it detaches, serves every run of this user with the same code,
toolchain and step environment (targets.engine.servers finds it by its socket), and exits
after SECONDS without a request or a running step. Either way, a step whose client went away
(the run was killed or interrupted) is killed with its whole process group.

The server imports modules in the order steps need them (torch first, TensorFlow later) and
serves requests in between, so the first step never waits for the whole toolchain; a step
forked early imports what is still missing itself. It only imports (and probes the compiler);
it never runs a model, so no toolchain has started the thread pools that make forking unsafe.

A forked step process: starts its own session (so its whole group can be killed), dies with
the server (PR_SET_PDEATHSIG), writes stdout/stderr to its log, then runs
`targets.engine.child.execute_step`, which caps its memory growth before the step runs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from shipyard.json_lines import JsonLines, send_json_line
from shipyard.settings import settings

__all__ = ["main", "preload"]

# Imported first by every server, before the catalog says what its family's steps need
_COMMON = ("numpy", "pydantic", "targets")


def preload(family: str) -> list[str]:
    """What a family's server imports while it is idle: `_COMMON`, then every module its steps
    declare they need in the catalog (targets.engine.graph.warm_modules; "module:function" also
    calls a warm-up function that runs no model). A request names what its step needs (its `warm`
    list): the server loads that first, then forks."""
    from targets.engine.family import Family
    from targets.engine.graph import warm_modules

    return [*_COMMON, *warm_modules(Family(family))]


def _run_in_child(request: dict[str, Any], server_pid: int) -> int:
    """Everything a step process does between fork and exit; returns the exit code."""
    from targets.engine.child import die_with_parent, execute_step

    os.setsid()
    die_with_parent()
    if os.getppid() != server_pid:  # the server died between fork and prctl
        return 70
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.chdir(request["cwd"])
    memory_mb = request.get("memory_mb")
    return execute_step(request["function"], Path(request["job"]), Path(request["result"]), memory_mb)


def _read_request(conn: socket.socket) -> dict[str, Any]:
    conn.settimeout(10)
    request = JsonLines(conn).next()
    if request is None:
        raise ConnectionError("client closed before sending a request")
    return request


def _load(name: str, loaded: set[str], pending: list[str]) -> None:
    """Import a module (and call its warm-up function) once."""
    if name in loaded:
        return
    loaded.add(name)
    if name in pending:
        pending.remove(name)
    module, _, function = name.partition(":")
    try:
        imported = importlib.import_module(module)
        if function:
            getattr(imported, function)()
    except Exception as exc:  # a missing toolchain is the step's problem, not the server's
        print(f"forkserver: preloading {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


class _Server:
    """The select loop: accept requests, fork steps, reap them, preload while idle."""

    def __init__(self, family: str, socket_path: str, idle_exit_s: float | None) -> None:
        self.socket_path = socket_path
        self.idle_exit_s = idle_exit_s
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(socket_path)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.socket_inode = os.stat(socket_path).st_ino
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: None)  # seen through the wake-up fd
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "signal")
        if idle_exit_s is None:
            self.selector.register(sys.stdin, selectors.EVENT_READ, "parent")
        self.children: dict[int, socket.socket] = {}  # step pid -> its client's connection
        self.pending = preload(family) if not settings().no_preload else []
        self.loaded: set[str] = set()
        self.last_active = time.monotonic()
        self.stopping = False

    # steps ------------------------------------------------------------------
    def _fork_step(self, conn: socket.socket, request: dict[str, Any]) -> None:
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                self.selector.close()
                for item in (self.listener, self.wake_r, self.wake_w, conn, *self.children.values()):
                    item.close()
                signal.set_wakeup_fd(-1)
                for signum in (signal.SIGCHLD, signal.SIGTERM):
                    signal.signal(signum, signal.SIG_DFL)
                code = _run_in_child(request, server_pid)
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.children[pid] = conn
        send_json_line(conn, {"pid": pid})
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, pid)  # EOF: the client went away

    def _reap(self) -> None:
        from targets.engine.child import ended_children

        for pid, status in ended_children():
            conn = self.children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(conn)
                with contextlib.suppress(OSError):
                    conn.setblocking(True)
                    send_json_line(conn, {"status": status})
                conn.close()
            self.last_active = time.monotonic()

    def _client_gone(self, conn: socket.socket, pid: int) -> None:
        """The client of a running step closed its end: nobody waits for the step, so kill it."""
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn)
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    def _kill_children(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)

    # requests ---------------------------------------------------------------
    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            conn, _ = self.listener.accept()
            try:
                request = _read_request(conn)
                if request.get("ping") or request.get("retire"):  # no activity: idle time goes on
                    send_json_line(conn, self._answer_status(request))
                    conn.close()
                    return
                self.last_active = time.monotonic()
                for name in request.get("warm") or ():
                    _load(name, self.loaded, self.pending)
                self._fork_step(conn, request)
            except (OSError, ValueError, ConnectionError) as exc:
                print(f"forkserver: bad request: {exc}", file=sys.stderr)
                conn.close()

    def _answer_status(self, request: dict[str, Any]) -> dict[str, Any]:
        """Pid, running steps and idle seconds; a `retire` request also ends an idle server (between
        two requests of this loop, so never one that has just forked a step)."""
        answer = {
            "pong": os.getpid(),
            "running": len(self.children),
            "idle_s": time.monotonic() - self.last_active,
        }
        if request.get("retire"):
            answer["retired"] = self.stopping = not self.children
        return answer

    # lifetime ---------------------------------------------------------------
    def _socket_is_ours(self) -> bool:
        try:
            return os.stat(self.socket_path).st_ino == self.socket_inode
        except OSError:
            return False

    def _idle_for(self) -> float | None:
        """Seconds to wait for the next event: none while preloading, until the idle exit otherwise
        (no limit while steps run: the signal of one ending wakes the loop)."""
        if self.pending:
            return 0
        if self.idle_exit_s is None or self.children:
            return None
        return max(0.0, self.last_active + self.idle_exit_s - time.monotonic()) + 0.05

    def _should_exit(self) -> bool:
        if self.stopping:
            return True
        if self.idle_exit_s is None or self.children:
            return False
        idle = time.monotonic() - self.last_active >= self.idle_exit_s
        return idle or not self._socket_is_ours()  # replaced: a newer server took the name

    def _on_signal(self) -> None:
        with contextlib.suppress(BlockingIOError):
            received = self.wake_r.recv(4096)
            if signal.SIGTERM in received:
                self.stopping = True
        self._reap()

    def serve(self) -> None:
        print("ready", flush=True)
        if self.idle_exit_s is not None:  # detached: nobody reads stdout after "ready"
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        while not self._should_exit():
            events = self.selector.select(self._idle_for())
            for key, _ in events:
                if key.data == "accept":
                    self._accept()
                elif key.data == "signal":
                    self._on_signal()
                elif key.data == "parent":
                    if not os.read(sys.stdin.fileno(), 4096):
                        self.stopping = True
                else:
                    self._client_gone(key.fileobj, key.data)  # type: ignore[arg-type]
            self._reap()
            if not events and self.pending:
                _load(self.pending[0], self.loaded, self.pending)
        self._kill_children()
        if self._socket_is_ours():
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)


def _detach() -> None:
    """Leave the process that started us: it may exit long before we do (shared servers)."""
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str]) -> None:
    family, socket_path, *rest = argv
    idle_exit_s = float(rest[1]) if rest[:1] == ["--idle-exit"] else None
    if idle_exit_s is not None:
        _detach()
    _Server(family, socket_path, idle_exit_s).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
