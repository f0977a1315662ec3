"""What shapes a step's output besides its inputs: tool versions, our own code, the host class.

A step's cache key holds the versions of the distributions it declares, a digest of Shipyard's
own code (any edit to shipyard/, exporters/ or targets/ invalidates every cached step: coarse,
but never stale), the pinned toolchain environment and the host's ISA class. Versions are read
from installed package metadata, npm's lockfile, `node --version` and `gcc -dumpfullversion`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from shipyard import __version__
from targets._browser import chromium_binary
from targets._node import JS_DIR, node_binary

__all__ = ["code_digest", "host_class", "installed_versions", "tool_version", "toolchain_versions"]

ROOT = Path(__file__).resolve().parents[2]
CODE_FOLDERS = ("shipyard", "exporters", "targets")


def _npm_version(package: str) -> str:
    try:
        lock = json.loads((JS_DIR / "package-lock.json").read_text())
        return str(lock["packages"][f"node_modules/{package}"]["version"])
    except (OSError, KeyError, ValueError):
        return "missing"


def _command_version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    return out.stdout.strip().lstrip("v") or "missing"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def installed_versions() -> dict[str, str]:
    """Every installed distribution's version by normalized name, read from the names of the
    `<name>-<version>.dist-info` folders on sys.path (the first one found wins, as for imports):
    parsing every METADATA file would cost a CLI run about 0.1 s."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            if folder.endswith(".dist-info") and "-" in folder:
                name, _, version = folder.removesuffix(".dist-info").partition("-")
                found.setdefault(_normalized(name), version)
    return found


@functools.cache
def tool_version(name: str) -> str:
    """The version of a distribution, an npm package (`npm:<name>`), `node`, `gcc` or `chromium`."""
    if name.startswith("npm:"):
        return _npm_version(name.removeprefix("npm:"))
    if name == "node":
        try:
            return _command_version([node_binary(), "--version"])
        except RuntimeError:
            return "missing"
    if name == "gcc":
        return _command_version(["gcc", "-dumpfullversion"])
    if name == "chromium":  # the web targets' validation runs in it when it is there
        chromium = chromium_binary()
        found = re.search(r"\d+(\.\d+)+", _command_version([chromium, "--version"]) if chromium else "")
        return found.group(0) if found else "off"
    if version := installed_versions().get(_normalized(name)):
        return version
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def toolchain_versions(names: set[str] | list[str] | tuple[str, ...]) -> dict[str, str]:
    """Tool -> version for Shipyard, Python and the named tools."""
    versions = {"shipyard": __version__, "python": platform.python_version()}
    versions.update({name: tool_version(name) for name in sorted(names)})
    return versions


@functools.cache
def code_digest() -> str:
    """sha256 over Shipyard's own step code: Python modules, JS harnesses, the npm lockfile."""
    digest = hashlib.sha256()
    files = []
    for folder in CODE_FOLDERS:
        for parent, dirs, names in os.walk(ROOT / folder):
            dirs[:] = [d for d in dirs if d not in ("node_modules", "__pycache__")]
            files += [Path(parent, n) for n in names if n.endswith(".py")]
    files += [*JS_DIR.glob("*.mjs"), *JS_DIR.glob("*.js"), JS_DIR / "package-lock.json"]
    for path in sorted(f for f in files if f.is_file()):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def host_class() -> str:
    """Machine and x86-64 ISA level, e.g. x86_64-v4: cache entries never cross ISA classes."""
    machine = platform.machine()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return machine
    if {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags:
        return f"{machine}-v4"
    if {"avx2", "fma", "bmi2"} <= flags:
        return f"{machine}-v3"
    return f"{machine}-v2" if "sse4_2" in flags else machine
