"""Per-target results and the run report (the `--json` contract)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "FORMAT_VERSION",
    "FileEntry",
    "GateResult",
    "Metrics",
    "RunReport",
    "Status",
    "TargetReport",
    "VariantMetrics",
]

FORMAT_VERSION = 1


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class FileEntry(BaseModel):
    path: str  # relative to the target's artifact folder, '/'-separated
    sha256: str
    bytes: int


class Metrics(BaseModel):
    """Worst case over every shape variant and output (None: not measured)."""

    model_config = ConfigDict(extra="allow")

    max_abs_err: float | None = None
    max_rel_err: float | None = None
    cosine: float | None = None
    rel_l2_err: float | None = None  # ||a-b|| / ||ref||
    latency_ms_p50: float | None = None
    load_ms: float | None = None
    artifact_bytes: int | None = None
    export_s: float | None = None
    validate_s: float | None = None


class VariantMetrics(BaseModel):
    """Comparison of one shape variant in one artifact file."""

    variant: str
    file: str
    dims: dict[str, int]
    max_abs_err: float
    max_rel_err: float
    cosine: float
    rel_l2_err: float
    worst_output: str


class GateResult(BaseModel):
    name: str
    limit: float
    value: float | None
    passed: bool

    def describe(self) -> str:
        op = ">=" if "min_" in self.name else "<="
        got = "not measured" if self.value is None else f"{self.value:.3g}"
        return f"gate {self.name} failed: {got}, needs {op} {self.limit:.3g}"


class TargetReport(BaseModel):
    status: Status
    files: list[FileEntry] = []
    metrics: Metrics = Metrics()
    error: str | None = None
    gates: list[GateResult] = []
    variants: list[VariantMetrics] = []
    envelope: dict[str, dict[str, int]] = {}  # dim -> {min, max} the artifact serves
    notes: list[str] = []


class RunReport(BaseModel):
    format_version: int = FORMAT_VERSION
    model: str
    version: int | None  # None when nothing was published
    source_sha256: str
    toolchain: dict[str, str]
    targets: dict[str, TargetReport]
    run_id: str | None = None

    def exit_code(self) -> int:
        ok = all(t.status is Status.PASSED for t in self.targets.values())
        return 0 if ok else 1

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
