"""Step results, kept by key: the digests of a step's inputs, its options and its fingerprint.

Layout under the cache root ($SHIPYARD_HOME/cache/steps by default):

    <key[:2]>/<key>/out/...        what the step wrote (an export's artifact files)
    <key[:2]>/<key>/entry.json     the step's result (or its error) and how long it took

An entry appears whole or not at all: a finished step's output folder is moved into a private
folder under the cache root, which is then renamed into place. Its files are made read-only,
and every lookup checks them against the digest recorded when the step ran: an entry that
changed is removed and the step runs again. A successful step is kept, and so is a step whose
converter raised an error that would repeat (the same inputs fail the same way), but not one
that crashed, timed out or ran out of memory or disk. Entries unused for `max_age_days` are
removed, at most once an hour.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipyard.digests import sha256_file

__all__ = ["CacheEntry", "CacheHit", "StepCache", "cache_key", "tree_digest"]

DEFAULT_MAX_AGE_DAYS = 30
PRUNE_EVERY_S = 3600


def cache_key(material: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that determines a step's output."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path and content digest: the identity of a step's output."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


class CacheEntry(BaseModel):
    step: str
    ok: bool  # False: the step raised, `result` holds its reason
    result: str  # the step's result JSON, or its error
    seconds: float
    digest: str  # tree_digest of out/
    created_at: float


@dataclass(frozen=True)
class CacheHit:
    entry: CacheEntry
    out_dir: Path  # the step's output, as it was when it ran


class StepCache:
    """A folder of step results. `StepCache(None)` is a cache that keeps nothing."""

    def __init__(self, root: Path | None, max_age_days: float = DEFAULT_MAX_AGE_DAYS) -> None:
        self.root = root
        self.max_age_days = max_age_days
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _folder(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / key

    def lookup(self, key: str) -> CacheHit | None:
        """The step's cached result, if it ran before with the same key and its files are intact."""
        if self.root is None:
            return None
        folder = self._folder(key)
        try:
            entry = CacheEntry.model_validate_json((folder / "entry.json").read_text())
            intact = not entry.ok or tree_digest(folder / "out") == entry.digest
        except (OSError, ValueError):
            return None
        if not intact:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(folder)  # recently used: pruning keeps it
        return CacheHit(entry=entry, out_dir=folder / "out")

    def store(self, key: str, out_dir: Path, entry: CacheEntry) -> Path:
        """Move a finished step's output folder into the cache; returns where it lives now."""
        assert self.root is not None
        staging = self.root / "staging"
        staging.mkdir(exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix="step-", dir=staging))
        shutil.move(str(out_dir), staged / "out")  # a rename on the same file system
        for path in (staged / "out").rglob("*"):
            if path.is_file():
                path.chmod(0o444)
        (staged / "entry.json").write_text(entry.model_dump_json(indent=2))
        final = self._folder(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, final)
        except OSError:  # a concurrent run stored the same step first: use theirs
            shutil.rmtree(staged, ignore_errors=True)
        return final / "out"

    def prune(self) -> int:
        """Remove entries unused for max_age_days and abandoned staging folders; returns how many."""
        if self.root is None:
            return 0
        marker = self.root / ".pruned"
        now = time.time()
        with contextlib.suppress(OSError):
            if now - marker.stat().st_mtime < PRUNE_EVERY_S:
                return 0
        marker.touch()
        cutoff = now - self.max_age_days * 86400
        removed = 0
        for folder in self.root.glob("*/*"):
            with contextlib.suppress(OSError):
                if folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
        return removed
