"""A target written the way CONTRIBUTING.md says, outside the catalog's package: an .onnx file
(float32, or int8 weights from onnxruntime's dynamic quantizer) run in onnxruntime.

Only tests/test_add_a_target.py imports it; importing it registers `throwaway` and its rung
`throwaway-int8`, as importing a target module from targets/__init__ does.
"""

from __future__ import annotations

import shutil
import sys

from shipyard.gates import FP32_GATES, INT8_GATES
from shipyard.precision import Precision
from shipyard.source import ModelClass
from targets import (
    Build,
    ExportJob,
    ExportResult,
    Format,
    Predict,
    Rung,
    RuntimeJob,
    RuntimeResult,
    StepRecipe,
    Target,
    register_target,
    run_in_process,
)

WARM = "tests.throwaway_warm"  # named only in the recipes' warm lists: loaded here iff forked warm


def export(job: ExportJob) -> ExportResult:
    """model.onnx at the job's precision."""
    source, made = job.input(Format.ONNX), job.out_path / "model.onnx"
    if job.precision is Precision.INT8:
        from onnxruntime.quantization import quantize_dynamic

        shutil.copyfile(source, job.work_path / "model.onnx")  # the quantizer writes beside its input
        quantize_dynamic(job.work_path / "model.onnx", made)
    else:
        shutil.copyfile(source, made)
    return ExportResult(files=["model.onnx"], metrics={"forked_warm": int(WARM in sys.modules)})


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    def load() -> Predict:
        import onnxruntime as ort

        session = ort.InferenceSession(job.artifact("model.onnx"), providers=["CPUExecutionProvider"])
        names = job.signature.input_names()
        return lambda inputs: session.run(None, dict(zip(names, inputs, strict=True)))

    run = run_in_process(job, "model.onnx", "onnxruntime", load)
    return RuntimeResult(runs=[run], facts={"validated_warm": int(WARM in sys.modules)})


register_target(
    Target(
        name="throwaway",
        summary="an .onnx run in onnxruntime (a test's example target)",
        builds={
            ModelClass.FIXED_SHAPE: Build(
                consumes=Format.ONNX,
                export=StepRecipe("tests.throwaway_target:export", toolchain=("onnx",), warm=(WARM,)),
                validate=StepRecipe(
                    "tests.throwaway_target:run_artifact", toolchain=("onnxruntime",), warm=(WARM,)
                ),
            )
        },
        gates=FP32_GATES,
        rungs={
            Precision.INT8: Rung(
                summary="throwaway with int8 weights (onnxruntime's dynamic quantizer)",
                gates=INT8_GATES,
                toolchain=("onnxruntime",),
                warm=("onnxruntime.quantization",),
            )
        },
    )
)
