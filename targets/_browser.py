"""Run a web artifact in headless Chromium (Debian's package) through targets/js/browser_run.mjs.

Node stays the fast default: when no Chromium is installed (or SHIPYARD_BROWSER=off), the web
targets are proven in Node only and their notes say so.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from targets._jobs import RuntimeJob, RuntimeResult
from targets._node import run_js_harness

__all__ = ["browser_notes", "chromium_binary", "run_in_chromium"]


def chromium_binary() -> str | None:
    """$SHIPYARD_CHROMIUM, else `chromium` on PATH; None when absent or SHIPYARD_BROWSER=off."""
    if os.environ.get("SHIPYARD_BROWSER", "on").lower() in ("off", "0", "false", "no"):
        return None
    return os.environ.get("SHIPYARD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def run_in_chromium(
    job: RuntimeJob, kind: str, backends: list[str], extra: dict[str, Any] | None = None
) -> RuntimeResult | None:
    """The artifact's first file run on each backend in a Chromium page; None without Chromium."""
    chromium = chromium_binary()
    if chromium is None or not backends:
        return None
    models = [{"file": job.files[0], "path": str(job.artifact(job.files[0]))}]
    browser = {
        "kind": kind,
        "backends": backends,
        "chromium": chromium,
        "artifact_dir": job.artifact_dir,
        "artifact_files": job.files,
        "output_names": job.signature.output_names(),
        **(extra or {}),
    }
    return run_js_harness("browser_run.mjs", job, models, extra=browser, folder="browser")


def browser_notes(result: RuntimeResult | None) -> list[str]:
    if result is None:
        return ["proven in Node only: no Chromium (install Debian's chromium, or unset SHIPYARD_BROWSER=off)"]
    return [f"ran in {', '.join(r.runtime for r in result.runs)}"]
