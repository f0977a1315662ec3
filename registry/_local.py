"""Local-folder backend: atomic creates by hard link, compare-and-swap under a file lock."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from registry._backend import Progress
from shipyard.errors import AlreadyExists, Conflict, IntegrityError, NotFound, RegistryError

__all__ = ["LocalBackend", "temp_file_beside"]


def _umask() -> int:
    """This process's umask, read without setting it (os.umask would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def temp_file_beside(path: Path, prefix: str) -> Path:
    """An empty temporary file in `path`'s folder, with the mode the umask gives new files (mkstemp
    makes 0600, and a renamed file keeps it: a server running as another user could not read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(name)


def _copy_hashed(src: BinaryIO, out: BinaryIO, progress: Progress | None = None) -> str:
    """Copy src to out in one pass; returns the sha256 of the bytes copied."""
    digest = hashlib.sha256()
    copied = 0
    while chunk := src.read(1 << 20):
        digest.update(chunk)
        out.write(chunk)
        copied += len(chunk)
        if progress:
            progress(copied)
    return digest.hexdigest()


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()

    def located(self) -> bool:
        return self.root.is_dir()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise RegistryError(f"key {key!r} escapes the registry root")
        return path

    def _write_temp(self, path: Path, data: bytes) -> Path:
        tmp = temp_file_beside(path, ".tmp-")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def read(self, key: str) -> tuple[bytes, str]:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(key) from None
        return data, _etag(data)

    def create(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)  # atomic and fails if the name exists
        except FileExistsError:
            raise AlreadyExists(key) from None
        finally:
            tmp.unlink()

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def replace(self, key: str, data: bytes, etag: str | None) -> None:
        path = self._path(key)
        with self._locked(path):
            try:
                current: str | None = _etag(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != etag:
                raise Conflict(f"{key} changed (expected {etag}, found {current})")
            tmp = self._write_temp(path, data)
            os.replace(tmp, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def upload_file(self, key: str, path: Path, sha256: str, progress: Progress | None = None) -> None:
        dest = self._path(key)
        tmp = temp_file_beside(dest, ".tmp-")
        try:
            with path.open("rb") as src, tmp.open("wb") as out:
                digest = _copy_hashed(src, out, progress)
                out.flush()
                os.fsync(out.fileno())
            if digest != sha256:
                raise IntegrityError(f"{path} changed while uploading (sha256 {digest})")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def download_file(self, key: str, path: Path) -> str:
        try:
            with self._path(key).open("rb") as src, path.open("wb") as out:
                return _copy_hashed(src, out)
        except FileNotFoundError:
            raise NotFound(key) from None

    def list(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-") and not path.name.endswith(".lock"):
                mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                yield path.relative_to(self.root).as_posix(), mtime

    def sweep_partial_uploads(self, older_than: timedelta) -> int:
        cutoff = datetime.now(UTC) - older_than
        swept = 0
        for tmp in self.root.rglob(".tmp-*"):
            if datetime.fromtimestamp(tmp.stat().st_mtime, UTC) < cutoff:
                tmp.unlink(missing_ok=True)
                swept += 1
        return swept

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def move(self, key: str, dest: str) -> None:
        source, target = self._path(key), self._path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)  # atomic
        except FileNotFoundError:
            raise NotFound(key) from None
        os.utime(target)
