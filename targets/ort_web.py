"""ort-web: a single-file .onnx and its .ort form, proven in onnxruntime-web (wasm) under Node."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shipyard.gates import FP32_GATES
from targets._catalog import Target, register_target
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets._node import run_js_harness

__all__ = ["OrtWebOptions", "export", "run_artifact"]


class OrtWebOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opset: int = Field(default=18, ge=17, le=23)
    ort_format: bool = True  # also ship model.ort


def export(job: ExportJob) -> ExportResult:
    from exporters.onnx2ort import convert_to_ort
    from exporters.torch2onnx import export_onnx

    options = OrtWebOptions.model_validate(job.options)
    onnx_path = export_onnx(job.source_path, job.signature, job.out_path / "model.onnx", options.opset)
    files = [onnx_path.name]
    if options.ort_format:
        files.append(convert_to_ort(onnx_path, job.out_path / "model.ort").name)
    return ExportResult(files=files)


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    models = [{"file": f, "path": str(job.artifact(f))} for f in job.files]
    return RuntimeResult(runs=run_js_harness("ort_web_run.mjs", job, models))


register_target(
    Target(
        name="ort-web",
        summary="ONNX + ORT format for ONNX Runtime Web (checked in Node, wasm backend)",
        exporter="targets.ort_web:export",
        runtime="targets.ort_web:run_artifact",
        gates=FP32_GATES,
        options=OrtWebOptions,
        toolchain=("torch", "onnx", "onnxscript", "onnxruntime", "npm:onnxruntime-web"),
    )
)
