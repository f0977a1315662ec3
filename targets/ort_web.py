"""ort-web: a single-file .onnx and its .ort form, proven in onnxruntime-web (wasm) under Node."""

from __future__ import annotations

from pydantic import Field

from exporters.torch2onnx import OnnxOptions
from shipyard.gates import FP32_GATES
from shipyard.onnx_external import copy_onnx
from shipyard.precision import Int8Options
from shipyard.source import ModelClass
from targets._browser import run_in_chromium, with_browser
from targets._catalog import Build, Target, register_target
from targets._formats import Format
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets._node import HarnessModel, run_js_harness
from targets._onnx_ladder import ladder_onnx, onnx_rungs
from targets.engine.recipe import StepRecipe

__all__ = ["OrtWebInt8Options", "OrtWebOptions", "export", "run_artifact"]

MAX_IR_VERSION = 13  # what onnxruntime-web 1.30 (targets/js/package-lock.json) loads


class OrtWebOptions(OnnxOptions):
    ort_format: bool = Field(
        default=False,
        description="also ship model.ort (ORT format, for minimal builds); not byte-reproducible: "
        "onnxruntime writes some of its maps in a different order on every run",
    )


class OrtWebInt8Options(OrtWebOptions, Int8Options):
    pass


def export(job: ExportJob) -> ExportResult:
    """model.onnx at the job's precision (fp32, int8, fp16), its IR fitted to onnxruntime-web."""
    from exporters.onnx2ort import convert_to_ort
    from exporters.onnx_ir import fit_ir_version

    options = job.options_as(OrtWebOptions)
    made = ladder_onnx(job)
    written = copy_onnx(made.path, job.out_path / "model.onnx")  # external data files beside it
    onnx_path = written[0]
    lowered = fit_ir_version(onnx_path, MAX_IR_VERSION, "onnxruntime-web 1.30")
    files = [p.relative_to(job.out_path).as_posix() for p in written]
    notes = [*made.notes, *([lowered] if lowered else [])]
    if options.ort_format:  # holds every weight (external data inlined): under 2 GB only
        files.append(convert_to_ort(onnx_path, job.out_path / "model.ort").name)
    return ExportResult(files=files, notes=notes, metrics=made.metrics, envelope=made.envelope)


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    models = [
        HarnessModel(file=f, path=str(job.artifact(f)), external_data=_external_data(job, f))
        for f in job.files
        if f.endswith((".onnx", ".ort"))
    ]
    node = run_js_harness("ort_web_run.mjs", job, models)
    return with_browser(node, run_in_chromium(job, "ort", models[0], ["wasm"]))  # model.onnx


def _external_data(job: RuntimeJob, file: str) -> list[str]:
    """The data files (beside it) an .onnx reads: onnxruntime-web is handed them by name."""
    from shipyard.onnx_external import data_locations

    return data_locations(job.artifact(file)) if file.endswith(".onnx") else []


register_target(
    Target(
        name="ort-web",
        summary="ONNX + ORT format for ONNX Runtime Web (checked in Node, wasm backend)",
        builds={
            ModelClass.FIXED_SHAPE: Build(
                consumes=Format.ONNX,
                export=StepRecipe(
                    "targets.ort_web:export",
                    toolchain=("onnxruntime",),
                    warm=("onnxruntime", "exporters.onnx2ort", "exporters.onnx_ir"),
                    cost_s=1,
                ),
                validate=StepRecipe(
                    "targets.ort_web:run_artifact",
                    toolchain=("npm:onnxruntime-web", "node", "npm:puppeteer-core", "chromium"),
                    cost_s=2,
                ),
            )
        },
        gates=FP32_GATES,
        options=OrtWebOptions,
        rungs=onnx_rungs("ort-web", OrtWebInt8Options),
    )
)
