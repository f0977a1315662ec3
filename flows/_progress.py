"""One line per finished step on a terminal, for the CLI's local runs (nothing when piped)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from shipyard.report import StepStatus
from targets.pipeline import Step, StepOutcome

__all__ = ["StepProgress"]


class StepProgress:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.start = time.perf_counter()

    def run(self, step: Step, call: Callable[[], StepOutcome]) -> StepOutcome:
        return call()

    def ended(self, outcome: StepOutcome) -> None:
        if not self.enabled or (outcome.passed and outcome.out_dir is None and not outcome.reused):
            return  # a reference step with nothing to compute
        how = "reused" if outcome.reused else f"{outcome.seconds:.1f}s"
        status = outcome.status.value if outcome.status is not StepStatus.PASSED else "ok"
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"  {elapsed:6.1f}s  {outcome.step.id:<28} {status:<8} {how}\n")
        self.stream.flush()
