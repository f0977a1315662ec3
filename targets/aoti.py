"""aoti: an AOTInductor package for CPU servers, loaded with aoti_load_package in a fresh process."""

from __future__ import annotations

from typing import Any

from shipyard.gates import FP32_GATES
from targets._catalog import Target, register_target
from targets._harness import Predict, run_in_process
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult

__all__ = ["export", "run_artifact"]


def export(job: ExportJob) -> ExportResult:
    from exporters.torch2aoti import export_aoti_package

    export_aoti_package(job.source_path, job.out_path / "model.pt2")
    return ExportResult(files=["model.pt2"], notes=["compiled for x86-64 CPU with the gcc on the build host"])


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    import torch

    def load() -> Predict:
        runner = torch._inductor.aoti_load_package(str(job.artifact("model.pt2")))

        def predict(inputs: list[Any]) -> list[Any]:
            with torch.no_grad():
                out = runner(*[torch.from_numpy(a) for a in inputs])
            return list(out) if isinstance(out, (list, tuple)) else [out]

        return predict

    return RuntimeResult(runs=[run_in_process(job, "model.pt2", load)])


register_target(
    Target(
        name="aoti",
        summary="AOTInductor package for CPU (loaded with aoti_load_package in a fresh process)",
        exporter="targets.aoti:export",
        runtime="targets.aoti:run_artifact",
        gates=FP32_GATES,
        toolchain=("torch",),
    )
)
