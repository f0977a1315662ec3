"""The storage interface every registry backend implements (local folder, S3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

__all__ = ["Backend", "Progress"]

Progress = Callable[[int], None]


class Backend(Protocol):
    """Keys are '/'-separated paths under the registry's root or prefix.

    ETags are opaque strings that change whenever the stored bytes change.
    """

    url: str

    def located(self) -> bool:
        """Whether the registry's root exists: its folder, or its bucket."""
        ...

    def read(self, key: str) -> tuple[bytes, str]:
        """Bytes and ETag of a small object; NotFound if absent."""
        ...

    def create(self, key: str, data: bytes) -> None:
        """Store only if absent (If-None-Match: *); AlreadyExists otherwise."""
        ...

    def replace(self, key: str, data: bytes, etag: str | None) -> None:
        """Store if the current ETag is `etag` (None: if absent); Conflict otherwise."""
        ...

    def exists(self, key: str) -> bool: ...

    def upload_file(self, key: str, path: Path, sha256: str, progress: Progress | None = None) -> None:
        """Stream a file to `key`; IntegrityError unless what is stored has digest `sha256`.

        `progress` is called with the number of bytes sent so far.
        """
        ...

    def download_file(self, key: str, path: Path) -> str:
        """Stream `key` into `path`; returns the sha256 of the bytes written (the caller checks it)."""
        ...

    def list(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Every key under `prefix`, with its last-modified time (timezone-aware)."""
        ...

    def delete(self, key: str) -> None: ...

    def move(self, key: str, dest: str) -> None:
        """Move `key` to `dest` (replacing it); its last-modified time becomes now. NotFound if absent."""
        ...

    def sweep_partial_uploads(self, older_than: timedelta) -> int:
        """Remove uploads a crashed writer left unfinished; returns how many."""
        ...
