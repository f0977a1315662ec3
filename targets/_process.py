"""Run one step of a target in a child process with a timeout; kill its whole group on expiry."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChildOutcome", "run_child"]


@dataclass
class ChildOutcome:
    ok: bool
    output: str  # the result JSON when ok, else the reason it failed


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-400:]


def run_child(
    step: str,
    job: Path,
    result: Path,
    log: Path,
    timeout_s: float,
    memory_mb: int | None = None,
    module: str = "targets.child",
) -> ChildOutcome:
    """Run `python -m MODULE STEP JOB RESULT`, its output going to LOG.

    memory_mb caps the child's address space (RLIMIT_AS), so a converter that blows up
    gets MemoryError (or aborts) instead of pushing the machine into the OOM killer.
    """
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", module, step, str(job), str(result)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        if memory_mb:
            limit = memory_mb * 1024 * 1024
            resource.prlimit(proc.pid, resource.RLIMIT_AS, (limit, limit))
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return ChildOutcome(False, f"{step} timed out after {timeout_s:.0f}s and was killed")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    if code == 0 and result.is_file():
        return ChildOutcome(True, result.read_text())
    if code == 1 and result.is_file():
        return ChildOutcome(False, result.read_text())
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        if memory_mb and name in ("SIGABRT", "SIGSEGV"):
            hint = f" (memory limit of {memory_mb} MB reached?)"
        return ChildOutcome(False, f"{step} process died with {name}{hint}; log: {_tail(log)}")
    return ChildOutcome(False, f"{step} process exited with code {code}; log: {_tail(log)}")
