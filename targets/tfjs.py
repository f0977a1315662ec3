"""tfjs: a TF.js graph model via ONNX -> onnx2tf -> SavedModel -> tensorflowjs, proven in Node.

Validation first checks the graph is portable to the backends the artifact targets (cpu, wasm,
webgl: every op, fused activation and kernel implemented), then runs it on cpu and wasm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from exporters.keras2savedmodel import KerasSavedModelOptions
from exporters.onnx2savedmodel import SavedModelOptions
from exporters.torch2onnx import OnnxOptions
from shipyard.gates import FP16_GATES, FP32_GATES, INT8_GATES
from shipyard.precision import Precision
from shipyard.signature import fixed_envelope
from shipyard.source import ModelClass
from targets._browser import run_in_chromium, with_browser
from targets._catalog import Build, Rung, Target, register_target
from targets._formats import Format
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets._node import HarnessModel, run_js_harness
from targets.engine.family import Family
from targets.engine.recipe import StepRecipe

if TYPE_CHECKING:
    from exporters.savedmodel2tfjs import WeightStorage

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


def _export(job: ExportJob, weights: WeightStorage | None) -> ExportResult:
    from exporters.savedmodel2tfjs import convert_to_tfjs, input_shapes, weight_bytes

    names = job.interface.input_names(), job.interface.output_names()
    files = convert_to_tfjs(job.input(Format.SAVED_MODEL), job.out_path, *names, weights)
    notes = []
    if any(t.dtype == "int64" for t in job.interface.inputs):
        notes.append("TF.js has no int64: integer inputs are fed as int32")
    metrics: dict[str, float | int | str] = {}
    if weights:
        stored, as_fp32 = weight_bytes(job.out_path / "model.json")
        ratio = round(stored / as_fp32, 4)
        metrics = {"weight_bytes": stored, "fp32_weight_bytes": as_fp32, "size_vs_fp32": ratio}
        notes.append(
            f"float weights stored as {weights} ({stored:,} shard bytes, {ratio:.2f}x "
            f"float32); TF.js dequantizes them to float32 at load: a smaller download, the same compute"
        )
    return ExportResult(
        files=[p.relative_to(job.out_path).as_posix() for p in files],
        envelope=fixed_envelope(input_shapes(job.out_path / "model.json"), job.interface),
        notes=notes,
        metrics=metrics,
    )


# the weight shards' dtype at each rung (None: float32, as TensorFlow has them)
_SHARD_DTYPES: dict[Precision, WeightStorage | None] = {
    Precision.FP32: None,
    Precision.FP16: "float16",
    Precision.UINT8: "uint8",
}


def export(job: ExportJob) -> ExportResult:
    return _export(job, _SHARD_DTYPES[job.precision])


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    options = job.options_as(TfjsOptions)
    models = [HarnessModel(file="model.json", path=str(job.artifact("model.json")))]
    extra = {"output_names": job.signature.output_names(), "backends": options.backends}
    node = run_js_harness("tfjs_run.mjs", job, models, extra=extra)
    if not all(c.passed for c in node.checks):
        return node  # not portable: the gate says why; a browser would only fail later
    in_browser: list[str] = [b for b in ("webgl", "wasm") if b in options.backends]
    return with_browser(node, run_in_chromium(job, "tfjs", models[0], in_browser))


register_target(
    Target(
        name="tfjs",
        summary="TF.js graph model via ONNX, onnx2tf, tensorflowjs (gated for cpu/wasm/webgl; run in Node)",
        builds={
            ModelClass.FIXED_SHAPE: Build(
                consumes=Format.SAVED_MODEL,
                export=StepRecipe(
                    "targets.tfjs:export",
                    family=Family.TF,
                    toolchain=("tensorflow", "tensorflowjs"),
                    warm=(
                        "exporters.savedmodel2tfjs",
                        "tensorflowjs.converters.tf_saved_model_conversion_v2",
                    ),
                    timeout_s=1200,
                    cost_s=4,
                ),
                validate=StepRecipe(
                    "targets.tfjs:run_artifact",
                    toolchain=(
                        "npm:@tensorflow/tfjs",
                        "npm:@tensorflow/tfjs-backend-wasm",
                        "node",
                        "npm:puppeteer-core",
                        "chromium",
                    ),
                    timeout_s=1200,
                    cost_s=2,
                ),
            )
        },
        gates=FP32_GATES,
        options=TfjsOptions,
        rungs={
            Precision.FP16: Rung(
                summary="tfjs with float16 weight shards (dequantized to float32 at load)",
                gates=FP16_GATES,
                report_facts=("size_vs_fp32",),
            ),
            Precision.UINT8: Rung(
                summary="tfjs with uint8 weight shards (affine per tensor, dequantized to float32 at load)",
                gates=INT8_GATES,
                report_facts=("size_vs_fp32",),
            ),
        },
    )
)
