"""What the engine hands a step process, and what the step hands back (JSON files).

A step gets its inputs as explicit paths and its own two folders: `out_dir` (its output, which
the engine may cache and, for an export step, publish) and `work_dir` (scratch). No step
computes another step's folder layout.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from shipyard.gates import Gates
from shipyard.precision import CalibrationSet, Precision
from shipyard.signature import Envelope, Signature

OptionsT = TypeVar("OptionsT", bound=BaseModel)

__all__ = [
    "ArtifactRole",
    "ArtifactRun",
    "Check",
    "ExportJob",
    "ExportResult",
    "RuntimeJob",
    "RuntimeResult",
    "VariantInputs",
    "options_as",
]


def options_as(options: dict[str, Any], model: type[OptionsT]) -> OptionsT:
    """`options` read as `model`: the fields it has. A step's options are its target's (checked
    whole when the run was planned); each exporter, runtime or conversion reads its own part."""
    return model.model_validate({k: v for k, v in options.items() if k in model.model_fields})


class ExportJob(BaseModel):
    """A conversion (to a shared intermediate format) or a target's export."""

    step: str
    model_name: str
    signature: Signature | None = None  # None for a step planned not to wait for it (see Target)
    precision: Precision = Precision.FP32  # the rung a target's export builds (conversions: float32)
    options: dict[str, Any] = {}
    inputs: dict[str, str]  # format name -> the upstream product (a file or a folder)
    out_dir: str  # everything written here is the step's output
    work_dir: str  # scratch
    # a quantizing export (Target.calibrated): what it calibrates or searches on (absolute paths)
    # and the gates its artifact will be judged by
    calibration: CalibrationSet | None = None
    gates: Gates | None = None

    def options_as(self, model: type[OptionsT]) -> OptionsT:
        return options_as(self.options, model)

    def calibration_batches(self, generated: bool = False) -> list[dict[str, Any]]:
        """The calibration inputs, one dict of arrays per batch (ValueError if none were planned);
        `generated`: the generated batches, also when the spec's samples are the calibration."""
        from shipyard.variants import load_arrays

        if self.calibration is None:
            raise ValueError(f"{self.step} was planned without calibration data")
        paths = (
            (self.calibration.generated or self.calibration.batches)
            if generated
            else self.calibration.batches
        )
        return [load_arrays(Path(p)) for p in paths]

    def calibration_note(self) -> str:
        """`; calibrated on ...` for a report note ('' when nothing was calibrated)."""
        return f"; {self.calibration.describe()}" if self.calibration else ""

    @property
    def target_gates(self) -> Gates:
        if self.gates is None:
            raise ValueError(f"{self.step} was planned without its target's gates")
        return self.gates

    def input(self, fmt: str) -> Path:
        return Path(self.inputs[fmt])

    @property
    def interface(self) -> Signature:
        """The source's signature (spec applied); only steps planned to wait for it may ask."""
        if self.signature is None:
            raise ValueError(f"{self.step} was planned without the source's signature")
        return self.signature

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir)


class ExportResult(BaseModel):
    files: list[str]  # relative to out_dir, '/'-separated
    product: str | None = None  # what downstream steps consume, relative to out_dir ("." = the folder)
    envelope: Envelope = {}  # dims it serves narrower than declared
    notes: list[str] = []
    metrics: dict[str, float | int | str] = {}  # format-specific facts, e.g. int4 weight share
    interface: dict[str, str] = {}  # tensor -> the dtype the artifact declares, where it differs


class ArtifactRole(StrEnum):
    SHIPPED = "shipped"
    BASELINE = "baseline"  # an unpublished reference point (e.g. before quantization), float32 gates


class VariantInputs(BaseModel):
    name: str
    dims: dict[str, int]
    inputs: str  # .npz of input arrays, keyed by input name


class RuntimeJob(BaseModel):
    step: str
    model_name: str
    artifact_dir: str
    files: list[str]
    baseline: str | None = None  # the product the target's baseline runs (e.g. the fp32 .tflite)
    signature: Signature
    precision: Precision = Precision.FP32  # the rung the artifact was built at
    options: dict[str, Any] = {}
    variants: list[VariantInputs]
    out_dir: str  # where the harness writes outputs
    work_dir: str
    repeats: int = 10  # timed runs of the typical variant for latency
    profile_repeats: int = 3  # timed runs of every other variant (batch profiling)

    def artifact(self, rel: str) -> Path:
        return Path(self.artifact_dir) / rel

    def options_as(self, model: type[OptionsT]) -> OptionsT:
        return options_as(self.options, model)


class Check(BaseModel):
    """A pass/fail property of the artifact a runtime checked (becomes a gate of that name)."""

    name: str
    passed: bool
    detail: str


class ArtifactRun(BaseModel):
    """One artifact file run on every variant in one runtime: variant name -> .npz of outputs."""

    file: str
    runtime: str
    role: ArtifactRole = ArtifactRole.SHIPPED
    outputs: dict[str, str]
    load_ms: float
    times_ms: list[float]  # raw timed runs of the typical variant; the engine computes the p50
    profile_ms: dict[str, list[float]] = {}  # variant -> raw timed runs of each other variant


class RuntimeResult(BaseModel):
    runs: list[ArtifactRun]
    notes: list[str] = []
    checks: list[Check] = []
    facts: dict[str, float | int | str] = {}  # reported as metrics, e.g. the ISA a package needs
