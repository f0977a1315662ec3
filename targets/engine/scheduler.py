"""Run a plan: each step once its inputs are ready, at most `max_parallel` at a time.

Ready steps start longest-remaining-chain first (the AOTInductor compile and the TF.js chain
before quick ONNX Runtime steps), which keeps both cores busy to the end on a 2-core worker. A
step whose input failed is skipped with the reason; every other step goes on, so one failing
target never stops the others.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from shipyard.report import StepStatus
from targets.engine.graph import Plan, Step

__all__ = ["NoHooks", "StepHooks", "StepOutcome", "run_plan"]


@dataclass
class StepOutcome:
    """How one step ended, and where its output is."""

    step: Step
    status: StepStatus
    seconds: float
    result: BaseModel | None = None  # the step's typed result
    out_dir: Path | None = None  # its output folder (in the cache, or in the run folder)
    digest: str = ""  # identity of its output (cache.tree_digest)
    reused: bool = False
    original_seconds: float | None = None
    error: str | None = None  # why it failed (or, when skipped, which step failed and why)
    bad_input: bool = False  # it raised because the source or spec is unusable
    started_at: float | None = None  # unix time the step started (None: skipped, never started)

    def reason(self) -> str:
        """`<step> failed: <why>`, or for a skipped step the failure that blocked it."""
        if self.status is StepStatus.SKIPPED:
            return self.error or f"{self.step.id} skipped"
        return f"{self.step.id} failed: {self.error}"

    @property
    def passed(self) -> bool:
        """Its dependents may run: it passed, or had nothing to do."""
        return self.status in (StepStatus.PASSED, StepStatus.NOOP)


class StepHooks(Protocol):
    """What a front door may add around every step (progress lines, Prefect task runs)."""

    def run(self, step: Step, call: Callable[[], StepOutcome]) -> StepOutcome: ...

    def ended(self, outcome: StepOutcome) -> None: ...


class NoHooks:
    def run(self, step: Step, call: Callable[[], StepOutcome]) -> StepOutcome:
        return call()

    def ended(self, outcome: StepOutcome) -> None:
        return None


Execute = Callable[[Step, dict[str, StepOutcome]], StepOutcome]
Abort = Callable[[], None]


def _ended(hooks: StepHooks, outcome: StepOutcome) -> None:
    """Tell the hooks; a hook that fails must not stop the run."""
    with contextlib.suppress(Exception):
        hooks.ended(outcome)


def _blocked(step: Step, failed: StepOutcome) -> StepOutcome:
    return StepOutcome(step=step, status=StepStatus.SKIPPED, seconds=0.0, error=failed.reason())


def _guarded(execute: Execute, hooks: StepHooks, step: Step, inputs: dict[str, StepOutcome]) -> StepOutcome:
    """Run one step; a bug in the engine itself fails that step, never the run."""
    started_at, start = time.time(), time.perf_counter()
    try:
        outcome = hooks.run(step, lambda: execute(step, inputs))
    except Exception as exc:  # the engine must report, not die
        outcome = StepOutcome(
            step=step,
            status=StepStatus.FAILED,
            seconds=time.perf_counter() - start,
            error=f"{type(exc).__name__}: {exc}",
        )
    outcome.started_at = started_at
    return outcome


def run_plan(
    plan: Plan,
    execute: Execute,
    max_parallel: int,
    hooks: StepHooks | None = None,
    abort: Abort | None = None,
) -> dict[str, StepOutcome]:
    """Run every step of the plan; returns each step's outcome by id.

    On an interrupt (Ctrl-C, a cancelled flow run) `abort` stops the running step processes
    first, so the threads waiting for them end at once instead of at their timeouts.
    """
    hooks = hooks or NoHooks()
    with ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="step") as pool:
        try:
            return _drive(plan, execute, max_parallel, hooks, pool)
        except BaseException:
            if abort is not None:
                abort()
            raise


def _ready(plan: Plan, waiting: list[str], done: dict[str, StepOutcome]) -> list[str]:
    return [s for s in waiting if all(n in done for n in plan.steps[s].needs)]


def _skip_blocked(plan: Plan, waiting: list[str], done: dict[str, StepOutcome], hooks: StepHooks) -> None:
    """Skip every waiting step an input of which failed, and then the steps that need those."""
    blocked = True
    while blocked:
        blocked = False
        for step_id in _ready(plan, waiting, done):
            step = plan.steps[step_id]
            failed = next((done[n] for n in step.needs if not done[n].passed), None)
            if failed is not None:
                waiting.remove(step_id)
                done[step_id] = _blocked(step, failed)
                _ended(hooks, done[step_id])
                blocked = True


def _drive(
    plan: Plan, execute: Execute, max_parallel: int, hooks: StepHooks, pool: ThreadPoolExecutor
) -> dict[str, StepOutcome]:
    priority = plan.critical_path_s()
    done: dict[str, StepOutcome] = {}
    running: dict[Future[StepOutcome], str] = {}
    waiting = list(plan.steps)
    context = contextvars.copy_context()  # e.g. Prefect's flow run context, for every worker thread
    while waiting or running:
        _skip_blocked(plan, waiting, done, hooks)
        ready = sorted(_ready(plan, waiting, done), key=lambda s: -priority[s])
        for step_id in ready[: max(0, max_parallel - len(running))]:
            waiting.remove(step_id)
            step = plan.steps[step_id]
            inputs = {n: done[n] for n in step.needs}
            running[pool.submit(context.copy().run, _guarded, execute, hooks, step, inputs)] = step_id
        if not running:
            if waiting and not _ready(plan, waiting, done):
                raise RuntimeError(f"steps {waiting} wait for steps that never run")
            continue
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            outcome = future.result()
            done[running.pop(future)] = outcome
            _ended(hooks, outcome)
    return done
