"""The int8 and fp16 rungs of the targets built on ONNX (ort-web, triton): one quantized .onnx."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from shipyard.gates import FP16_GATES, INT8_GATES
from shipyard.onnx_external import onnx_bytes
from shipyard.precision import Int8Options, Precision
from shipyard.signature import Envelope, fixed_envelope
from targets._catalog import Rung
from targets._formats import Format
from targets._jobs import ExportJob

__all__ = ["LadderOnnx", "ladder_onnx", "onnx_input_sizes", "onnx_rungs"]


class LadderOnnx(BaseModel):
    """The ONNX model a rung ships, and what the report says about making it."""

    path: Path
    notes: list[str]
    metrics: dict[str, float | int | str]
    envelope: Envelope = {}  # dims the .onnx declares at one size (an export that had to fix them)


def onnx_input_sizes(path: Path) -> dict[str, list[int | None]]:
    """Each graph input's declared sizes, None where dynamic (a name, nothing, or a negative
    placeholder such as Paddle's -1)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        v.name: [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in v.type.tensor_type.shape.dim
        ]
        for v in graph.input
    }


def ladder_onnx(job: ExportJob) -> LadderOnnx:
    """The job's float32 ONNX input at the job's precision (written to its scratch folder)."""
    from exporters.onnx_quantize import quantize_int8, to_fp16

    precision = job.precision
    source = job.input(Format.ONNX)
    made = job.work_path / precision.value / "model.onnx"  # its data file, if any, model.onnx.data
    made.parent.mkdir(parents=True, exist_ok=True)
    envelope = fixed_envelope(onnx_input_sizes(source), job.interface)
    if precision is Precision.FP32:
        return LadderOnnx(path=source, notes=[], metrics={}, envelope=envelope)
    if precision is Precision.FP16:
        to_fp16(source, made)
        notes = [
            "fp16 weights and ops, float32 inputs and outputs; CPU and wasm kernels compute it "
            "in float32 behind inserted casts (GPU/WebGPU providers in fp16)"
        ]
    elif precision is Precision.INT8:
        options = job.options_as(Int8Options)
        static = options.scheme == "static"
        batches = job.calibration_batches() if static else []
        quantize_int8(source, made, options, batches, job.work_path / "quantize")
        notes = [options.describe("QDQ") + (job.calibration_note() if static else "")]
    else:
        raise ValueError(f"no {precision.value} rung for ONNX targets")
    fp32_bytes = onnx_bytes(source)
    ratio = round(onnx_bytes(made) / fp32_bytes, 4)
    notes.append(f".onnx is {ratio:.2f}x the float32 .onnx")
    metrics: dict[str, float | int | str] = {"fp32_onnx_bytes": fp32_bytes, "size_vs_fp32": ratio}
    return LadderOnnx(path=made, notes=notes, metrics=metrics, envelope=envelope)


def onnx_rungs(name: str, int8_options: type[BaseModel]) -> dict[Precision, Rung]:
    """The int8 and fp16 rungs of a target built on ONNX (its export builds each at the job's
    precision with ladder_onnx)."""
    return {
        Precision.INT8: Rung(
            summary=f"{name} with an int8 ONNX model (onnxruntime: static QDQ, calibrated; or dynamic)",
            gates=INT8_GATES,
            options=int8_options,
            toolchain=("onnxruntime",),
            warm=("onnxruntime.quantization", "exporters.onnx_quantize"),
            calibrated=True,
            report_facts=("size_vs_fp32",),
        ),
        Precision.FP16: Rung(
            summary=f"{name} with an fp16 ONNX model (float32 inputs and outputs)",
            gates=FP16_GATES,
            toolchain=("onnxruntime",),
            warm=("onnxruntime.transformers.float16", "exporters.onnx_quantize"),
            report_facts=("size_vs_fp32",),
        ),
    }
