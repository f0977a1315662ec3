"""What the registry stores about a version and an alias."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from shipyard.report import Status, TargetReport
from shipyard.signature import Signature

__all__ = ["AliasRecord", "GcItem", "GcReport", "RunInfo", "SourceInfo", "VersionDraft", "VersionManifest"]

MANIFEST_FORMAT = 2  # 2: report format 2 (steps, check gates, typed envelopes)


class SourceInfo(BaseModel):
    sha256: str
    kind: str
    bytes: int
    filename: str


class RunInfo(BaseModel):
    run_id: str
    shipyard_version: str
    flow_run_id: str | None = None


class VersionDraft(BaseModel):
    """Everything a version records except what the registry assigns when it publishes."""

    model: str
    source: SourceInfo
    spec: dict[str, Any]
    signature: Signature
    toolchain: dict[str, str]
    run: RunInfo
    targets: dict[str, TargetReport]  # failed targets too, with their reasons; files only if passed
    samples: SourceInfo | None = None  # the spec's validation inputs, stored as a blob like the source

    def identity_digest(self) -> str:
        """Digest of source + spec + toolchain + target names + the files of the targets that passed:
        the same identity is the same version. A target that passes where it crashed before (crashes
        are not cached) changes what is published, so it makes a new version."""
        payload = {
            "source": self.source.sha256,
            "spec": self.spec,
            "toolchain": self.toolchain,
            "targets": sorted(self.targets),
            "published": {
                name: sorted((f.path, f.sha256) for f in report.files)
                for name, report in sorted(self.targets.items())
                if report.status is Status.PASSED
            },
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class VersionManifest(VersionDraft):
    """Immutable once written: blobs first, then this file, then aliases."""

    format_version: int = MANIFEST_FORMAT
    version: int
    created_at: str
    identity: str  # VersionDraft.identity_digest() of what was published


class AliasRecord(BaseModel):
    model: str
    alias: str
    version: int
    updated_at: str


class GcItem(BaseModel):
    key: str
    age_s: int


class GcReport(BaseModel):
    """What one `gc` moved to the trash, deleted for good, and brought back."""

    dry_run: bool
    trashed: list[GcItem] = []  # unreferenced blobs, moved to trash/
    deleted: list[GcItem] = []  # trash entries past the grace period, unreferenced sources
    restored: list[str] = []  # trash entries a version references again (digests)
    partial_uploads: int = 0  # unfinished uploads removed
