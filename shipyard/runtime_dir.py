"""This user's private runtime folder (sockets, host-wide locks); is a folder the user's own.

`$SHIPYARD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/shipyard`, else `<tmp>/shipyard-<uid>`. A folder
that another user owns or others can enter is refused: whoever could write there could answer
for a server or hold a lock.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from shipyard.settings import settings

__all__ = ["owned_folder", "runtime_dir"]


def runtime_dir(create: bool = True) -> Path | None:
    """The private folder, or None if it is not safe to use."""
    if (explicit := settings().runtime_dir) is not None:
        folder = explicit
    elif xdg := os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(xdg) / "shipyard"
    else:
        folder = Path(tempfile.gettempdir()) / f"shipyard-{os.getuid()}"
    return folder if owned_folder(folder, closed=0o077, create=create) else None


def owned_folder(folder: Path, closed: int, create: bool = True) -> bool:
    """Whether `folder` (created 0700 if absent and `create`) is a folder of this user whose mode
    has none of the `closed` bits (0o077: nobody else may enter; 0o022: nobody else may write)."""
    if create:
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700, parents=True)
    try:
        found = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and not found.st_mode & closed
