"""executorch: a .pte lowered to XNNPACK (portable fallback), run in the ExecuTorch runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipyard.gates import (
    FP32_GATES,
    GENERATION_FP32_GATES,
    GENERATION_INT4_GATES,
    INT8_GATES,
)
from shipyard.precision import Int8Options, Precision
from shipyard.signature import DimRange
from shipyard.source import ModelClass
from targets._catalog import Build, Rung, Target, register_target
from targets._formats import Format
from targets._harness import Predict, run_in_process
from targets._jobs import Check, ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets.engine.recipe import StepRecipe

__all__ = ["export", "export_llm", "run_artifact", "run_llm"]


def export(job: ExportJob) -> ExportResult:
    """model.pte at the job's precision (fp32, or int8 weights through PT2E)."""
    from exporters.torch2executorch import export_pte, quantized_program

    source = job.input(Format.TORCH_EXPORT)
    notes: list[str] = []
    program = None
    if job.precision is Precision.INT8:
        options = job.options_as(Int8Options)
        static = options.scheme == "static"
        program = quantized_program(source, job.interface, options, job.calibration_batches())
        how = options.describe("conv, linear", "linear") + (job.calibration_note() if static else "")
        notes.append(f"PT2E with the XNNPACK quantizer: {how}")
    counts, ranges = export_pte(source, job.interface, job.out_path / "model.pte", program)
    notes += [
        f"XNNPACK took {counts['delegated_nodes']} node(s) in {counts['delegated_subgraphs']} "
        f"subgraph(s); {counts['portable_nodes']} node(s) run on portable kernels"
    ]
    envelope = {}
    for name, (_, traced_max) in ranges.items():
        dim = job.interface.dims[name]
        planned_max = _largest_accepted(job, name, min(traced_max, dim.max))
        if planned_max < dim.max:
            # The runtime accepts sizes below the traced lower bound (validated at min),
            # but nothing above the memory-planned upper bound.
            envelope[name] = DimRange(min=dim.min, max=planned_max)
            notes.append(
                f"ExecuTorch lowering narrowed dim {name} to at most {planned_max} "
                f"(memory planned for that size)"
            )
    return ExportResult(files=["model.pte"], envelope=envelope, notes=notes)


def _largest_accepted(job: ExportJob, dim: str, high: int) -> int:
    """The largest size of `dim` up to `high` that the runtime takes (its memory plan can stop
    below the range the lowered program states, e.g. after quantization), by bisection."""
    import numpy as np
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(job.out_path / "model.pte").load_method("forward")
    signature = job.interface

    def accepted(size: int) -> bool:
        dims = {n: d.min for n, d in signature.dims.items()} | {dim: size}
        inputs = [torch.from_numpy(np.zeros(t.concrete_shape(dims), dtype=t.dtype)) for t in signature.inputs]
        try:
            method.execute(inputs)
        except RuntimeError:
            return False
        return True

    low = signature.dims[dim].min
    if accepted(high) or not accepted(low):
        return high  # a model that fails at its smallest size fails validation, with the reason
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if accepted(mid) else (low, mid)
    return low


LLM_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


def export_llm(job: ExportJob) -> ExportResult:
    """model.pte with the KV cache inside, and the folder's config and tokenizer files beside it."""
    import shutil

    from exporters.hf2executorch import export_llm_pte, llm_metadata, quantize_llm
    from shipyard.generation import TOKENS, load_causal_lm
    from shipyard.hf_folder import read_causal_lm

    folder = job.input(Format.HF_FOLDER)
    facts = read_causal_lm(folder)
    cache = job.interface.dims[TOKENS].max
    metadata = llm_metadata(cache, facts.vocab_size, facts.bos_id, facts.eos_ids)
    model = load_causal_lm(folder)
    quantized = [] if job.precision is Precision.FP32 else [quantize_llm(model, job.precision.value)]
    counts = export_llm_pte(model, cache, metadata, job.out_path / "model.pte")
    shipped = [name for name in LLM_FILES if (folder / name).is_file()]
    for name in shipped:
        shutil.copyfile(folder / name, job.out_path / name)
    notes = [
        *quantized,
        f"KV cache of {cache} tokens inside the program (static); XNNPACK took "
        f"{counts['delegated_subgraphs']} subgraph(s), {counts['portable_nodes']} node(s) run on "
        "portable kernels",
    ]
    return ExportResult(files=["model.pte", *shipped], notes=notes, metrics={"max_cache_len": cache})


def run_llm(job: RuntimeJob) -> RuntimeResult:
    """The .pte in executorch.runtime: teacher-forced logits, greedy tokens, a second session,
    and its metadata methods against the model's config."""
    import numpy as np
    import torch
    from executorch.runtime import Runtime

    from targets._generation import generation_result, run_generation

    program = Runtime.get().load_program(job.artifact("model.pte"))

    def load() -> Callable[[np.ndarray, int], np.ndarray]:
        method = program.load_method("forward")

        def step(ids: np.ndarray, position: int) -> np.ndarray:
            tokens = torch.from_numpy(ids.astype(np.int64).reshape(1, -1))
            logits = method.execute([tokens, torch.arange(position, position + len(ids))])[0]
            return logits.reshape(-1, logits.shape[-1]).float().numpy()

        return step

    run, tally, speed = run_generation(job, "model.pte", "ExecuTorch XNNPACK", load)
    return generation_result(job, run, tally, speed, [_metadata_check(job, program)])


def _metadata_check(job: RuntimeJob, program: Any) -> Check:
    """The .pte's constant methods against the config shipped beside it."""
    import json

    config = json.loads(job.artifact("config.json").read_text())
    generation = job.artifact("generation_config.json")
    declared = json.loads(generation.read_text()) if generation.is_file() else {}
    eos = declared.get("eos_token_id", config.get("eos_token_id"))
    expected = {
        "get_vocab_size": config["vocab_size"],
        "get_max_seq_len": job.signature.dims["tokens"].max,
        "get_eos_ids": eos if isinstance(eos, list) else [eos],
        "get_bos_id": declared.get("bos_token_id", config.get("bos_token_id")),
    }
    found: dict[str, list[int] | int | None] = {}
    for name in expected:
        if name in program.method_names:
            values = program.load_method(name).execute([])
            found[name] = [int(v) for v in values] if name == "get_eos_ids" else int(values[0])
        else:
            found[name] = None
    wrong = {k: (found[k], v) for k, v in expected.items() if found[k] != v and v is not None}
    detail = ", ".join(f"{k} {got} (config: {want})" for k, (got, want) in wrong.items())
    return Check(
        name="metadata", passed=not wrong, detail=detail or "the .pte's metadata methods match the config"
    )


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    import torch
    from executorch.runtime import Runtime

    def load() -> Predict:
        program = Runtime.get().load_program(job.artifact("model.pte"))
        method = program.load_method("forward")
        if method is None:
            raise RuntimeError("model.pte has no forward method")

        def predict(inputs: list[Any]) -> list[Any]:
            return list(method.execute([torch.from_numpy(a) for a in inputs]))

        return predict

    return RuntimeResult(runs=[run_in_process(job, "model.pte", "ExecuTorch XNNPACK", load)])


register_target(
    Target(
        name="executorch",
        summary="ExecuTorch .pte, XNNPACK delegate with portable fallback (run in executorch.runtime)",
        builds={
            ModelClass.FIXED_SHAPE: Build(
                consumes=Format.TORCH_EXPORT,
                export=StepRecipe(
                    "targets.executorch:export",
                    toolchain=("torch", "executorch"),
                    warm=(
                        "executorch.exir.program",
                        "executorch.backends.xnnpack.partition.xnnpack_partitioner",
                        "executorch.devtools.backend_debug",
                        "exporters.torch2executorch",
                    ),
                    cost_s=6,
                ),
                validate=StepRecipe(
                    "targets.executorch:run_artifact",
                    toolchain=("executorch",),
                    warm=("executorch.runtime",),
                    cost_s=2,
                ),
            ),
            ModelClass.CAUSAL_LM: Build(
                consumes=Format.HF_FOLDER,
                export=StepRecipe(
                    "targets.executorch:export_llm",
                    toolchain=("torch", "transformers", "executorch"),
                    warm=(
                        "transformers.integrations.executorch",
                        "executorch.exir.program",
                        "executorch.backends.xnnpack.partition.xnnpack_partitioner",
                        "exporters.hf2executorch",
                    ),
                    cost_s=20,
                ),
                validate=StepRecipe(
                    "targets.executorch:run_llm",
                    toolchain=("executorch",),
                    warm=("executorch.runtime", "targets._generation"),
                    cost_s=5,
                ),
                gates=GENERATION_FP32_GATES,
            ),
        },
        gates=FP32_GATES,
        rungs={
            Precision.INT8: Rung(
                summary="executorch with int8 weights (PT2E XNNPACK quantizer: static, calibrated; "
                "or dynamic)",
                gates=INT8_GATES,
                options=Int8Options,
                toolchain=("torchao",),
                warm=("torchao.quantization.pt2e.quantize_pt2e",),
                calibrated=True,
            ),
            Precision.INT4: Rung(
                summary="executorch with int4 weights, for language models (torchao 8da4w: int4 groups "
                "of 32, int8 activations; XNNPACK)",
                gates=GENERATION_INT4_GATES,
                toolchain=("torchao",),
                warm=("torchao.quantization",),
                model_classes=(ModelClass.CAUSAL_LM,),
            ),
        },
    )
)
