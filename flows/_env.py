"""Settings applied before Prefect is imported: no phone-home, quiet local runs."""

from __future__ import annotations

import os

__all__ = ["configure_prefect_env"]


def configure_prefect_env() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
