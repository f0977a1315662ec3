"""Pid files that name one process: its pid and its start time, so a reused pid is not trusted.

After a reboot (or a crash and a long uptime) the number in a bare pid file may belong to an
unrelated process, which `down` would kill and `up` would take for a running server. The kernel's
start time of a process (field 22 of /proc/<pid>/stat, in clock ticks since boot) together with
the boot id tells the same process from a later one with the same number.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["live_pid", "write_pid"]

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _identity(pid: int) -> str | None:
    """boot id + start time of process `pid`, None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name, in parentheses, may hold spaces
    if len(fields) <= 19 or fields[0] in ("Z", "X"):  # a zombie has exited already
        return None
    return f"{boot}:{fields[19]}"


def write_pid(path: Path, pid: int) -> None:
    path.write_text(json.dumps({"pid": pid, "started": _identity(pid)}))


def live_pid(path: Path) -> int | None:
    """The pid in `path` if that very process still runs; a stale file is removed."""
    try:
        record = json.loads(path.read_text())
        pid, started = int(record["pid"]), record["started"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):  # unreadable, or the old bare-number format
        pid, started = None, None
    if pid is not None and started is not None and _identity(pid) == started:
        return pid
    path.unlink(missing_ok=True)
    return None
