"""Step processes, warm (forked from a toolchain server) and cold: how each way of ending is reported."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from targets._formats import Family
from targets.engine.workers import ExitKind, StepCall, StepProcesses
from tests.steps import sleepers


@pytest.fixture(scope="module", params=["warm", "cold"])
def processes(request: pytest.FixtureRequest) -> Iterator[StepProcesses]:
    with StepProcesses(warm=request.param == "warm") as started:
        yield started


def _run(
    processes: StepProcesses, what: str, tmp_path: Path, timeout: float = 120, memory_mb: int | None = None
):
    job = tmp_path / f"{what}.json"
    job.write_text(f'{{"what": "{what}"}}')
    call = StepCall(
        name=f"step-{what}",
        function="tests.steps:behave",
        family=Family.TORCH,
        job=job,
        result=tmp_path / f"{what}.result.json",
        log=tmp_path / f"{what}.log",
        timeout_s=timeout,
        memory_mb=memory_mb,
    )
    return processes.run(call)


def test_a_step_that_returns(processes: StepProcesses, tmp_path: Path) -> None:
    outcome = _run(processes, "ok", tmp_path)
    assert outcome.kind is ExitKind.OK and '"pid"' in outcome.output


def test_a_step_that_raises_carries_its_reason(processes: StepProcesses, tmp_path: Path) -> None:
    outcome = _run(processes, "fail", tmp_path)
    assert outcome.kind is ExitKind.ERROR
    assert outcome.output == "ValueError: unsupported op Foo"
    assert outcome.error is not None and outcome.error.type == "ValueError" and outcome.error.repeatable


def test_killed_and_crashed_steps_are_reported(processes: StepProcesses, tmp_path: Path) -> None:
    killed = _run(processes, "kill", tmp_path)
    assert killed.kind is ExitKind.CRASHED and "died with SIGKILL (out of memory?)" in killed.output
    assert "SIGSEGV" in _run(processes, "segv", tmp_path).output
    odd = _run(processes, "exit3", tmp_path)
    assert "exited with code 3" in odd.output and "some converter noise" in odd.output


def test_a_hung_step_and_its_children_are_killed(processes: StepProcesses, tmp_path: Path) -> None:
    start = time.monotonic()
    outcome = _run(processes, "hang", tmp_path, timeout=2)
    assert outcome.kind is ExitKind.TIMED_OUT and "timed out after 2s" in outcome.output
    assert time.monotonic() - start < 30
    assert sleepers() == []


def test_memory_cap_turns_a_blow_up_into_a_reason(processes: StepProcesses, tmp_path: Path) -> None:
    capped = _run(processes, "hog", tmp_path, memory_mb=1024)
    assert capped.kind is ExitKind.ERROR and "MemoryError" in capped.output
    assert capped.error is not None and not capped.error.repeatable  # never cached as the step's fate


def test_warm_steps_fork_from_a_server_with_the_toolchain_loaded(tmp_path: Path) -> None:
    import json

    with StepProcesses(warm=True) as warm:
        warm.start([Family.TORCH])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the server imports torch first, then keeps going
            outcome = _run(warm, "ok", tmp_path)
            if json.loads(outcome.output)["preloaded_torch"]:
                break
        first, second = (json.loads(_run(warm, "ok", tmp_path).output)["pid"] for _ in range(2))
    assert json.loads(outcome.output)["preloaded_torch"]
    assert first != second  # a fresh process per step


def test_a_dead_server_is_replaced_by_cold_steps(tmp_path: Path) -> None:
    import os
    import signal

    with StepProcesses(warm=True) as warm:
        assert _run(warm, "ok", tmp_path).kind is ExitKind.OK
        server = warm._servers[Family.TORCH]
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
        outcome = _run(warm, "ok", tmp_path)
    assert outcome.kind is ExitKind.OK, outcome.output  # ran cold instead of failing


def test_grandchildren_of_a_finished_step_are_killed(processes: StepProcesses, tmp_path: Path) -> None:
    outcome = _run(processes, "orphan", tmp_path)
    assert outcome.kind is ExitKind.OK
    deadline = time.monotonic() + 5
    while sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleepers() == []
