"""The one rule that turns a runtime's raw timings into the reported latency."""

from __future__ import annotations

import statistics

__all__ = ["latency_p50"]


def latency_p50(times_ms: list[float]) -> float | None:
    """Median of the timed runs in milliseconds (None when nothing was timed)."""
    return round(statistics.median(times_ms), 4) if times_ms else None
