"""tfjs: a TF.js graph model via ONNX -> onnx2tf -> SavedModel -> tensorflowjs, run in Node with tfjs."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shipyard.gates import FP32_GATES
from targets._catalog import Target, register_target
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets._node import run_js_harness

__all__ = ["TfjsOptions", "export", "run_artifact"]


class TfjsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opset: int = Field(default=18, ge=17, le=23)
    # Ops onnx2tf rewrites into primitives TF.js has (TF.js has no Erf, which exact GELU uses).
    pseudo_ops: list[str] = ["Erf"]


def name_signature_outputs(model_json: Path, names: list[str]) -> None:
    """Key model.json's signature outputs by the model's output names.

    The SavedModel from onnx2tf is a Keras functional model, whose serving signature names
    outputs output_0, output_1, ... in order; web code should see the real names.
    """
    doc = json.loads(model_json.read_text())
    outputs = doc["signature"]["outputs"]
    if set(outputs) == set(names):
        return
    positional = [f"output_{i}" for i in range(len(names))]
    if set(outputs) != set(positional):
        raise ValueError(f"model.json outputs {sorted(outputs)} match neither {names} nor {positional}")
    doc["signature"]["outputs"] = {name: outputs[key] for name, key in zip(names, positional, strict=True)}
    model_json.write_text(json.dumps(doc))


def export(job: ExportJob) -> ExportResult:
    from exporters.onnx2savedmodel import convert_to_saved_model
    from exporters.savedmodel2tfjs import convert_to_tfjs
    from exporters.torch2onnx import export_onnx

    options = TfjsOptions.model_validate(job.options)
    scratch = job.out_path.parent / "intermediate"
    scratch.mkdir(exist_ok=True)
    onnx_path = export_onnx(job.source_path, job.signature, scratch / "model.onnx", options.opset)
    keep = [t.name for t in job.signature.inputs if 3 <= len(t.shape) <= 5]
    saved = convert_to_saved_model(onnx_path, scratch / "saved_model", keep, options.pseudo_ops)
    files = convert_to_tfjs(saved, job.out_path)
    name_signature_outputs(job.out_path / "model.json", job.signature.output_names())
    notes = [f"input layout kept as in the source for {keep}"] if keep else []
    if any(t.dtype == "int64" for t in job.signature.inputs):
        notes.append("TF.js has no int64: integer inputs are fed as int32")
    return ExportResult(files=[p.relative_to(job.out_path).as_posix() for p in files], notes=notes)


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    models = [{"file": "model.json", "path": str(job.artifact("model.json"))}]
    runs = run_js_harness("tfjs_run.mjs", job, models, extra={"output_names": job.signature.output_names()})
    return RuntimeResult(runs=runs)


register_target(
    Target(
        name="tfjs",
        summary="TF.js graph model via ONNX, onnx2tf and tensorflowjs (run in Node with @tensorflow/tfjs)",
        exporter="targets.tfjs:export",
        runtime="targets.tfjs:run_artifact",
        gates=FP32_GATES,
        options=TfjsOptions,
        timeout_s=1200,
        toolchain=("torch", "onnx", "onnx2tf", "tensorflow", "tensorflowjs", "npm:@tensorflow/tfjs"),
    )
)
