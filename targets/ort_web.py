"""ort-web: a single-file .onnx and its .ort form, proven in onnxruntime-web (wasm) under Node."""

from __future__ import annotations

import shutil

from pydantic import Field

from exporters.onnx_quantize import Int8Options
from exporters.torch2onnx import OnnxOptions
from shipyard.gates import FP32_GATES
from shipyard.precision import Precision
from targets._browser import run_in_chromium, with_browser
from targets._catalog import Target, register_target
from targets._formats import Format
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets._node import run_js_harness
from targets._onnx_ladder import ladder_onnx, onnx_rungs

__all__ = ["OrtWebInt8Options", "OrtWebOptions", "export", "export_fp16", "export_int8", "run_artifact"]

MAX_IR_VERSION = 13  # what onnxruntime-web 1.30 (targets/js/package-lock.json) loads


class OrtWebOptions(OnnxOptions):
    ort_format: bool = Field(
        default=False,
        description="also ship model.ort (ORT format, for minimal builds); not byte-reproducible: "
        "onnxruntime writes some of its maps in a different order on every run",
    )


class OrtWebInt8Options(OrtWebOptions, Int8Options):
    pass


def _export(job: ExportJob, precision: Precision) -> ExportResult:
    from exporters.onnx2ort import convert_to_ort
    from exporters.onnx_ir import fit_ir_version

    options = job.options_as(OrtWebOptions)
    made = ladder_onnx(job, precision)
    onnx_path = job.out_path / "model.onnx"
    shutil.copyfile(made.path, onnx_path)
    lowered = fit_ir_version(onnx_path, MAX_IR_VERSION, "onnxruntime-web 1.30")
    files = [onnx_path.name]
    if options.ort_format:
        files.append(convert_to_ort(onnx_path, job.out_path / "model.ort").name)
    notes = [*made.notes, *([lowered] if lowered else [])]
    return ExportResult(files=files, notes=notes, metrics=made.metrics, envelope=made.envelope)


def export(job: ExportJob) -> ExportResult:
    return _export(job, Precision.FP32)


def export_int8(job: ExportJob) -> ExportResult:
    return _export(job, Precision.INT8)


def export_fp16(job: ExportJob) -> ExportResult:
    return _export(job, Precision.FP16)


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    models = [{"file": f, "path": str(job.artifact(f))} for f in job.files]
    node = run_js_harness("ort_web_run.mjs", job, models)
    return with_browser(node, run_in_chromium(job, "ort", job.files[0], ["wasm"]))  # model.onnx


ORT_WEB = register_target(
    Target(
        name="ort-web",
        summary="ONNX + ORT format for ONNX Runtime Web (checked in Node, wasm backend)",
        consumes=Format.ONNX,
        exporter="targets.ort_web:export",
        runtime="targets.ort_web:run_artifact",
        gates=FP32_GATES,
        options=OrtWebOptions,
        toolchain=("onnxruntime",),
        runtime_toolchain=("npm:onnxruntime-web", "node", "npm:puppeteer-core", "chromium"),
        cost_s=1,
        warm=("onnxruntime", "exporters.onnx2ort", "exporters.onnx_ir"),
    )
)
for rung in onnx_rungs(ORT_WEB, "targets.ort_web", OrtWebInt8Options):
    register_target(rung)
