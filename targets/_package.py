"""Export, run and judge one target for a prepared run. Plain Python: flows wrap it in a task."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from shipyard.compare import OutputMismatch, compare_outputs
from shipyard.gates import FP32_GATES, apply_gates
from shipyard.prepare import PreparedRun, PreparedVariant, extra_variant
from shipyard.report import FileEntry, GateResult, Metrics, Status, TargetReport, VariantMetrics
from shipyard.source import sha256_file
from shipyard.spec import TargetSettings
from shipyard.variants import load_arrays
from targets._catalog import Target
from targets._jobs import ArtifactRun, ExportJob, ExportResult, RuntimeJob, RuntimeResult, VariantInputs
from targets._process import ChildOutcome, run_child

__all__ = ["export_target", "judge_target", "package_target", "run_target", "settings_for", "target_dir"]


def target_dir(run: PreparedRun, target: Target) -> Path:
    return Path(run.workdir) / "targets" / target.name


def _file_entries(root: Path, files: list[str]) -> list[FileEntry]:
    return [
        FileEntry(path=rel, sha256=sha256_file(root / rel), bytes=(root / rel).stat().st_size)
        for rel in files
    ]


def _run_step(
    folder: Path, step: str, job: BaseModel, settings: TargetSettings, target: Target
) -> tuple[ChildOutcome, float]:
    """Write STEP_job.json and a reproduce_STEP.sh beside it, then run the step in a child process."""
    job_path, result_path = folder / f"{step}_job.json", folder / f"{step}_result.json"
    job_path.write_text(job.model_dump_json(indent=2))
    cmd = [sys.executable, "-m", "targets.child", step, str(job_path), str(result_path)]
    script = folder / f"reproduce_{step}.sh"
    script.write_text("#!/bin/sh\nset -e\n" + " ".join(shlex.quote(c) for c in cmd) + "\n")
    script.chmod(0o755)
    start = time.perf_counter()
    outcome = run_child(
        step,
        job_path,
        result_path,
        folder / f"{step}.log",
        settings.timeout_s or target.timeout_s,
        settings.memory_mb,
    )
    return outcome, time.perf_counter() - start


def export_target(
    run: PreparedRun, target: Target, settings: TargetSettings
) -> tuple[ExportResult | None, str | None, float]:
    """Run the exporter in a child process; returns (result, error, seconds)."""
    folder = target_dir(run, target)
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "artifact").mkdir(parents=True)
    job = ExportJob(
        target=target.name,
        model_name=run.model_name,
        source=run.source,
        source_kind=run.source_kind,
        signature=run.signature,
        options=target.parse_options(settings.options).model_dump(),
        out_dir=str(folder / "artifact"),
    )
    outcome, seconds = _run_step(folder, "export", job, settings, target)
    if not outcome.ok:
        return None, f"export failed: {outcome.output}", seconds
    return ExportResult.model_validate_json(outcome.output), None, seconds


def _in_envelope(dims: dict[str, int], envelope: dict[str, dict[str, int]]) -> bool:
    return all(envelope[d]["min"] <= v <= envelope[d]["max"] for d, v in dims.items() if d in envelope)


def served_variants(run: PreparedRun, target: Target, exported: ExportResult) -> list[PreparedVariant]:
    """The run's variants the artifact serves, plus one at the edge of a narrower envelope."""
    variants = [v for v in run.variants if _in_envelope(v.dims, exported.envelope)]
    narrowed = {d: r for d, r in exported.envelope.items() if r["max"] < run.signature.dims[d].max}
    if narrowed:
        served, _ = _envelope(run, exported)
        edge = {
            name: served[name]["max"]
            if name in narrowed
            else min(max(dim.typical, served[name]["min"]), served[name]["max"])
            for name, dim in run.signature.dims.items()
        }
        if all(v.dims != edge for v in variants):
            variants.append(extra_variant(run, "served-max", edge, target_dir(run, target)))
    return variants


def run_target(
    run: PreparedRun,
    target: Target,
    settings: TargetSettings,
    exported: ExportResult,
    variants: list[PreparedVariant],
) -> tuple[RuntimeResult | None, str | None, float]:
    """Run the artifact in its runtime, in a child process, on the given variants."""
    folder = target_dir(run, target)
    (folder / "outputs").mkdir(exist_ok=True)
    run_job = RuntimeJob(
        target=target.name,
        model_name=run.model_name,
        artifact_dir=str(folder / "artifact"),
        files=exported.files,
        signature=run.signature,
        options=target.parse_options(settings.options).model_dump(),
        variants=[VariantInputs(name=v.name, dims=v.dims, inputs=v.inputs) for v in variants],
        out_dir=str(folder / "outputs"),
    )
    outcome, seconds = _run_step(folder, "run", run_job, settings, target)
    if not outcome.ok:
        return None, f"runtime failed: {outcome.output}", seconds
    return RuntimeResult.model_validate_json(outcome.output), None, seconds


def _compare(variants: list[PreparedVariant], result: RuntimeResult, rel_eps: float) -> list[VariantMetrics]:
    by_name = {v.name: v for v in variants}
    compared = []
    for art in result.runs:
        for variant_name, outputs_path in art.outputs.items():
            v = by_name[variant_name]
            compared.append(
                compare_outputs(
                    variant_name,
                    art.file,
                    v.dims,
                    load_arrays(Path(v.reference)),
                    load_arrays(Path(outputs_path)),
                    rel_eps,
                )
            )
    return compared


def _metrics(compared: list[VariantMetrics], runs: list[ArtifactRun]) -> Metrics:
    return Metrics(
        max_abs_err=max(c.max_abs_err for c in compared),
        max_rel_err=max(c.max_rel_err for c in compared),
        cosine=min(c.cosine for c in compared),
        rel_l2_err=max(c.rel_l2_err for c in compared),
        latency_ms_p50=max(r.latency_ms_p50 for r in runs),
        load_ms=max(r.load_ms for r in runs),
    )


def _baseline_gates(compared: list[VariantMetrics], runs: list[ArtifactRun]) -> list[GateResult]:
    """Strict float32 gates on unpublished baseline runs (e.g. the model before quantization)."""
    if not compared:
        return []
    results = apply_gates(FP32_GATES, _metrics(compared, runs))
    return [g.model_copy(update={"name": f"baseline_{g.name}"}) for g in results]


def _envelope(run: PreparedRun, exported: ExportResult) -> tuple[dict[str, dict[str, int]], list[str]]:
    envelope, notes = {}, []
    for name, dim in run.signature.dims.items():
        served = exported.envelope.get(name, {"min": dim.min, "max": dim.max})
        envelope[name] = served
        if served != {"min": dim.min, "max": dim.max}:
            notes.append(
                f"dim {name}: serves [{served['min']}, {served['max']}] of the declared "
                f"[{dim.min}, {dim.max}]"
            )
    return envelope, notes


def judge_target(
    run: PreparedRun, target: Target, settings: TargetSettings, exported: ExportResult, export_s: float = 0.0
) -> TargetReport:
    """Run an exported artifact in its runtime, compare with the reference and apply the gates."""
    folder = target_dir(run, target)
    files = _file_entries(folder / "artifact", exported.files)
    envelope, notes = _envelope(run, exported)
    base = Metrics(
        artifact_bytes=sum(f.bytes for f in files), export_s=round(export_s, 3), **exported.metrics
    )
    report = TargetReport(
        status=Status.FAILED, files=files, metrics=base, envelope=envelope, notes=exported.notes + notes
    )
    variants = served_variants(run, target, exported)
    result, error, validate_s = run_target(run, target, settings, exported, variants)
    base.validate_s = round(validate_s, 3)
    if result is None:
        report.error = error
        return report
    report.notes += result.notes
    gates = target.gates.merged(settings.gates)
    try:
        compared = _compare(variants, result, gates.rel_eps)
    except OutputMismatch as exc:
        report.error = f"gate outputs failed: {exc}"
        return report
    baseline_files = {r.file for r in result.runs if r.role == "baseline"}
    shipped = [c for c in compared if c.file not in baseline_files]
    baseline = [c for c in compared if c.file in baseline_files]
    measured = _metrics(shipped, [r for r in result.runs if r.file not in baseline_files])
    report.metrics = measured.model_copy(update=base.model_dump(exclude_none=True))
    report.variants = compared
    report.gates = apply_gates(gates, measured) + _baseline_gates(
        baseline, [r for r in result.runs if r.file in baseline_files]
    )
    failed = [g for g in report.gates if not g.passed]
    if failed:
        worst = max(shipped, key=lambda c: c.max_abs_err)
        report.error = "; ".join(g.describe() for g in failed) + (
            f" (worst: variant {worst.variant}, output {worst.worst_output}, file {worst.file})"
        )
        return report
    report.status = Status.PASSED
    return report


def settings_for(run: PreparedRun, target: Target) -> TargetSettings:
    return run.spec.targets.get(target.name, TargetSettings())


def package_target(run: PreparedRun, target: Target) -> TargetReport:
    """Export, run, compare and gate one target. Never raises for a target's own failure."""
    settings = settings_for(run, target)
    exported, error, export_s = export_target(run, target, settings)
    if exported is None:
        return TargetReport(status=Status.FAILED, error=error, metrics=Metrics(export_s=round(export_s, 3)))
    return judge_target(run, target, settings, exported, export_s)
