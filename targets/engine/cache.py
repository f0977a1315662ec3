"""Step results, kept by key: the digests of a step's inputs, its options and its fingerprint.

Layout under the cache root ($SHIPYARD_HOME/cache/steps by default):

    <key[:2]>/<key>/out/...        what the step wrote (an export's artifact files)
    <key[:2]>/<key>/entry.json     the step's result (or its error) and how long it took

An entry appears whole or not at all: a finished step's output folder is moved into a private
folder under the cache root, which is then renamed into place. Its files are made read-only,
and every lookup checks them against the digest recorded when the step ran: an entry that
changed is removed and the step runs again. A successful step is kept, and so is a step whose
converter raised an error that would repeat (the same inputs fail the same way), but not one
that crashed, timed out or ran out of memory or disk. At most every five minutes, entries unused
for `max_age_days` are removed, and the least recently used ones while the cache holds more
than $SHIPYARD_CACHE_MAX_GB (50 by default; entries used in the last hour stay). A store that
finds the key's folder taken keeps the entry there only if it is whole and intact (a concurrent
run's); anything else there is replaced.

Entries are trusted as the step's own output, so the root must be this user's and closed to
writes by others (created 0700); a root that is not is not used (steps run uncached, with a
warning), like the warm servers' socket folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipyard.digests import sha256_file
from shipyard.runtime_dir import owned_folder
from shipyard.settings import settings

__all__ = ["CacheEntry", "CacheHit", "StepCache", "cache_key", "tree_digest"]

DEFAULT_MAX_AGE_DAYS = 30
PRUNE_EVERY_S = 300

IN_USE_S = 3600  # entries used this recently are never evicted for size

log = logging.getLogger(__name__)


def max_cache_bytes() -> int:
    """$SHIPYARD_CACHE_MAX_GB (default 50) in bytes."""
    return int(settings().cache_max_gb * 1e9)


@dataclass(frozen=True)
class _Stored:
    folder: Path
    used: float  # the folder's mtime: set when stored, refreshed by every lookup
    size: int


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


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
        self.max_age_days = max_age_days
        self.root = root if root is None else _private_root(root)

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
        entry = _intact_entry(folder)
        if entry is None:
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
        for _ in range(3):
            try:
                os.rename(staged, final)
                return final / "out"
            except OSError:
                if _intact_entry(final) is not None:  # a concurrent run stored the same step first
                    shutil.rmtree(staged, ignore_errors=True)
                    return final / "out"
                _discard(final)  # partial (a killed writer) or changed: ours replaces it
        raise OSError(f"could not store step result {key[:12]} in the cache at {self.root}")

    def prune(self) -> int:
        """At most every PRUNE_EVERY_S: remove entries unused for max_age_days, then the least
        recently used ones while the cache holds more than $SHIPYARD_CACHE_MAX_GB; returns how many."""
        if self.root is None or not self._due():
            return 0
        now = time.time()
        old, in_use, limit = now - self.max_age_days * 86400, now - IN_USE_S, max_cache_bytes()
        entries = sorted(self._entries(), key=lambda e: e.used)  # least recently used first
        total, removed = sum(e.size for e in entries), 0
        for entry in entries:
            # a run may still read what it used in the last hour
            if entry.used >= old and (total <= limit or entry.used > in_use):
                break
            shutil.rmtree(entry.folder, ignore_errors=True)
            total, removed = total - entry.size, removed + 1
        if total > limit:
            log.warning("step cache %s holds %.1f GB, above its limit, all in use", self.root, total / 1e9)
        return removed

    def _due(self) -> bool:
        assert self.root is not None
        marker = self.root / ".pruned"
        with contextlib.suppress(OSError):
            if time.time() - marker.stat().st_mtime < PRUNE_EVERY_S:
                return False
        marker.touch()
        return True

    def _entries(self) -> list[_Stored]:
        """Every entry (and abandoned staging folder) with its size and when it was last used."""
        assert self.root is not None
        found = []
        for folder in self.root.glob("*/*"):
            with contextlib.suppress(OSError):
                if folder.is_dir():
                    found.append(_Stored(folder, folder.stat().st_mtime, _folder_bytes(folder)))
        return found


def _private_root(root: Path) -> Path | None:
    """`root`, created 0700 if absent, when it is this user's and nobody else may write to it."""
    if owned_folder(root, closed=0o022):
        return root
    log.warning(
        "step cache %s is not a folder of this user's closed to writes by others; steps run uncached", root
    )
    return None


def _intact_entry(folder: Path) -> CacheEntry | None:
    """The entry in `folder` if it is whole and its files match their digest; a changed one is removed."""
    try:
        entry = CacheEntry.model_validate_json((folder / "entry.json").read_text())
        intact = not entry.ok or tree_digest(folder / "out") == entry.digest
    except (OSError, ValueError):
        return None
    if not intact:
        _discard(folder)
        return None
    return entry


def _discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)  # read-only files go too: their folders are writable
