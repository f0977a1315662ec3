"""Step processes, warm (forked from a toolchain server: the run's own or a shared one) and cold:
how each way of ending is reported, and that nothing outlives the run that started it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from targets.engine.family import Family
from targets.engine.recipe import StepRecipe
from targets.engine.servers import ping, running_servers, stop_servers
from targets.engine.workers import ExitKind, StepCall, StepProcesses, _OwnedServer
from tests.steps import sleepers

MODES = {"shared": {"shared": True}, "owned": {"shared": False}, "cold": {"warm": False}}


@pytest.fixture(scope="module", params=list(MODES))
def processes(request: pytest.FixtureRequest) -> Iterator[StepProcesses]:
    with StepProcesses(**MODES[request.param]) as started:
        yield started


def _run(
    processes: StepProcesses, what: str, tmp_path: Path, timeout: float = 120, memory_mb: int | None = None
):
    job = tmp_path / f"{what}.json"
    job.write_text(f'{{"what": "{what}"}}')
    call = StepCall(
        name=f"step-{what}",
        recipe=StepRecipe("tests.steps:behave", Family.TORCH),
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


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "owned"])
def test_warm_steps_fork_from_a_server_with_the_toolchain_loaded(shared: bool, tmp_path: Path) -> None:
    with StepProcesses(shared=shared) as warm:
        warm.start([Family.TORCH])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the server imports torch first, then keeps going
            outcome = _run(warm, "ok", tmp_path)
            if json.loads(outcome.output)["preloaded_torch"]:
                break
        first, second = (json.loads(_run(warm, "ok", tmp_path).output) for _ in range(2))
    assert json.loads(outcome.output)["preloaded_torch"]
    assert first["pid"] != second["pid"]  # a fresh process per step
    assert first["parent"] == second["parent"] != os.getpid()  # both forked from the server


def _server_pid(processes: StepProcesses) -> int:
    server = processes._servers[Family.TORCH]
    if isinstance(server, _OwnedServer):
        return server.process.pid
    pid = ping(server.socket)
    assert pid is not None
    return pid


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "owned"])
def test_a_dead_server_is_replaced_by_cold_steps(shared: bool, tmp_path: Path) -> None:
    with StepProcesses(shared=shared) as warm:
        assert _run(warm, "ok", tmp_path).kind is ExitKind.OK
        pid = _server_pid(warm)
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        outcome = _run(warm, "ok", tmp_path)
        assert outcome.kind is ExitKind.OK, outcome.output  # ran cold instead of failing
        assert json.loads(outcome.output)["parent"] == os.getpid()
        again = json.loads(_run(warm, "ok", tmp_path).output)  # and the next step is warm again
    assert again["parent"] not in (pid, os.getpid())


def _wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child (an owned server) must be reaped
        time.sleep(0.05)
    return False


@pytest.fixture
def private_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Shared servers of this test alone (a short path: socket names are limited to 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="sy-"))
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(folder))
    yield folder
    stop_servers()
    shutil.rmtree(folder, ignore_errors=True)


def test_runs_share_a_server_until_it_idles_out(
    private_runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_WARM_IDLE_S", "3")
    with StepProcesses() as first_run:
        first = json.loads(_run(first_run, "ok", tmp_path).output)
    with StepProcesses() as second_run:  # a later run (or command) of the same user
        second = json.loads(_run(second_run, "ok", tmp_path).output)
    assert first["parent"] == second["parent"]  # the server outlived the first run
    assert [s.pid for s in running_servers()] == [first["parent"]]
    assert _wait_gone(first["parent"], timeout=30)  # idle for 3 s: it exits by itself
    assert list(private_runtime.glob("*.sock")) == []


def test_other_code_or_environment_gets_another_server(
    private_runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StepProcesses() as run:
        before = json.loads(_run(run, "ok", tmp_path).output)["parent"]
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ['PYTHONPATH']}")
    with StepProcesses() as run:
        after = json.loads(_run(run, "ok", tmp_path).output)["parent"]
    assert before != after
    assert sorted(s.pid for s in running_servers()) == sorted([before, after])
    assert [s.pid for s in stop_servers()] and running_servers() == []


def test_a_per_run_empty_folder_on_pythonpath_shares_the_server(
    private_runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Prefect's process worker gives each flow run: a fresh, empty folder on PYTHONPATH. It
    changes no import, so both runs fork from one server (a folder with code would not)."""
    parents = []
    for run_folder in ("run-1", "run-2"):
        (tmp_path / run_folder).mkdir()
        monkeypatch.setenv("PYTHONPATH", f"{tmp_path / run_folder}{os.pathsep}{os.environ['PYTHONPATH']}")
        with StepProcesses() as run:
            parents.append(json.loads(_run(run, "ok", tmp_path).output)["parent"])
    assert parents[0] == parents[1]
    assert [s.pid for s in running_servers()] == [parents[0]]


def test_the_server_cap_retires_idle_servers_but_never_a_busy_one(
    private_runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SHIPYARD_MAX_WARM_SERVERS=1: a run that needs a server of other code retires the idle one;
    while that one runs a step, a third kind of run goes cold instead of starting a server."""
    monkeypatch.setenv("SHIPYARD_MAX_WARM_SERVERS", "1")

    def other_code(name: str) -> None:  # a folder holding something: a server of its own
        (tmp_path / name).mkdir()
        (tmp_path / name / "marker.txt").write_text(name)
        monkeypatch.setenv("PYTHONPATH", f"{tmp_path / name}{os.pathsep}{os.environ['PYTHONPATH']}")

    with StepProcesses() as run:
        first = json.loads(_run(run, "ok", tmp_path).output)["parent"]
    other_code("b")
    with StepProcesses() as run:
        second = json.loads(_run(run, "ok", tmp_path).output)["parent"]
    assert first != second and _wait_gone(first)  # idle: retired to make room
    with StepProcesses() as busy:
        hanging = threading.Thread(target=_run, args=(busy, "hang", tmp_path / "b", 15))
        (tmp_path / "b").mkdir(exist_ok=True)
        hanging.start()
        deadline = time.monotonic() + 30
        while not [s for s in running_servers() if s.pid == second] or not sleepers():
            assert time.monotonic() < deadline, "the hanging step never started"
            time.sleep(0.1)
        other_code("c")
        with StepProcesses() as third:
            cold = json.loads(_run(third, "ok", tmp_path).output)["parent"]
        assert cold == os.getpid()  # no room: run cold, the busy server untouched
        assert [s.pid for s in running_servers()] == [second]
        hanging.join()
    assert len(list(private_runtime.glob("*.sock"))) <= 1


KILLED_RUN = """
import sys
from pathlib import Path
from targets.engine.family import Family
from targets.engine.recipe import StepRecipe
from targets.engine.workers import StepCall, StepProcesses

folder = Path(sys.argv[1])
(folder / "job.json").write_text('{"what": "hang"}')
call = StepCall(name="hang", recipe=StepRecipe("tests.steps:behave", Family.TORCH), job=folder / "job.json",
                result=folder / "result.json", log=folder / "log.txt", timeout_s=600)
with StepProcesses(shared=sys.argv[2] == "shared") as processes:
    processes.run(call)
"""


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "owned"])
def test_a_killed_run_leaves_no_step_behind(shared: bool, tmp_path: Path) -> None:
    """The engine's process dies (SIGKILL, no cleanup): its step and the step's children die too."""
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path), "shared" if shared else "owned"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not sleepers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sleepers(), "the hanging step never started"
        run.kill()
        run.wait()
        deadline = time.monotonic() + 15
        while sleepers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sleepers() == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


def test_grandchildren_of_a_finished_step_are_killed(processes: StepProcesses, tmp_path: Path) -> None:
    outcome = _run(processes, "orphan", tmp_path)
    assert outcome.kind is ExitKind.OK
    deadline = time.monotonic() + 5
    while sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleepers() == []
