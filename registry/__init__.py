"""The artifact registry, on a local folder (file://) or S3-compatible storage (s3://)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from registry._backend import Backend
from registry._incoming import fetch_source, store_incoming
from registry._local import LocalBackend
from registry._manifest import AliasRecord, GcReport, RunInfo, SourceInfo, VersionDraft, VersionManifest
from registry._registry import Registry, parse_ref
from registry._submissions import (
    Submission,
    drop_pending,
    mark_dispatched,
    pending_run_ids,
    read_submission,
    record_submission,
    run_id_for,
    submission_key,
)
from shipyard.errors import InputError
from shipyard.settings import settings

__all__ = [
    "AliasRecord",
    "Backend",
    "GcReport",
    "LocalBackend",
    "Registry",
    "RunInfo",
    "SourceInfo",
    "Submission",
    "VersionDraft",
    "VersionManifest",
    "default_registry_url",
    "drop_pending",
    "fetch_source",
    "mark_dispatched",
    "open_registry",
    "parse_ref",
    "pending_run_ids",
    "read_submission",
    "record_submission",
    "run_id_for",
    "store_incoming",
    "submission_key",
]


def default_registry_url() -> str:
    """$SHIPYARD_REGISTRY, else a folder under $SHIPYARD_HOME (default ~/.shipyard)."""
    env = settings()
    if url := env.registry:
        return url
    return (env.home / "registry").resolve().as_uri()


def open_registry(url: str | None = None) -> Registry:
    """A registry for `file:///abs/path`, a plain path, or `s3://bucket/prefix`."""
    url = url or default_registry_url()
    parsed = urlparse(url)
    if parsed.scheme == "":  # a plain path
        return Registry(LocalBackend(Path(url).expanduser()))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"registry URL {url!r}: file URLs must be file:///absolute/path")
        return Registry(LocalBackend(Path(unquote(parsed.path))))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InputError(f"registry URL {url!r}: use s3://bucket/prefix")
        from registry._s3 import S3Backend

        return Registry(S3Backend(parsed.netloc, parsed.path))
    raise InputError(f"registry URL {url!r}: use a path, file:///absolute/path or s3://bucket/prefix")
