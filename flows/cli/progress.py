"""What `shipyard package` shows while it runs: a live table on a terminal, plain lines with -v when
piped (no escape codes), nothing with -q."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from flows.cli._common import stderr_is_terminal
from shipyard.report import StepStatus
from targets.pipeline import NoHooks, Step, StepHooks, StepOutcome

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["LiveProgress", "StepLines", "progress_for"]


def _shown(outcome: StepOutcome) -> bool:
    """A reference step with nothing to compute is not worth a line."""
    return not (outcome.passed and outcome.out_dir is None and not outcome.reused)


class StepLines(NoHooks):
    """One plain line per finished step."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.start = time.perf_counter()

    def ended(self, outcome: StepOutcome) -> None:
        if not _shown(outcome):
            return
        how = "reused" if outcome.reused else f"{outcome.seconds:.1f}s"
        status = outcome.status.value if outcome.status is not StepStatus.PASSED else "ok"
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"  {elapsed:6.1f}s  {outcome.step.id:<28} {status:<8} {how}\n")
        self.stream.flush()


@dataclass
class _Row:
    step: str = "waiting"
    state: str = ""
    done_at: float | None = None


class LiveProgress:
    """A table with a row per target: the step it is at, the time it has taken, how it ended."""

    def __init__(self, targets: list[str], stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.rows = {t: _Row() for t in targets}
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        self.live = Live(
            console=Console(file=stream),
            get_renderable=self._render,
            refresh_per_second=4,
            transient=True,
        )

    def __enter__(self) -> LiveProgress:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def _render(self) -> RenderableType:
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("target", "step", "time", ""):
            table.add_column(column)
        now = time.perf_counter()
        with self.lock:
            for name, row in self.rows.items():
                seconds = (row.done_at or now) - self.start
                style = {"failed": "red", "checked": "green"}.get(row.state, "")
                table.add_row(
                    name, row.step, f"{seconds:5.1f}s", f"[{style}]{row.state}[/]" if style else row.state
                )
        return table

    def run(self, step: Step, call: Callable[[], StepOutcome]) -> StepOutcome:
        with self.lock:
            for target in step.targets:
                row = self.rows.get(target)
                if row is not None and row.done_at is None:
                    row.step, row.state = step.id, "running"
        return call()

    def ended(self, outcome: StepOutcome) -> None:
        if not _shown(outcome):
            return
        failed = outcome.status in (StepStatus.FAILED, StepStatus.SKIPPED)
        with self.lock:
            for target in outcome.step.targets:
                row = self.rows.get(target)
                if row is None or row.done_at is not None:
                    continue
                row.step = outcome.step.id
                if failed:
                    row.state, row.done_at = "failed", time.perf_counter()
                elif outcome.step.id == f"validate:{target}":
                    row.state, row.done_at = "checked", time.perf_counter()
                else:
                    row.state = "reused" if outcome.reused else "done"


@contextmanager
def progress_for(targets: list[str], verbosity: int, stream: TextIO | None = None) -> Iterator[StepHooks]:
    """The right view for where stderr goes and how talkative the user asked us to be."""
    import sys

    out = stream or sys.stderr
    if verbosity < 0:
        yield NoHooks()
    elif verbosity == 0 and stream is None and stderr_is_terminal():
        with LiveProgress(targets, out) as live:
            yield live
    elif verbosity > 0:
        yield StepLines(out)
    else:
        yield NoHooks()
