"""What the registry stores about a version and an alias."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from shipyard.report import TargetReport
from shipyard.signature import Signature

__all__ = ["AliasRecord", "RunInfo", "SourceInfo", "VersionDraft", "VersionManifest"]

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

    def identity_digest(self) -> str:
        """Digest of source + spec + toolchain + target names: the same identity is the same version."""
        payload = {
            "source": self.source.sha256,
            "spec": self.spec,
            "toolchain": self.toolchain,
            "targets": sorted(self.targets),
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
