"""The steps Shipyard provides itself: prepare a source, and reference outputs for extra variants.

Both load and run the untrusted source program, so, like every converter, they run in a step
process with a timeout and a memory cap, never in the engine's own process.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from shipyard.precision import CalibrationSet
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
from shipyard.variants import Variant, calibration_batches, save_arrays

__all__ = ["EdgeJob", "EdgeVariants", "PrepareJob", "PreparedSource", "prepare", "reference_outputs"]


class PrepareJob(BaseModel):
    source: str
    spec: Spec
    out_dir: str
    max_variant_elements: int  # what one variant's inputs may hold (shipyard.variants)


class PreparedSource(BaseModel):
    """The source's signature (spec applied) and its validation variants with reference outputs."""

    signature: Signature
    variants: list[PreparedVariant]  # paths relative to the prepare step's folder
    calibration: CalibrationSet  # likewise


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
    return PreparedSource(signature=signature, variants=variants, calibration=_calibration(job, signature))


def _calibration(job: PrepareJob, signature: Signature) -> CalibrationSet:
    source, batches = calibration_batches(signature, job.spec, job.max_variant_elements)
    (Path(job.out_dir) / "calibration").mkdir(exist_ok=True)
    names = [f"calibration/{i}.npz" for i in range(len(batches))]
    for name, arrays in zip(names, batches, strict=True):
        save_arrays(Path(job.out_dir) / name, arrays)
    return CalibrationSet(source=source, batches=names)


def reference_outputs(job: EdgeJob) -> EdgeVariants:
    """Inputs and source outputs for variants found only after an export (a narrowed edge)."""
    model = load_source(Path(job.source))
    saved = []
    for variant in job.variants:
        inputs = edge_inputs(job.signature, job.spec, variant.dims)
        outputs = run_source(model, job.signature, inputs)
        saved.append(save_variant(Path(job.out_dir), variant, inputs, outputs))
    return EdgeVariants(variants=saved)
