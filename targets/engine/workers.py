"""Run a step in a process of its own: warm (forked from the server) or cold (a fresh interpreter).

Every step process has a timeout, an optional memory cap and its own process group, which is
killed as a whole when the step ends, so a crash, hang or memory blow-up fails only that step.
Warm processes are forked from a `targets.engine.forkserver` of the step's toolchain family
(torch or tf), which has imported that toolchain already; cold ones (SHIPYARD_WARM_WORKERS=0, or
the server cannot start) pay those imports per step, as `reproduce.sh` does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from shipyard.json_lines import JsonLines, send_json_line
from shipyard.settings import settings
from targets.engine import servers
from targets.engine.child import EXIT_OK, EXIT_STEP_ERROR, StepError, die_with_parent
from targets.engine.family import Family
from targets.engine.recipe import StepRecipe

__all__ = [
    "STEP_SETTINGS",
    "ExitKind",
    "ProcessOutcome",
    "StepCall",
    "StepProcesses",
    "importable_path",
    "step_environment",
]

# Operator settings a step reads itself. The step cache key holds their values (the browser's through
# the chromium version), so a changed setting never reuses a step made under the old one.
STEP_SETTINGS = (
    "SHIPYARD_BROWSER",
    "SHIPYARD_CHROMIUM",
    "SHIPYARD_MAX_OUTPUT_ELEMENTS",
    "SHIPYARD_MAX_STEP_FILE_MB",
    "SHIPYARD_MAX_UNPACKED_BYTES",
    "SHIPYARD_MAX_VARIANT_ELEMENTS",
)

# The only variables a step process inherits: converters and runtimes need no credentials, and
# nothing else in the environment (TORCHINDUCTOR_*, TF_*, ...) may change what a step makes.
PASSED_THROUGH = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "SHIPYARD_NODE",
    *STEP_SETTINGS,
)

# Settings that make converters behave the same on every x86-64 host (see README, "Reproducible
# artifacts"): no oneDNN graph rewrites in TensorFlow (on AVX-512 hosts they fuse ops TF.js cannot
# run); torch and oneDNN kernels capped at AVX2, so constants folded during export come out
# bit-identical on AVX2 and AVX-512 hosts; one thread per step (parallel float reductions depend
# on the thread count); a fixed hash seed for Python-level iteration order.
TOOLCHAIN_ENVIRONMENT = {
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONUNBUFFERED": "1",
    "TORCHINDUCTOR_COMPILE_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",  # litert-torch lowers through JAX/XLA
    "JAX_PLATFORMS": "cpu",
}

START_TIMEOUT_S = 120  # the server answers long before it has preloaded everything


def step_environment() -> dict[str, str]:
    """The environment of every step process: a few of ours, plus the toolchain pins."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_THROUGH}
    if "PYTHONPATH" in env:
        env["PYTHONPATH"] = importable_path(env["PYTHONPATH"])
    env.update(TOOLCHAIN_ENVIRONMENT)
    return env


def importable_path(pythonpath: str) -> str:
    """PYTHONPATH without the entries that hold nothing to import (missing or empty folders).

    Prefect's process worker puts each flow run's own fresh folder on PYTHONPATH; kept, it would
    give every run warm servers of its own (their name digests the step environment), though it
    changes no import.
    """
    return os.pathsep.join(e for e in pythonpath.split(os.pathsep) if e and _holds_anything(Path(e)))


def _holds_anything(entry: Path) -> bool:
    if entry.is_file():  # a zip of modules
        return True
    try:
        return next(entry.iterdir(), None) is not None
    except OSError:
        return False


class ExitKind(StrEnum):
    OK = "ok"
    ERROR = "error"  # the step raised: the same inputs fail the same way
    CRASHED = "crashed"  # killed by a signal or an unexpected exit: may not happen again
    TIMED_OUT = "timed-out"


@dataclass(frozen=True)
class ProcessOutcome:
    kind: ExitKind
    output: str  # the result JSON when OK, else the reason
    seconds: float
    error: StepError | None = None  # ERROR: what the step raised

    @property
    def ok(self) -> bool:
        return self.kind is ExitKind.OK


@dataclass(frozen=True)
class StepCall:
    """One step to run: its recipe (function, server, what that loads first), files and limits."""

    name: str
    recipe: StepRecipe
    job: Path
    result: Path
    log: Path
    timeout_s: float
    memory_mb: int | None = None

    def command(self) -> list[str]:
        """The cold command that runs this step the same way (for reproduce.sh)."""
        command = [
            sys.executable,
            "-m",
            "targets.engine.child",
            self.recipe.function,
            str(self.job),
            str(self.result),
        ]
        return [*command, str(self.memory_mb)] if self.memory_mb else command


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-400:]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _outcome(call: StepCall, code: int, seconds: float) -> ProcessOutcome:
    """Decode an exit code (negative: killed by that signal) into a typed outcome."""
    if code == EXIT_OK and call.result.is_file():
        return ProcessOutcome(ExitKind.OK, call.result.read_text(), seconds)
    if code == EXIT_STEP_ERROR and call.result.is_file():
        error = StepError.model_validate_json(call.result.read_text())
        return ProcessOutcome(ExitKind.ERROR, error.message, seconds, error)
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        if call.memory_mb and name in ("SIGABRT", "SIGSEGV"):
            hint = f" (memory limit of {call.memory_mb} MB reached?)"
        reason = f"{call.name} process died with {name}{hint}; log: {_tail(call.log)}"
    else:
        reason = f"{call.name} process exited with code {code}; log: {_tail(call.log)}"
    return ProcessOutcome(ExitKind.CRASHED, reason, seconds)


def _timed_out(call: StepCall, seconds: float) -> ProcessOutcome:
    reason = f"{call.name} timed out after {call.timeout_s:.0f}s and was killed"
    return ProcessOutcome(ExitKind.TIMED_OUT, reason, seconds)


class _OwnedServer:
    """A warm server of one run: stopped with the run (and when the run's process goes away)."""

    def __init__(self, family: Family, log: Path | None) -> None:
        self.family = family
        self.socket_dir = Path(tempfile.mkdtemp(prefix="shipyard-ws-"))  # 0700, and a short path
        self.socket = self.socket_dir / "s"
        self.settled = threading.Event()  # set once it is ready, or gone
        self.ready = False
        stderr = log.open("ab") if log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "targets.engine.forkserver", family, str(self.socket)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=step_environment(),
                start_new_session=True,
            )
        finally:
            if log:
                stderr.close()  # type: ignore[union-attr]
        threading.Thread(target=self._wait_ready, daemon=True).start()

    def _wait_ready(self) -> None:
        assert self.process.stdout is not None
        self.ready = self.process.stdout.readline().strip() == b"ready"
        self.settled.set()

    def usable(self) -> bool:
        """Ready and still running (waits for it to start, at most START_TIMEOUT_S)."""
        self.settled.wait(START_TIMEOUT_S)
        return self.ready and self.process.poll() is None

    def stop(self) -> None:
        _kill_group(self.process.pid)
        self.process.wait()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


class _SharedServer:
    """A handle on a shared server (targets.engine.servers): it outlives this run."""

    def __init__(self, family: Family, socket_path: Path) -> None:
        self.family = family
        self.socket = socket_path

    def usable(self) -> bool:
        return self.socket.exists()

    def stop(self) -> None:
        return None  # it serves other runs too, and exits by itself when idle


class _NoServer:
    """No server: every shared one is busy and there is no room for another."""

    def usable(self) -> bool:
        return False

    def stop(self) -> None:
        return None


_Server = _OwnedServer | _SharedServer | _NoServer


class StepProcesses:
    """Starts step processes: forked from a warm server of the step's family when possible, else cold."""

    def __init__(self, warm: bool = True, log: Path | None = None, shared: bool | None = None) -> None:
        """`shared`: fork from this user's shared servers (default: unless SHIPYARD_WARM_IDLE_S=0)."""
        self.warm = warm and settings().warm_workers
        self.shared = servers.idle_exit_s() > 0 if shared is None else shared
        self.log = log  # where the run's own servers' output goes
        self._lock = threading.Lock()
        self._servers: dict[Family, _Server] = {}
        self._running: set[int] = set()

    def start(self, families: list[Family] | tuple[Family, ...] = (Family.TORCH,)) -> None:
        """Start the families' servers now: they import their toolchains while other steps run."""
        if not self.warm:
            return
        with self._lock:
            for family in families:
                if family not in self._servers:
                    self._servers[family] = self._server_for(family)

    def _server_for(self, family: Family) -> _Server:
        """This user's shared server of the family (started if none runs), else one of our own."""
        if self.shared:
            try:
                found = servers.find_or_start(family, step_environment())
            except servers.NoRoomForServer:
                return _NoServer()  # cold, this once: no load makes warm servers exhaust memory
            if found is not None:
                return _SharedServer(family, found)
        if self.log:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        return _OwnedServer(family, self.log)

    def close(self) -> None:
        """Stop every step process still running, and the servers of this run (not shared ones)."""
        with self._lock:
            servers, self._servers = self._servers, {}
        for pid in list(self._running):
            _kill_group(pid)
        for server in servers.values():
            server.stop()

    def __enter__(self) -> StepProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, call: StepCall) -> ProcessOutcome:
        """Run one step to its end (or its timeout) and say how it ended.

        Warm when the family's server is up; cold when it could not start or has died (then
        it is dropped, and the next warm start of that family starts a new one).
        """
        call.result.unlink(missing_ok=True)
        if self.warm:
            self.start([call.recipe.family])
            server = self._servers.get(call.recipe.family)
            if isinstance(server, _OwnedServer | _SharedServer) and server.usable():
                try:
                    return self._run_warm(server, call)
                except OSError:  # the server went away between the check and the request
                    pass
            self._drop(call.recipe.family, server)
        return self._run_cold(call)

    def _drop(self, family: Family, server: _Server | None) -> None:
        with self._lock:
            if server is not None and self._servers.get(family) is server:
                del self._servers[family]
        if server is not None:
            server.stop()

    def _run_warm(self, server: _OwnedServer | _SharedServer, call: StepCall) -> ProcessOutcome:
        request = {
            "function": call.recipe.function,
            "job": str(call.job),
            "result": str(call.result),
            "log": str(call.log),
            "memory_mb": call.memory_mb,
            "warm": list(call.recipe.warm),
            "cwd": str(call.job.parent),
        }
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(START_TIMEOUT_S)  # the server accepts between two imports
            conn.connect(str(server.socket))
            send_json_line(conn, request)
            lines = JsonLines(conn)
            started = lines.next(START_TIMEOUT_S)
            if not started:
                raise ConnectionError(f"the {server.family} server did not start {call.name}")
            pid = started["pid"]
            start = time.perf_counter()
            self._running.add(pid)
            try:
                return self._await_exit(call, lines, pid, start)
            finally:
                self._running.discard(pid)
                _kill_group(pid)  # grandchildren a step left behind

    def _await_exit(self, call: StepCall, lines: JsonLines, pid: int, start: float) -> ProcessOutcome:
        ended = lines.next(call.timeout_s)
        timed_out = ended is None and not lines.closed
        if timed_out:
            _kill_group(pid)
            ended = lines.next(30)  # the server reports the kill once it has reaped the process
        seconds = time.perf_counter() - start
        if timed_out:
            return _timed_out(call, seconds)
        if not ended:
            return ProcessOutcome(ExitKind.CRASHED, f"{call.name}: the warm worker server died", seconds)
        status = ended["status"]
        return _outcome(call, os.waitstatus_to_exitcode(status), seconds)

    def _run_cold(self, call: StepCall) -> ProcessOutcome:
        start = time.perf_counter()
        with call.log.open("ab") as out:
            proc = subprocess.Popen(
                call.command(),  # the child caps its own memory once the step function is loaded
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=step_environment(),
                cwd=call.job.parent,
                preexec_fn=die_with_parent,
            )
            self._running.add(proc.pid)
            try:
                code = proc.wait(timeout=call.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
                return _timed_out(call, time.perf_counter() - start)
            finally:
                self._running.discard(proc.pid)
                _kill_group(proc.pid)
                if proc.poll() is None:
                    proc.wait()
        return _outcome(call, code, time.perf_counter() - start)
