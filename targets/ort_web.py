"""ort-web: a single-file .onnx and its .ort form, proven in onnxruntime-web (wasm) under Node."""

from __future__ import annotations

import shutil

from pydantic import Field

from exporters.torch2onnx import OnnxOptions
from shipyard.gates import FP32_GATES
from targets._catalog import Target, register_target
from targets._formats import Format
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets._node import run_js_harness

__all__ = ["OrtWebOptions", "export", "run_artifact"]


class OrtWebOptions(OnnxOptions):
    ort_format: bool = Field(
        default=False,
        description="also ship model.ort (ORT format, for minimal builds); not byte-reproducible: "
        "onnxruntime writes some of its maps in a different order on every run",
    )


def export(job: ExportJob) -> ExportResult:
    from exporters.onnx2ort import convert_to_ort

    options = OrtWebOptions.model_validate(job.options)
    onnx_path = job.out_path / "model.onnx"
    shutil.copyfile(job.input(Format.ONNX), onnx_path)
    files = [onnx_path.name]
    if options.ort_format:
        files.append(convert_to_ort(onnx_path, job.out_path / "model.ort").name)
    return ExportResult(files=files)


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    models = [{"file": f, "path": str(job.artifact(f))} for f in job.files]
    return run_js_harness("ort_web_run.mjs", job, models)


register_target(
    Target(
        name="ort-web",
        summary="ONNX + ORT format for ONNX Runtime Web (checked in Node, wasm backend)",
        consumes=Format.ONNX,
        exporter="targets.ort_web:export",
        runtime="targets.ort_web:run_artifact",
        gates=FP32_GATES,
        options=OrtWebOptions,
        toolchain=("onnxruntime",),
        runtime_toolchain=("npm:onnxruntime-web", "node"),
        cost_s=1,
        warm=("onnxruntime", "exporters.onnx2ort"),
    )
)
