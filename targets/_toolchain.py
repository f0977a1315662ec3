"""The toolchain fingerprint: versions of every package that shaped an artifact."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata

from shipyard import __version__
from targets._catalog import Target
from targets._node import JS_DIR, node_binary

__all__ = ["toolchain_versions"]


def _npm_version(package: str) -> str:
    try:
        lock = json.loads((JS_DIR / "package-lock.json").read_text())
        return str(lock["packages"][f"node_modules/{package}"]["version"])
    except (OSError, KeyError, ValueError):
        return "missing"


def _node_version() -> str:
    try:
        out = subprocess.run([node_binary(), "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip().lstrip("v") or "missing"
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return "missing"


def toolchain_versions(targets: list[Target]) -> dict[str, str]:
    """Package -> version for Shipyard, Python and every package the targets declare."""
    import platform

    versions = {"shipyard": __version__, "python": platform.python_version()}
    names = sorted({name for t in targets for name in t.toolchain})
    for name in names:
        if name.startswith("npm:"):
            versions[name] = _npm_version(name.removeprefix("npm:"))
            versions.setdefault("node", _node_version())
        else:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = "missing"
    return versions
