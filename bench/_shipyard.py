"""`shipyard package` as a user runs it, for the benchmarks: a process of its own, no Prefect server,
a home (runs, step cache, registry) of the benchmark's own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benches import the project

__all__ = ["ROOT", "PackageFailed", "cell_text", "default_targets", "package_process", "write_readme_section"]


def default_targets() -> list[str]:
    """What a run of a fixed-shape model builds when no target is named, in catalog order."""
    from targets import default_targets as catalog_defaults

    return [t.name for t in catalog_defaults()]


class PackageFailed(RuntimeError):
    """The command exited with neither 0 nor 1 (bad input, a crash); the message is its stderr's tail."""


def package_process(
    source: Path, home: Path, *flags: str, extra_env: dict[str, str] | None = None
) -> tuple[dict[str, Any], float, float]:
    """The --json report, the wall seconds, and the unix time the command started."""
    env = {**os.environ, "SHIPYARD_HOME": str(home), **(extra_env or {})}
    for key in ("PREFECT_API_URL", "SHIPYARD_REGISTRY"):
        env.pop(key, None)
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "package", str(source), "--json", *flags],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    wall = time.time() - started
    if done.returncode not in (0, 1):
        raise PackageFailed(done.stderr.strip()[-2000:])
    report: dict[str, Any] = json.loads(done.stdout)
    return report, wall, started


def write_readme_section(name: str, rendered: str) -> None:
    """Put `rendered` into README.md between `<!-- name:start -->` and `<!-- name:end -->`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    readme = (ROOT / "README.md").read_text()
    before, rest = readme.split(start, 1)
    after = rest.split(end, 1)[1]
    (ROOT / "README.md").write_text(f"{before}{start}\n{rendered}\n{end}{after}")


def _served(notes: list[str]) -> str:
    """The dims an artifact serves narrower than declared, from its notes ('' when none)."""
    narrowed = re.findall(r"dim (\S+): serves \[(\d+), (\d+)\] of the declared", " ".join(notes))
    return ", ".join(f"{d}={lo}" if lo == hi else f"{d} {lo}-{hi}" for d, lo, hi in narrowed)


def cell_text(target: dict[str, Any]) -> str:
    """`passed` (with the sizes it serves if narrower than declared), or how it failed in a few
    words: the gate and its value, or the step, the ONNX node and the reason."""
    if target["status"] == "passed":
        served = _served(target.get("notes", []))
        return f"passed (serves {served})" if served else "passed"
    error = (target.get("error") or "").replace("|", "/")
    gate = re.match(r"gate (\w+) failed: ([^,;(]+)", error)
    if gate:
        return f"{target['status']}: gate {gate.group(1)} {gate.group(2).strip()[:40]}"
    step = re.match(r"([\w:.-]+(?:\[[^\]]*\])?) failed: \w+: (.*)", error)
    if not step:
        return f"{target['status']}: {error[:60]}"
    reason = step.group(2)
    node = re.match(r"onnx2tf at ONNX node (\S+?): (.*)", reason)
    where, reason = (f" at {node.group(1)}", f"onnx2tf: {node.group(2)}") if node else ("", reason)
    return f"{target['status']} in {step.group(1)}{where}: {reason[:70]}"
