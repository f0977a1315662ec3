"""A target's child process: crashes, hangs and errors become reasons, never a dead run."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from targets._process import run_child

BEHAVIOURS = {
    "crash": "os.kill(os.getpid(), signal.SIGKILL)",
    "segv": "os.kill(os.getpid(), signal.SIGSEGV)",
    "hang": "subprocess.Popen(['sleep', '600']); time.sleep(600)",
    "fail": "Path(sys.argv[3]).write_text('ValueError: unsupported op Foo'); sys.exit(1)",
    "exit3": "print('some converter noise'); sys.exit(3)",
    "ok": "Path(sys.argv[3]).write_text('{\"files\": []}')",
    "hog": "time.sleep(0.5); blob = bytearray(3 * 1024**3)",
}


@pytest.fixture
def child_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    body = "\n".join(f"    if step == {name!r}:\n        {code}" for name, code in BEHAVIOURS.items())
    (tmp_path / "fake_child.py").write_text(
        "import os, signal, subprocess, sys, time\nfrom pathlib import Path\n"
        + textwrap.dedent("""
        def main(step):
        """)
        + body
        + "\nmain(sys.argv[1])\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return "fake_child"


def _run(step: str, tmp_path: Path, module: str, timeout: float = 60, memory_mb: int | None = None):
    job = tmp_path / "job.json"
    job.write_text("{}")
    return run_child(
        step, job, tmp_path / "result.json", tmp_path / "log.txt", timeout, memory_mb, module=module
    )


def test_killed_child_is_reported(tmp_path: Path, child_module: str) -> None:
    outcome = _run("crash", tmp_path, child_module)
    assert not outcome.ok and "died with SIGKILL (out of memory?)" in outcome.output
    assert "SIGSEGV" in _run("segv", tmp_path, child_module).output


def test_hung_child_and_its_children_are_killed(tmp_path: Path, child_module: str) -> None:
    start = time.monotonic()
    outcome = _run("hang", tmp_path, child_module, timeout=2)
    assert not outcome.ok and "timed out after 2s" in outcome.output
    assert time.monotonic() - start < 30


def test_error_and_exit_code_carry_reason(tmp_path: Path, child_module: str) -> None:
    assert _run("fail", tmp_path, child_module).output == "ValueError: unsupported op Foo"
    odd = _run("exit3", tmp_path, child_module)
    assert not odd.ok and "exited with code 3" in odd.output and "some converter noise" in odd.output
    good = _run("ok", tmp_path, child_module)
    assert good.ok and good.output == '{"files": []}'


def test_memory_cap_turns_a_blow_up_into_a_reason(tmp_path: Path, child_module: str) -> None:
    capped = _run("hog", tmp_path, child_module, memory_mb=1024)
    assert not capped.ok and "MemoryError" in capped.output
