"""onnx-genai: an ONNX Runtime GenAI model folder (model.onnx with past key values,
genai_config.json, tokenizer) from onnxruntime-genai's builder, proven in onnxruntime_genai."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from shipyard.gates import GENERATION_FP32_GATES, GENERATION_INT4_GATES
from shipyard.precision import Precision
from shipyard.source import ModelClass
from targets._catalog import Build, Rung, Target, register_target
from targets._formats import Format
from targets._generation import DecodeStep, generation_result, run_generation
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets.engine.recipe import StepRecipe

__all__ = ["OnnxGenaiInt4Options", "export", "run_artifact"]

_BUILDER_PRECISION = {Precision.FP32: "fp32", Precision.INT4: "int4"}


class OnnxGenaiInt4Options(BaseModel):
    accuracy_level: Literal[1, 2, 3, 4] = Field(
        default=1,
        description="MatMulNBits' activation precision: 1 float32, 2 float16, 3 bfloat16, 4 int8 "
        "(the builder's CPU default; faster, and known to change greedy tokens)",
    )
    block_size: Literal[16, 32, 64, 128, 256] = Field(default=32, description="weights per int4 scale")


def export(job: ExportJob) -> ExportResult:
    """The GenAI folder at the job's precision."""
    from exporters.hf2genai import build_genai_model

    options = job.options_as(OnnxGenaiInt4Options)
    precision = _BUILDER_PRECISION[job.precision]
    build_genai_model(
        job.input(Format.HF_FOLDER),
        job.out_path,
        precision,
        job.work_path,
        options.accuracy_level,
        options.block_size,
    )
    files = sorted(p.relative_to(job.out_path).as_posix() for p in job.out_path.rglob("*") if p.is_file())
    notes = [f"onnxruntime-genai's builder, {precision}"]
    if job.precision is Precision.INT4:
        notes[0] += f": MatMulNBits, blocks of {options.block_size}, accuracy_level {options.accuracy_level}"
    return ExportResult(files=files, notes=notes)


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    """The folder in onnxruntime_genai: one Generator per session, the logits at every position."""
    import onnxruntime_genai as og

    model = og.Model(job.artifact_dir)
    vocab = job.signature.outputs[0].shape[-1]
    assert isinstance(vocab, int)

    def load() -> DecodeStep:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=job.signature.dims["tokens"].max, do_sample=False)
        session: list[og.Generator] = []

        def step(ids: np.ndarray, position: int) -> np.ndarray:
            if position == 0:  # a new session
                session[:] = [og.Generator(model, params)]
            session[0].append_tokens(ids.astype(np.int32).reshape(1, -1))
            return np.asarray(session[0].get_output("logits")).reshape(-1, vocab)

        return step

    run, tally, speed = run_generation(job, "model.onnx", "onnxruntime-genai", load)
    return generation_result(job, run, tally, speed, [])


register_target(
    Target(
        name="onnx-genai",
        summary="ONNX Runtime GenAI folder (model.onnx with a KV cache, genai_config.json, tokenizer)",
        builds={
            ModelClass.CAUSAL_LM: Build(
                consumes=Format.HF_FOLDER,
                export=StepRecipe(
                    "targets.onnx_genai:export",
                    toolchain=("onnxruntime-genai", "transformers", "torch", "onnx"),
                    # not the builder itself: it imports sibling modules by bare names ("quantization",
                    # "builder_config") that a warm server would keep for every other step
                    warm=("exporters.hf2genai",),
                    cost_s=8,
                ),
                validate=StepRecipe(
                    "targets.onnx_genai:run_artifact",
                    toolchain=("onnxruntime-genai", "onnxruntime"),
                    warm=("onnxruntime_genai", "targets._generation"),
                    cost_s=4,
                ),
            )
        },
        gates=GENERATION_FP32_GATES,
        rungs={
            Precision.INT4: Rung(
                summary="onnx-genai with int4 weights (MatMulNBits, float32 activations by default)",
                gates=GENERATION_INT4_GATES,
                options=OnnxGenaiInt4Options,
                model_classes=(ModelClass.CAUSAL_LM,),
            )
        },
    )
)
