"""Pid files of `make up`: a pid reused by another process (after a reboot, say) is not trusted."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from infra._pidfile import live_pid, write_pid


def test_a_pid_file_names_only_the_process_that_wrote_it(tmp_path: Path) -> None:
    path = tmp_path / "server.pid"
    with subprocess.Popen(["sleep", "60"]) as proc:
        write_pid(path, proc.pid)
        assert live_pid(path) == proc.pid
        proc.kill()
        proc.wait()
    assert live_pid(path) is None and not path.exists()  # ended: the stale file is dropped


def test_a_reused_pid_or_a_bare_number_is_not_trusted(tmp_path: Path) -> None:
    """The pid is alive (this test's own process) but is not the one recorded: `down` must not
    kill it and `up` must not take it for a running server."""
    reused = tmp_path / "reused.pid"
    reused.write_text(json.dumps({"pid": os.getpid(), "started": "another-boot:12345"}))
    assert live_pid(reused) is None and not reused.exists()
    bare = tmp_path / "bare.pid"  # the format before start times were recorded
    bare.write_text(str(os.getpid()))
    assert live_pid(bare) is None
    garbage = tmp_path / "garbage.pid"
    garbage.write_text("{not json")
    assert live_pid(garbage) is None
    assert live_pid(tmp_path / "absent.pid") is None
