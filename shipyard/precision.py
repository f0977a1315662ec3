"""Numeric precisions a target's artifact can store its weights (and compute) in.

Every target has one precision. A target family's ladder is its float32 entry plus the
variants named `<family>-<precision>` (`executorch-int8`, `tfjs-fp16`): separate targets, so
each is exported, proven against its own gates and published under its own name, and a user
pulls exactly the one they want.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CalibrationSet", "CalibrationSource", "Int8Options", "Precision"]


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"  # half-precision weights (and compute where the runtime has fp16 kernels)
    INT8 = "int8"  # 8-bit integer weights (and activations where the scheme quantizes them)
    UINT8 = "uint8"  # 8-bit affine weight storage, dequantized to float32 at load (TF.js)
    INT4 = "int4"  # 4-bit integer weights


class Int8Options(BaseModel):
    """How an -int8 rung quantizes (executorch: PT2E with the XNNPACK quantizer; ort-web and
    triton: onnxruntime's quantization tools)."""

    model_config = ConfigDict(extra="forbid")

    scheme: Literal["static", "dynamic"] = Field(
        default="static",
        description="static: int8 weights and activations, calibrated; dynamic: int8 weights, "
        "activations quantized at run time (no calibration; executorch: linear layers only; "
        "ONNX: slow for convolutions)",
    )
    per_channel: bool = Field(default=True, description="one weight scale per output channel")

    def describe(self, static_ops: str, dynamic_ops: str = "") -> str:
        """What the rung's report says was done; `static_ops`/`dynamic_ops`: what each scheme
        quantizes, where the quantizer says."""
        scales = "per-channel" if self.per_channel else "per-tensor"
        if self.scheme == "static":
            return f"static int8 weights and activations ({static_ops}), {scales} weight scales"
        which = f" ({dynamic_ops})" if dynamic_ops else ""
        return f"dynamic int8: {scales} int8 weights{which}, activations quantized at run time"


class CalibrationSource(StrEnum):
    SAMPLES = "samples"  # the spec's samples: real data
    GENERATED = "generated"  # seeded random inputs: a weak proxy for real data


class CalibrationSet(BaseModel):
    """Inputs a quantizing export calibrates (or searches) on, and where they came from."""

    source: CalibrationSource
    batches: list[str]  # .npz files of input arrays, keyed by input name
    generated: list[str] = []  # with samples: generated batches too, for an artifact they do not fit

    def describe(self) -> str:
        if self.source is CalibrationSource.SAMPLES:
            return (
                "calibrated on the spec's samples, which are also validation inputs: the gates judge "
                "them and the generated validation variants, which the quantization has not seen"
            )
        return (
            f"calibrated on {len(self.batches)} batches of generated inputs (seeded random data in the "
            "spec's input ranges, not the validation inputs): a weak proxy for real data; give the "
            "spec samples to calibrate on them"
        )
