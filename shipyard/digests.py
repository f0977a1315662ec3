"""File digests: the sha256 that names a blob, and per-part CRC32s computed in the same read.

A file is hashed once and remembered while it is unchanged (same device, inode, size and
modification time): the report's digests and a later upload share that one read. The part
CRC32s let S3 check every uploaded part on arrival against the bytes that were hashed, so a
file that changed after hashing can never be stored under the old digest.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from pathlib import Path

from pydantic import BaseModel

__all__ = ["PART_BYTES", "FileDigests", "file_digests", "sha256_file"]

PART_BYTES = 16 * 1024 * 1024  # the registry's multipart part size
_READ = 1 << 20


class FileDigests(BaseModel):
    sha256: str
    size: int
    part_crc32: tuple[int, ...]  # one per PART_BYTES of the file, in order


@functools.lru_cache(maxsize=4096)
def _digests(path: str, device: int, inode: int, size: int, mtime_ns: int) -> FileDigests:
    whole = hashlib.sha256()
    parts = []
    with open(path, "rb") as fh:
        while True:
            crc, left = 0, PART_BYTES
            while left and (chunk := fh.read(min(_READ, left))):
                whole.update(chunk)
                crc = zlib.crc32(chunk, crc)
                left -= len(chunk)
            if left == PART_BYTES:
                break
            parts.append(crc)
    return FileDigests(sha256=whole.hexdigest(), size=size, part_crc32=tuple(parts))


def file_digests(path: Path) -> FileDigests:
    """sha256 and part CRC32s of a file, read once while the file stays unchanged."""
    st = path.stat()
    return _digests(str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def sha256_file(path: Path) -> str:
    return file_digests(path).sha256
