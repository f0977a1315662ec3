"""Secrets the service generates once and keeps in its state folder, readable by its owner only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["stored_secret", "write_private"]


def write_private(path: Path, text: str) -> None:
    """Create `path` with mode 0600 from the start; never through an existing file or link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def stored_secret(path: Path) -> str:
    """The secret in `path`, generated there on first use."""
    if not path.exists():
        write_private(path, secrets.token_hex(24))
    return path.read_text().strip()
