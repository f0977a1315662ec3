"""Uploaded sources waiting to be packaged: `<registry>/incoming/<sha256>`, and fetching them back."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from registry._registry import Registry
from shipyard.digests import sha256_file
from shipyard.errors import InputError, IntegrityError

__all__ = ["fetch_source", "store_incoming"]

DIGEST_NAMED = re.compile(r"(?:^|/)(?:incoming|blobs/sha256)/([0-9a-f]{64})$")


def store_incoming(registry: Registry, path: Path, sha256: str) -> str:
    """Store an uploaded source under its digest; returns the URI the flow reads it from."""
    key = f"incoming/{sha256}"
    if not registry.backend.exists(key):
        registry.backend.upload_file(key, path, sha256)
    return f"{registry.url.rstrip('/')}/{key}"


def fetch_source(source: str, dest_dir: Path) -> Path:
    """A local path for SOURCE: a path or file:// URI as is, an s3:// object downloaded.

    Objects named by their digest (`incoming/<sha256>`, `blobs/sha256/<sha256>`) are checked
    against it, local or downloaded: a blob changed in the registry is refused, not packaged.
    """
    parsed = urlparse(source)
    if parsed.scheme in ("", "file"):
        local = Path(unquote(parsed.path) if parsed.scheme else source)
        if (expected := _digest_name(local.as_posix())) and local.is_file():
            _check_digest(source, sha256_file(local), expected)
        return local
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InputError(f"source {source!r}: use a path, file:///abs/path or s3://bucket/key")
    from registry._s3 import S3Backend

    key = parsed.path.lstrip("/")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / key.rsplit("/", 1)[-1]
    got = S3Backend(parsed.netloc).download_file(key, dest)
    if expected := _digest_name(key):
        _check_digest(source, got, expected)
    return dest


def _digest_name(key: str) -> str | None:
    """The digest a key is named by, if it is a content-addressed one."""
    found = DIGEST_NAMED.search(key)
    return found.group(1) if found else None


def _check_digest(source: str, got: str, expected: str) -> None:
    if got != expected:
        raise IntegrityError(f"{source}: content does not match its digest name")
