"""Per-target results and the run report (the `--json` contract)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from shipyard.precision import Precision
from shipyard.signature import DimRange

__all__ = [
    "FORMAT_VERSION",
    "BatchTiming",
    "FileEntry",
    "GateResult",
    "Metrics",
    "RunReport",
    "RuntimeTiming",
    "Status",
    "StepRecord",
    "StepStatus",
    "TargetReport",
    "VariantMetrics",
]

FORMAT_VERSION = 2  # 2: steps, check gates, per-run runtimes, typed envelopes


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
    scaled_abs_err: float | None = None  # max |a-b| / max(1, max |ref|), per output: max_abs_err's gate
    top1_agreement: float | None = None  # share of classifier-like rows where the top class agrees
    top5_agreement: float | None = None  # share where the source's top class is in the artifact's top 5
    mean_kl: float | None = None  # mean KL(source || artifact) of classifier-like rows' distributions
    latency_ms_p50: float | None = None
    load_ms: float | None = None
    artifact_bytes: int | None = None
    export_s: float | None = None
    validate_s: float | None = None


class VariantMetrics(BaseModel):
    """Comparison of one shape variant in one artifact file, run in one runtime."""

    variant: str
    file: str
    runtime: str = ""
    dims: dict[str, int]
    max_abs_err: float
    max_rel_err: float
    cosine: float
    rel_l2_err: float
    scaled_abs_err: float | None = None  # max |a-b| / max(1, max |ref|) of the worst output
    worst_output: str
    label_rows: int = 0  # rows of classifier-like outputs (shipyard.compare.classifier_like)
    top1_agreed: int = 0  # of those, where the artifact's top class is the source's
    top5_rows: int = 0  # rows of classifier-like outputs with more than 5 classes
    top5_agreed: int = 0  # of those, where the source's top class is in the artifact's top 5
    kl_sum: float = 0.0  # KL(source || artifact) summed over the classifier-like rows


class GateResult(BaseModel):
    """A numeric gate (value against limit) or a check gate (passed, with the reason in detail)."""

    name: str
    limit: float | None = None
    value: float | None = None
    passed: bool
    detail: str | None = None

    def describe(self) -> str:
        if self.limit is None:
            return f"gate {self.name} failed: {self.detail or 'check failed'}"
        op = ">=" if "min_" in self.name else "<="
        got = "not measured" if self.value is None else f"{self.value:.3g}"
        return f"gate {self.name} failed: {got}, needs {op} {self.limit:.3g}"


class StepStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # a step it needs failed
    NOOP = "noop"  # nothing to do (e.g. no narrowed envelope to compute references for)


class StepRecord(BaseModel):
    """One step of the run's graph: what it did, how long it took, whether the cache served it."""

    step: str  # e.g. convert:onnx, export:tfjs, validate:tfjs
    status: StepStatus
    seconds: float  # spent in this run (a reused step costs only the cache lookup)
    started_at: float | None = None  # unix time it started; None if it never started
    reused: bool = False  # served from the step cache
    original_seconds: float | None = None  # what it took when it ran, for a reused step
    targets: list[str] = []  # the targets it served
    error: str | None = None
    folder: str | None = None  # where it ran, relative to the run folder (job, log, reproduce.sh)


class BatchTiming(BaseModel):
    """Latency and throughput at one batch size (one validation variant; min/typical/max
    variants move every dynamic dim, so `other_dims` says what else changed with the batch)."""

    variant: str
    batch: int
    other_dims: dict[str, int] = {}
    latency_ms_p50: float
    items_per_s: float


class RuntimeTiming(BaseModel):
    """How one artifact file loaded and ran in one runtime (a backend, Node or a browser)."""

    file: str
    runtime: str
    load_ms: float
    latency_ms_p50: float | None  # at the typical variant
    batches: list[BatchTiming] = []  # with a dynamic batch: every variant's, by batch size

    def batch_only(self) -> bool:
        """Whether the batch size is the only dim that differs between the timed variants."""
        return len({tuple(sorted(b.other_dims.items())) for b in self.batches}) <= 1


class TargetReport(BaseModel):
    status: Status
    precision: Precision | None = None  # the rung of its precision ladder (None: not built)
    files: list[FileEntry] = []
    metrics: Metrics = Metrics()
    error: str | None = None
    gates: list[GateResult] = []
    variants: list[VariantMetrics] = []
    envelope: dict[str, DimRange] = {}  # dim -> the range the artifact serves
    notes: list[str] = []
    interface: dict[str, str] = {}  # tensor -> the dtype the artifact takes or gives, where it differs
    runtimes: list[RuntimeTiming] = []  # per runtime the artifact ran in (metrics hold the worst)


class RunReport(BaseModel):
    format_version: int = FORMAT_VERSION
    model: str
    version: int | None  # None when nothing was published
    source_sha256: str
    toolchain: dict[str, str]
    targets: dict[str, TargetReport]
    run_id: str | None = None
    steps: list[StepRecord] = []
    workdir: str | None = None  # the run folder, when it was kept (a target failed, or asked to)
    html_report: str | None = None  # where the published version's HTML report is (registry URL)

    def reused_steps(self) -> list[str]:
        return [s.step for s in self.steps if s.reused]

    def exit_code(self) -> int:
        ok = all(t.status is not Status.FAILED for t in self.targets.values())  # skipped: no path
        return 0 if ok else 1

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
