"""executorch: a .pte lowered to XNNPACK (portable fallback), run in the ExecuTorch runtime."""

from __future__ import annotations

from typing import Any

from shipyard.gates import FP32_GATES
from shipyard.signature import DimRange
from targets._catalog import Target, register_target
from targets._formats import Format
from targets._harness import Predict, run_in_process
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult

__all__ = ["export", "run_artifact"]


def export(job: ExportJob) -> ExportResult:
    from exporters.torch2executorch import export_pte

    counts, ranges = export_pte(job.input(Format.TORCH_EXPORT), job.interface, job.out_path / "model.pte")
    notes = [
        f"XNNPACK took {counts['delegated_nodes']} node(s) in {counts['delegated_subgraphs']} "
        f"subgraph(s); {counts['portable_nodes']} node(s) run on portable kernels"
    ]
    envelope = {}
    for name, (_, planned_max) in ranges.items():
        dim = job.interface.dims[name]
        if planned_max < dim.max:
            # The runtime accepts sizes below the traced lower bound (validated at min),
            # but nothing above the memory-planned upper bound.
            envelope[name] = DimRange(min=dim.min, max=planned_max)
            notes.append(
                f"ExecuTorch lowering narrowed dim {name} to at most {planned_max} "
                f"(memory planned for that size)"
            )
    return ExportResult(files=["model.pte"], envelope=envelope, notes=notes)


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
        consumes=Format.TORCH_EXPORT,
        exporter="targets.executorch:export",
        runtime="targets.executorch:run_artifact",
        gates=FP32_GATES,
        toolchain=("torch", "executorch"),
        runtime_toolchain=("executorch",),
        cost_s=6,
        warm=(
            "executorch.exir.program",
            "executorch.backends.xnnpack.partition.xnnpack_partitioner",
            "executorch.devtools.backend_debug",
            "exporters.torch2executorch",
        ),
        runtime_warm=("executorch.runtime",),
    )
)
