"""What the registry stores about a version and an alias."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from shipyard.report import TargetReport
from shipyard.signature import Signature

__all__ = ["AliasRecord", "RunInfo", "SourceInfo", "VersionManifest"]

MANIFEST_FORMAT = 1


class SourceInfo(BaseModel):
    sha256: str
    kind: str
    bytes: int
    filename: str


class RunInfo(BaseModel):
    run_id: str
    shipyard_version: str
    flow_run_id: str | None = None


class VersionManifest(BaseModel):
    """Immutable once written: blobs first, then this file, then aliases."""

    format_version: int = MANIFEST_FORMAT
    model: str
    version: int
    created_at: str
    source: SourceInfo
    spec: dict[str, Any]
    signature: Signature
    toolchain: dict[str, str]
    run: RunInfo
    targets: dict[str, TargetReport]  # failed targets too, with their reasons; files only if passed
    identity: str = ""  # digest of source + spec + toolchain + target names: same identity, same version

    def compute_identity(self) -> str:
        payload = {
            "source": self.source.sha256,
            "spec": self.spec,
            "toolchain": self.toolchain,
            "targets": sorted(self.targets),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class AliasRecord(BaseModel):
    model: str
    alias: str
    version: int
    updated_at: str
