"""aoti: an AOTInductor package for x86-64 CPU servers, loaded with aoti_load_package."""

from __future__ import annotations

from typing import Any

from exporters.torch2aoti import AotiOptions
from shipyard.gates import FP32_GATES
from shipyard.precision import Precision
from shipyard.source import ModelClass
from targets._catalog import Build, Target, register_target
from targets._formats import Format
from targets._harness import Predict, run_in_process
from targets._isa import audit_package
from targets._jobs import Check, ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets.engine.recipe import StepRecipe

__all__ = ["export", "run_artifact"]


def export(job: ExportJob) -> ExportResult:
    from exporters.torch2aoti import export_aoti_package

    options = job.options_as(AotiOptions)
    export_aoti_package(job.input(Format.TORCH_EXPORT), job.out_path / "model.pt2", options.isa)
    return ExportResult(files=["model.pt2"], notes=[f"compiled for {options.isa} with the host's gcc"])


def _isa_check(job: RuntimeJob) -> tuple[Check | None, dict[str, float | int | str]]:
    """What the package's code needs from the CPU; a check when the spec fixed an ISA level."""
    isa = job.options_as(AotiOptions).isa
    audit = audit_package(job.artifact("model.pt2"))
    vector = sorted(f for f in audit.features if f.startswith(("AVX", "AMX", "FMA", "SSE4", "F16C")))
    facts: dict[str, float | int | str] = {"isa": isa, "isa_features": ",".join(vector) or "none"}
    if isa == "native":
        return None, facts
    beyond = audit.beyond(isa)
    if beyond:
        detail = f"model.pt2 needs {', '.join(beyond)}, beyond {isa} (e.g. {audit.examples[beyond[0]]})"
        return Check(name="isa", passed=False, detail=detail), facts
    detail = f"{audit.instructions} instructions decoded, none beyond {isa}"
    return Check(name="isa", passed=True, detail=detail), facts


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    import torch

    def load() -> Predict:
        runner = torch._inductor.aoti_load_package(str(job.artifact("model.pt2")))

        def predict(inputs: list[Any]) -> list[Any]:
            with torch.no_grad():
                out = runner(*[torch.from_numpy(a) for a in inputs])
            return list(out) if isinstance(out, (list, tuple)) else [out]

        return predict

    check, facts = _isa_check(job)
    run = run_in_process(job, "model.pt2", "torch AOTInductor", load)
    facts["loaded_with_cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # ATEN_CPU_CAPABILITY
    return RuntimeResult(runs=[run], checks=[check] if check else [], facts=facts)


register_target(
    Target(
        name="aoti",
        summary="AOTInductor package for x86-64 CPUs (AVX2 unless the spec says otherwise)",
        builds={
            ModelClass.FIXED_SHAPE: Build(
                consumes=Format.TORCH_EXPORT,
                export=StepRecipe(
                    "targets.aoti:export",
                    toolchain=("torch", "gcc"),
                    warm=("torch._inductor.codecache", "exporters.torch2aoti:warm_up"),
                    cost_s=15,
                ),
                validate=StepRecipe(
                    "targets.aoti:run_artifact",
                    toolchain=("torch", "iced-x86"),
                    warm=("torch._inductor", "targets._isa"),
                    cost_s=2,
                ),
                needs_signature=False,  # compiles the program as saved, so it starts at once
            )
        },
        gates=FP32_GATES,
        options=AotiOptions,
        unoffered={  # measured 2026-11-30 on an AVX-512 EPYC (see the README's precision ladder)
            Precision.INT8: "aoti-int8 is not offered: Inductor's int8 CPU path (PT2E with "
            "X86InductorQuantizer, frozen) packs the weights for the compiling CPU's ISA, so the "
            "package would depend on the build host, and it does not shrink (the compiled code "
            "dominates: 1.62 MB vs 1.59 MB float32 for a small conv net)",
            Precision.FP16: "aoti-fp16 is not offered: x86 CPUs without AVX512-FP16 or AMX compute "
            "half precision by converting at every op (a small conv net ran 40x slower than float32)",
        },
    )
)
