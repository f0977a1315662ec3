"""tfjs: a TF.js graph model via ONNX -> onnx2tf -> SavedModel -> tensorflowjs, proven in Node.

Validation first checks the graph is portable to the backends the artifact targets (cpu, wasm,
webgl: every op, fused activation and kernel implemented), then runs it on cpu and wasm.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from exporters.keras2savedmodel import KerasSavedModelOptions
from exporters.onnx2savedmodel import SavedModelOptions
from exporters.torch2onnx import OnnxOptions
from shipyard.gates import FP32_GATES
from shipyard.signature import DimRange, Envelope, Signature
from targets._catalog import Target, register_target
from targets._formats import Family, Format
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets._node import run_js_harness

__all__ = ["TfjsOptions", "export", "run_artifact"]

Backend = Literal["cpu", "wasm", "webgl"]


class TfjsOptions(OnnxOptions, SavedModelOptions, KerasSavedModelOptions):
    """The ONNX export's, onnx2tf's and the Keras export's options, and the backends the
    portability gate checks."""

    erfc_as_erf: bool = Field(
        default=True, description="Keras sources: trace exact GELU's erfc as 1 - erf (TF.js has no Erfc)"
    )

    backends: list[Backend] = Field(
        default=["cpu", "wasm", "webgl"],
        min_length=1,
        description="TF.js backends the model must run on (the portability gate checks each)",
    )


def _fixed_dims(declared: dict[str, list[int | None]], signature: Signature) -> Envelope:
    """Dynamic dims the graph model declares at one size (the fixed-shape conversion fallback)."""
    envelope: Envelope = {}
    for tensor in signature.inputs:
        for want, got in zip(tensor.shape, declared.get(tensor.name, []), strict=False):
            if isinstance(want, str) and got is not None:
                envelope[want] = DimRange(min=got, max=got)
    return envelope


def export(job: ExportJob) -> ExportResult:
    from exporters.savedmodel2tfjs import convert_to_tfjs, input_shapes

    files = convert_to_tfjs(job.input(Format.SAVED_MODEL), job.out_path, job.interface.output_names())
    notes = []
    if any(t.dtype == "int64" for t in job.interface.inputs):
        notes.append("TF.js has no int64: integer inputs are fed as int32")
    return ExportResult(
        files=[p.relative_to(job.out_path).as_posix() for p in files],
        envelope=_fixed_dims(input_shapes(job.out_path / "model.json"), job.interface),
        notes=notes,
    )


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    options = TfjsOptions.model_validate(job.options)
    models = [{"file": "model.json", "path": str(job.artifact("model.json"))}]
    extra = {"output_names": job.signature.output_names(), "backends": options.backends}
    return run_js_harness("tfjs_run.mjs", job, models, extra=extra)


register_target(
    Target(
        name="tfjs",
        summary="TF.js graph model via ONNX, onnx2tf, tensorflowjs (gated for cpu/wasm/webgl; run in Node)",
        consumes=Format.SAVED_MODEL,
        exporter="targets.tfjs:export",
        runtime="targets.tfjs:run_artifact",
        gates=FP32_GATES,
        options=TfjsOptions,
        timeout_s=1200,
        toolchain=("tensorflow", "tensorflowjs"),
        runtime_toolchain=("npm:@tensorflow/tfjs", "npm:@tensorflow/tfjs-backend-wasm", "node"),
        cost_s=4,
        family=Family.TF,
        warm=("exporters.savedmodel2tfjs", "tensorflowjs.converters.tf_saved_model_conversion_v2"),
    )
)
