"""Run one step function on its job file: inside a forked step process, or cold for reproduction.

`python -m targets.engine.child MODULE:FUNCTION JOB.json RESULT.json [MEMORY_MB]` runs a step in a
fresh interpreter the way the warm process runs it; every step folder has a `reproduce.sh` with
that command and the step's environment. Exit 0: RESULT holds the result JSON; exit 1: the step
raised and RESULT holds a StepError. Anything else (a signal, another code) is a crash.
"""

from __future__ import annotations

import ctypes
import importlib
import inspect
import os
import resource
import signal
import sys
import traceback
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipyard.errors import InputError
from shipyard.settings import settings
from targets._errors import short_error

__all__ = [
    "EXIT_OK",
    "EXIT_STEP_ERROR",
    "StepError",
    "cap_memory",
    "die_with_parent",
    "ended_children",
    "execute_step",
    "load_function",
]

EXIT_OK, EXIT_STEP_ERROR = 0, 1

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded at import: a fresh child may not import safely

# Raised because of the machine, not the inputs: the same step may well pass next time.
_CIRCUMSTANTIAL = (MemoryError, OSError, TimeoutError)


class StepError(BaseModel):
    """Why a step raised."""

    type: str  # the exception's class name
    message: str  # "<type>: <reason>", at most a few hundred characters
    reason: str  # the reason alone
    bad_input: bool  # the source or spec is unusable (an InputError): the CLI exits 2
    repeatable: bool  # the same inputs would fail the same way (not out of memory, disk, time)


def load_function(ref: str) -> Callable[..., Any]:
    """`package.module:function` -> the function."""
    module, _, attr = ref.partition(":")
    loaded: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return loaded


def _job_type(function: Callable[..., Any]) -> type[BaseModel]:
    """The pydantic model a step function takes (its first parameter's annotation)."""
    first = next(iter(inspect.signature(function).parameters))
    job_type = typing.get_type_hints(function)[first]
    if not (isinstance(job_type, type) and issubclass(job_type, BaseModel)):
        raise TypeError(f"step function {function.__qualname__} must take a pydantic job model")
    return job_type


def ended_children() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of every child process of this one that has ended; never blocks."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def die_with_parent() -> None:
    """In a new child process: SIGKILL it when its parent (the thread that started it) goes away."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def cap_memory(memory_mb: int) -> None:
    """Let this process's data grow by memory_mb beyond what it holds now (toolchains loaded).

    A converter that blows up gets MemoryError instead of pushing the machine into the OOM killer.
    The limit is RLIMIT_DATA (heap and writable private mappings), not RLIMIT_AS: runtimes reserve
    address space they never fill (V8 reserves guard regions around every wasm memory, TensorFlow
    and XLA reserve arenas), which an address-space cap would count. Children (Node) inherit it.
    """
    status = Path("/proc/self/status").read_text()
    current_kb = int(status.split("VmData:")[1].split()[0])
    limit = current_kb * 1024 + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _error(exc: BaseException) -> StepError:
    message = short_error(exc)
    return StepError(
        type=type(exc).__name__,
        message=message,
        reason=message.removeprefix(f"{type(exc).__name__}: "),
        bad_input=isinstance(exc, InputError),
        repeatable=not isinstance(exc, _CIRCUMSTANTIAL),
    )


def max_file_mb() -> int:
    """The largest file a step may write: $SHIPYARD_MAX_STEP_FILE_MB, else 32 GiB."""
    return max(1, settings().max_step_file_mb)


def cap_file_size(megabytes: int) -> None:
    """RLIMIT_FSIZE for this process and what it starts (converters, Node, Chromium); a write past
    it fails with EFBIG ("File too large") instead of the default SIGXFSZ kill, so the step says why."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # ignored dispositions survive exec
    limit = megabytes * 1024 * 1024
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def execute_step(function_ref: str, job_path: Path, result_path: Path, memory_mb: int | None = None) -> int:
    """Validate the job, run the step, write its result (or why it failed); return the exit code."""
    # cold or forked from a warm server: a crash should fail fast, not dump gigabytes of core
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cap_file_size(max_file_mb())
    try:
        function = load_function(function_ref)
        job = _job_type(function).model_validate_json(job_path.read_text())
        if memory_mb:
            cap_memory(memory_mb)
        result = function(job)
    except Exception as exc:
        traceback.print_exc()
        result_path.write_text(_error(exc).model_dump_json())
        return EXIT_STEP_ERROR
    result_path.write_text(result.model_dump_json(indent=2))
    return EXIT_OK


def main(argv: list[str]) -> int:
    function_ref, job_path, result_path, *memory = argv
    return execute_step(function_ref, Path(job_path), Path(result_path), int(memory[0]) if memory else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
