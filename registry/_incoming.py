"""Uploaded sources waiting to be packaged: `<registry>/incoming/<sha256>`, and fetching them back."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from registry._registry import Registry
from shipyard.errors import InputError, IntegrityError

__all__ = ["fetch_source", "store_incoming"]


def store_incoming(registry: Registry, path: Path, sha256: str) -> str:
    """Store an uploaded source under its digest; returns the URI the flow reads it from."""
    key = f"incoming/{sha256}"
    if not registry.backend.exists(key):
        registry.backend.upload_file(key, path, sha256)
    return f"{registry.url.rstrip('/')}/{key}"


def fetch_source(source: str, dest_dir: Path) -> Path:
    """A local path for SOURCE: a path or file:// URI as is, an s3:// object downloaded.

    Objects under incoming/ are named by their digest and checked against it.
    """
    parsed = urlparse(source)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else source)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InputError(f"source {source!r}: use a path, file:///abs/path or s3://bucket/key")
    from registry._s3 import S3Backend

    key = parsed.path.lstrip("/")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / key.rsplit("/", 1)[-1]
    got = S3Backend(parsed.netloc).download_file(key, dest)
    if "/incoming/" in f"/{key}":
        expected = key.rsplit("/", 1)[-1]
        if got != expected:
            raise IntegrityError(f"{source}: content does not match its digest name")
    return dest
