"""The steps Shipyard provides itself: prepare a source, and reference outputs for extra variants.

Both load and run the untrusted source program, so, like every converter, they run in a step
process with a timeout and a memory cap, never in the engine's own process.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from shipyard.precision import CalibrationSet, CalibrationSource
from shipyard.prepare import (
    PreparedVariant,
    edge_inputs,
    load_source,
    read_signature,
    run_source,
    save_variant,
    validation_inputs,
)
from shipyard.signature import Signature
from shipyard.spec import Spec
from shipyard.variants import Variant, generated_calibration, load_arrays, max_variant_elements, save_arrays

__all__ = [
    "EdgeJob",
    "EdgeVariants",
    "PrepareJob",
    "PreparedSource",
    "prepare",
    "read_source_signature",
    "reference_outputs",
]


class PrepareJob(BaseModel):
    source: str
    spec: Spec
    out_dir: str
    max_variant_elements: int  # what one variant's inputs may hold (shipyard.variants)
    calibrate: bool = False  # also write calibration inputs (a quantizing target is planned)


class PreparedSource(BaseModel):
    """The source's signature (spec applied) and its validation variants with reference outputs."""

    signature: Signature
    variants: list[PreparedVariant]  # paths relative to the prepare step's folder
    calibration: CalibrationSet | None = None  # likewise; when a quantizing target is planned


class EdgeJob(BaseModel):
    source: str
    signature: Signature
    spec: Spec
    variants: list[Variant]  # the extra variants to compute
    out_dir: str


class EdgeVariants(BaseModel):
    variants: list[PreparedVariant]  # paths relative to the reference step's folder


def prepare(job: PrepareJob) -> PreparedSource:
    """Read the signature, build every validation variant and run the source program on it."""
    signature, program = read_signature(Path(job.source), job.spec, job.max_variant_elements)
    folder = Path(job.out_dir)
    variants = validation_inputs(program, signature, job.spec, folder, job.max_variant_elements)
    calibration = _calibration(job, signature) if job.calibrate else None
    return PreparedSource(signature=signature, variants=variants, calibration=calibration)


def read_source_signature(job: PrepareJob) -> PreparedSource:
    """The signature alone (spec applied): the source is loaded, never run, so a model that
    fails at some sizes still shows its dim names (`shipyard inspect`)."""
    signature, _ = read_signature(Path(job.source), job.spec, job.max_variant_elements)
    return PreparedSource(signature=signature, variants=[])


def _calibration(job: PrepareJob, signature: Signature) -> CalibrationSet:
    """The spec's samples, else generated batches (written too with samples, as a fallback)."""
    folder = Path(job.out_dir) / "calibration"
    folder.mkdir(exist_ok=True)
    generated = []
    for i, arrays in enumerate(generated_calibration(signature, job.spec)):
        save_arrays(folder / f"generated-{i}.npz", arrays)
        generated.append(f"calibration/generated-{i}.npz")
    if not job.spec.samples:
        return CalibrationSet(source=CalibrationSource.GENERATED, batches=generated)
    samples = load_arrays(Path(job.spec.samples), job.max_variant_elements)
    save_arrays(folder / "samples.npz", {n: samples[n] for n in signature.input_names()})
    return CalibrationSet(
        source=CalibrationSource.SAMPLES, batches=["calibration/samples.npz"], generated=generated
    )


def reference_outputs(job: EdgeJob) -> EdgeVariants:
    """Inputs and source outputs for variants found only after an export (a narrowed edge)."""
    model = load_source(Path(job.source))
    saved = []
    for variant in job.variants:
        inputs = edge_inputs(job.signature, job.spec, variant.dims)
        outputs = run_source(model, job.signature, inputs)
        saved.append(save_variant(Path(job.out_dir), variant, inputs, outputs, max_variant_elements()))
    return EdgeVariants(variants=saved)
