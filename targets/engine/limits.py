"""How much of the machine a run may use: steps at once, memory and time per step process."""

from __future__ import annotations

import os
from pathlib import Path

from shipyard.settings import settings

__all__ = [
    "default_step_memory_mb",
    "max_parallel_steps",
    "max_step_memory_mb",
    "max_step_timeout_s",
    "total_memory_mb",
]

MIN_STEP_MEMORY_MB = 2048


def max_parallel_steps() -> int:
    """$SHIPYARD_MAX_PARALLEL_STEPS, else the number of cores."""
    explicit = settings().max_parallel_steps
    return max(1, (os.cpu_count() or 2) if explicit is None else explicit)


def total_memory_mb() -> int:
    try:
        meminfo = Path("/proc/meminfo").read_text()
        return int(meminfo.split("MemTotal:")[1].split()[0]) // 1024
    except (OSError, IndexError, ValueError):
        return 8192


def default_step_memory_mb() -> int:
    """A step's memory cap when the spec sets none: $SHIPYARD_STEP_MEMORY_MB, else an equal share of
    three quarters of this machine's memory for each step that may run at once (at least 2 GB)."""
    if (explicit := settings().step_memory_mb) is not None:
        return max(512, explicit)
    return max(MIN_STEP_MEMORY_MB, total_memory_mb() * 3 // 4 // max_parallel_steps())


def max_step_memory_mb() -> int:
    """The most memory a spec may ask for per step: $SHIPYARD_MAX_STEP_MEMORY_MB, else three
    quarters of this machine's memory."""
    if (explicit := settings().max_step_memory_mb) is not None:
        return max(512, explicit)
    return max(MIN_STEP_MEMORY_MB, total_memory_mb() * 3 // 4)


def max_step_timeout_s() -> int:
    """The longest a spec may let a step run: $SHIPYARD_MAX_STEP_TIMEOUT_S, else two hours."""
    return max(1, settings().max_step_timeout_s)
