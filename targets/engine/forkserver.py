"""The warm process server: imports the toolchains once, then forks one process per step.

Run by `targets.engine.workers` as `python -m targets.engine.forkserver FAMILY SOCKET_PATH`, one
server per toolchain family (torch, tf), so torch steps never wait behind TensorFlow's import. It
listens on a Unix socket in a private (0700) folder. A client connects, sends one JSON line
(function, job, result and log paths, memory cap, working folder), gets
`{"pid": N}` back as soon as the step process exists, and `{"status": S}` (a waitpid status)
when it has ended.

The server imports modules in the order steps need them (torch first, TensorFlow later) and
serves requests in between, so the first step never waits for the whole toolchain; a step
forked early imports what is still missing itself. It only imports (and probes the compiler);
it never runs a model, so no toolchain has started the thread pools that make forking unsafe.
When its parent goes away (stdin closes) it kills every step process group and exits.

A forked step process: starts its own session (so its whole group can be killed), dies with
the server (PR_SET_PDEATHSIG), writes stdout/stderr to its log, then runs
`targets.engine.child.execute_step`, which caps its address-space growth before the step runs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["PRELOAD", "main"]

# What each family's server imports while it is idle, in the order steps usually need them
# ("module:function" also calls a warm-up function that runs no model). A request names what its
# step needs (its `warm` list): the server loads that first, then forks.
_COMMON = ("numpy", "pydantic", "targets")
PRELOAD = {
    # preparation, ONNX, ONNX Runtime, ExecuTorch, AOTInductor
    "torch": (
        *_COMMON,
        "torch",
        "torch.export",
        "torch.export.pt2_archive._package",
        "shipyard.torch_program",
        "targets.engine.steps",
        "onnx",
        "onnxscript",
        "torch.onnx",
        "torch.onnx._internal.exporter._core",
        "onnxscript.optimizer",
        "onnx.reference",
        "onnxruntime",
        "exporters.torch2onnx",
        "exporters.onnx2ort",
        "exporters.onnx2triton",
        "torch._inductor",
        "torch._inductor.codecache",
        "exporters.torch2aoti:warm_up",
        "executorch.exir",
        "executorch.exir.program",
        "executorch.backends.xnnpack.partition.xnnpack_partitioner",
        "executorch.devtools.backend_debug",
        "executorch.runtime",
        "exporters.torch2executorch",
    ),
    # TensorFlow: onnx2tf, tensorflowjs, LiteRT (litert-torch also needs torch)
    "tf": (
        *_COMMON,
        "tensorflow",
        "tf_keras",
        "onnx",
        "onnx2tf",
        "exporters.onnx2savedmodel",
        "exporters.savedmodel2tfjs",
        "tensorflowjs.converters.tf_saved_model_conversion_v2",
        "torch",
        "torch.export.pt2_archive._package",
        "litert_torch",
        "ai_edge_quantizer.quantizer",
        "ai_edge_litert.interpreter",
        "exporters.torch2tflite",
        "exporters.tflite2int4",
    ),
}

_children: dict[int, socket.socket] = {}


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
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash should fail fast, not dump gigabytes
    memory_mb = request.get("memory_mb")
    return execute_step(request["function"], Path(request["job"]), Path(request["result"]), memory_mb)


def _fork_step(conn: socket.socket, request: dict[str, Any], closing: list[Any]) -> None:
    server_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            for item in closing:
                item.close()
            conn.close()
            for other in _children.values():
                other.close()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = _run_in_child(request, server_pid)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    _children[pid] = conn
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def _read_request(conn: socket.socket) -> dict[str, Any]:
    conn.settimeout(10)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("client closed before sending a request")
        data += chunk
    request: dict[str, Any] = json.loads(data)
    return request


def _reap() -> None:
    while _children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = _children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"status": status}).encode() + b"\n")
            conn.close()


def _shutdown() -> None:
    for pid in list(_children):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _children and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)


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


def main(family: str, socket_path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(128)
    listener.setblocking(False)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    selector.register(sys.stdin, selectors.EVENT_READ, "parent")
    closing: list[Any] = [listener, wake_r, wake_w, selector]
    pending = list(PRELOAD[family]) if not os.environ.get("SHIPYARD_NO_PRELOAD") else []
    loaded: set[str] = set()
    print("ready", flush=True)
    while True:
        events = selector.select(0 if pending else None)
        for key, _ in events:
            if key.data == "accept":
                with contextlib.suppress(BlockingIOError):
                    conn, _ = listener.accept()
                    try:
                        request = _read_request(conn)
                        for name in request.get("warm") or ():
                            _load(name, loaded, pending)
                        _fork_step(conn, request, closing)
                    except (OSError, ValueError, ConnectionError) as exc:
                        print(f"forkserver: bad request: {exc}", file=sys.stderr)
                        conn.close()
            elif key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(4096)
                _reap()
            elif not os.read(sys.stdin.fileno(), 4096):  # parent gone
                _shutdown()
                return
        _reap()
        if not events and pending:
            _load(pending[0], loaded, pending)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
