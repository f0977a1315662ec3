"""What the parent hands a child process, and what the child hands back (JSON files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipyard.signature import Signature
from shipyard.source import SourceKind

__all__ = ["ArtifactRun", "ExportJob", "ExportResult", "RuntimeJob", "RuntimeResult", "VariantInputs"]


class ExportJob(BaseModel):
    target: str
    model_name: str
    source: str
    source_kind: SourceKind
    signature: Signature
    options: dict[str, Any] = {}
    out_dir: str  # the artifact folder: everything in it is published

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)

    @property
    def source_path(self) -> Path:
        return Path(self.source)


class ExportResult(BaseModel):
    files: list[str]  # relative to out_dir, '/'-separated
    envelope: dict[str, dict[str, int]] = {}  # dim -> {min, max} when narrower than declared
    notes: list[str] = []
    metrics: dict[str, float | int] = {}  # format-specific facts, e.g. int4 weight share


class VariantInputs(BaseModel):
    name: str
    dims: dict[str, int]
    inputs: str  # .npz of input arrays, keyed by input name


class RuntimeJob(BaseModel):
    target: str
    model_name: str
    artifact_dir: str
    files: list[str]
    signature: Signature
    options: dict[str, Any] = {}
    variants: list[VariantInputs]
    out_dir: str  # where the harness writes outputs
    repeats: int = 10  # timed runs of the typical variant for latency

    def artifact(self, rel: str) -> Path:
        return Path(self.artifact_dir) / rel


class ArtifactRun(BaseModel):
    """One artifact file run on every variant: variant name -> .npz of outputs."""

    file: str
    outputs: dict[str, str]
    role: str = "artifact"  # "baseline": an unpublished reference point held to float32 gates
    load_ms: float
    latency_ms_p50: float


class RuntimeResult(BaseModel):
    runs: list[ArtifactRun]
    notes: list[str] = []
