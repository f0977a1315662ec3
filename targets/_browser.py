"""Run a web artifact in headless Chromium (Debian's package) through targets/js/browser_run.mjs.

Node stays the fast default: when no Chromium is installed (or SHIPYARD_BROWSER=off), the web
targets are proven in Node only and their notes say so.
"""

from __future__ import annotations

import shutil
from typing import Any

from shipyard.settings import settings
from targets._jobs import Check, RuntimeJob, RuntimeResult
from targets._node import HarnessModel, run_js_harness

__all__ = ["chromium_binary", "run_in_chromium", "with_browser"]


def chromium_binary() -> str | None:
    """$SHIPYARD_CHROMIUM, else `chromium` on PATH; None when absent or SHIPYARD_BROWSER=off."""
    env = settings()
    if not env.browser:
        return None
    return env.chromium or shutil.which("chromium") or shutil.which("chromium-browser")


def run_in_chromium(
    job: RuntimeJob, kind: str, model: HarnessModel, backends: list[str], extra: dict[str, Any] | None = None
) -> RuntimeResult | None:
    """`model` run on each backend in a Chromium page; None without Chromium or backends. A page
    that fails comes back as a failed `chromium` check with its reason (the target fails)."""
    chromium = chromium_binary()
    if chromium is None or not backends:
        return None
    browser = {
        "kind": kind,
        "backends": backends,
        "chromium": chromium,
        "artifact_dir": job.artifact_dir,
        "artifact_files": job.files,
        "output_names": job.signature.output_names(),
        **(extra or {}),
    }
    try:
        return run_js_harness("browser_run.mjs", job, [model], extra=browser, folder="browser")
    except RuntimeError as exc:
        return RuntimeResult(runs=[], checks=[Check(name="chromium", passed=False, detail=str(exc))])


def with_browser(node: RuntimeResult, browser: RuntimeResult | None) -> RuntimeResult:
    """The Node runs and checks, and the browser's; notes say which runtimes ran."""
    if browser is None:
        notes = ["proven in Node only: no Chromium, or no browser backend asked for (SHIPYARD_BROWSER)"]
        return node.model_copy(update={"notes": [*node.notes, *notes]})
    ran = [r.runtime for r in browser.runs]
    notes = [f"ran in {', '.join(ran)}"] if ran else []
    return RuntimeResult(
        runs=node.runs + browser.runs,
        checks=node.checks + browser.checks,
        notes=node.notes + notes,
        facts={**node.facts, **browser.facts},
    )
