"""Judge a validated artifact: compare its outputs with the reference, apply the gates, say why.

Pure numpy on files the steps wrote; nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from shipyard.compare import OutputMismatch, compare_outputs
from shipyard.gates import FP32_GATES, Gates, apply_gates
from shipyard.prepare import PreparedVariant
from shipyard.report import (
    BatchTiming,
    GateResult,
    Metrics,
    RuntimeTiming,
    Status,
    TargetReport,
    VariantMetrics,
)
from shipyard.signature import Envelope, Signature
from shipyard.timing import latency_p50
from shipyard.variants import load_arrays
from targets._jobs import ArtifactRole, ArtifactRun, Check, RuntimeResult

__all__ = ["LocatedVariant", "edge_dims", "in_envelope", "judge", "served_envelope"]


class LocatedVariant(PreparedVariant):
    """A prepared variant whose file paths are absolute."""

    @classmethod
    def at(cls, variant: PreparedVariant, folder: Path) -> LocatedVariant:
        return cls(
            name=variant.name,
            dims=variant.dims,
            inputs=str(folder / variant.inputs),
            reference=str(folder / variant.reference),
        )


def served_envelope(signature: Signature, narrowed: Envelope) -> tuple[Envelope, list[str]]:
    """Every dim's served range (declared unless the export narrowed it), with a note per narrowing."""
    envelope: Envelope = {}
    notes = []
    for name, dim in signature.dims.items():
        served = narrowed.get(name, dim.range)
        envelope[name] = served
        if dim.declared_max is not None:
            notes.append(
                f"dim {name}: validated up to {dim.max} of the declared {dim.declared_max} "
                "(a variant's inputs are capped by SHIPYARD_MAX_VARIANT_ELEMENTS)"
            )
        if served != dim.range:
            notes.append(
                f"dim {name}: serves [{served.min}, {served.max}] of the declared [{dim.min}, {dim.max}]"
            )
    return envelope, notes


def _compare(
    variants: dict[str, LocatedVariant], result: RuntimeResult, out_dir: Path, gates: Gates
) -> list[VariantMetrics]:
    compared = []
    references: dict[str, dict[str, np.ndarray]] = {}  # read once, however many runs share them
    for run in result.runs:
        for variant_name, outputs in run.outputs.items():
            v = variants[variant_name]
            if variant_name not in references:
                references[variant_name] = load_arrays(Path(v.reference))
            metrics = compare_outputs(
                variant_name,
                run.file,
                v.dims,
                references[variant_name],
                load_arrays(out_dir / outputs),
                gates.rel_eps,
                gates.exact_below,
            )
            compared.append(metrics.model_copy(update={"runtime": run.runtime}))
    return compared


def _worst_scaled(compared: list[VariantMetrics]) -> float | None:
    """None when any comparison lacks it: the gate then falls back to the raw max_abs_err."""
    scaled = [c.scaled_abs_err for c in compared]
    return None if not scaled or None in scaled else max(s for s in scaled if s is not None)


def _agreement(
    compared: list[VariantMetrics], counts: Callable[[VariantMetrics], tuple[int, int]]
) -> float | None:
    """The share of classifier-like rows that agree (`counts`: agreed and all rows of one
    comparison), over every variant of one file in one runtime, for the worst file and runtime;
    None when no output is classifier-like."""
    pooled: dict[tuple[str, str], list[int]] = {}
    for c in compared:
        total = pooled.setdefault((c.file, c.runtime), [0, 0])
        agreed, rows = counts(c)
        total[0] += agreed
        total[1] += rows
    shares = [agreed_rows / all_rows for agreed_rows, all_rows in pooled.values() if all_rows]
    return min(shares, default=None)


def _mean_kl(compared: list[VariantMetrics]) -> float | None:
    """KL per classifier-like row over every variant of one file in one runtime, for the worst
    file and runtime; None when no output is classifier-like."""
    pooled: dict[tuple[str, str], list[float]] = {}
    for c in compared:
        total = pooled.setdefault((c.file, c.runtime), [0.0, 0])
        total[0] += c.kl_sum
        total[1] += c.label_rows
    means = [kl / rows for kl, rows in pooled.values() if rows]
    return max(means, default=None)


def _metrics(compared: list[VariantMetrics], runs: list[ArtifactRun]) -> Metrics:
    latencies = [p for p in (latency_p50(r.times_ms) for r in runs) if p is not None]
    return Metrics(
        max_abs_err=max(c.max_abs_err for c in compared),
        max_rel_err=max(c.max_rel_err for c in compared),
        cosine=min(c.cosine for c in compared),
        rel_l2_err=max(c.rel_l2_err for c in compared),
        scaled_abs_err=_worst_scaled(compared),
        top1_agreement=_agreement(compared, lambda c: (c.top1_agreed, c.label_rows)),
        top5_agreement=_agreement(compared, lambda c: (c.top5_agreed, c.top5_rows)),
        mean_kl=_mean_kl(compared),
        latency_ms_p50=max(latencies, default=None),
        load_ms=max((r.load_ms for r in runs), default=None),
    )


def _timing(run: ArtifactRun, variants: dict[str, LocatedVariant], batch_dim: str | None) -> RuntimeTiming:
    """The run's load time and latency, and per batch size when the model has a batch dim (axis
    0 of every input and output): batch profiling, latency and items per second at each size."""
    timing = RuntimeTiming(
        file=run.file, runtime=run.runtime, load_ms=run.load_ms, latency_ms_p50=latency_p50(run.times_ms)
    )
    timed = [v for v in run.outputs if v not in run.profile_ms]
    measured = {**run.profile_ms, **({timed[0]: run.times_ms} if len(timed) == 1 else {})}
    for name, times in measured.items():
        variant = variants.get(name)
        batch = variant.dims.get(batch_dim) if variant is not None and batch_dim else None
        p50 = latency_p50(times)
        if batch is not None and p50:
            others = {k: v for k, v in variant.dims.items() if k != batch_dim} if variant else {}
            timing.batches.append(
                BatchTiming(
                    variant=name,
                    batch=batch,
                    other_dims=others,
                    latency_ms_p50=p50,
                    items_per_s=round(batch * 1000 / p50, 2),
                )
            )
    timing.batches.sort(key=lambda b: (b.batch, b.variant))
    return timing


def _check_gate(check: Check) -> GateResult:
    return GateResult(name=check.name, passed=check.passed, detail=check.detail)


def judge(
    report: TargetReport,
    variants: dict[str, LocatedVariant],
    result: RuntimeResult,
    out_dir: Path,
    gates: Gates,
    batch_dim: str | None = None,
) -> TargetReport:
    """Fill in the report's comparisons, metrics, timings and gates; failed unless every gate
    passed. `batch_dim`: the model's batch dim, whose sizes the timings are profiled by."""
    report = report.model_copy(deep=True)
    report.notes += result.notes
    try:
        compared = _compare(variants, result, out_dir, gates)
    except OutputMismatch as exc:
        report.status, report.error = Status.FAILED, f"gate outputs failed: {exc}"
        return report
    baseline_runs = {(r.file, r.runtime) for r in result.runs if r.role is ArtifactRole.BASELINE}
    shipped = [c for c in compared if (c.file, c.runtime) not in baseline_runs]
    baseline = [c for c in compared if (c.file, c.runtime) in baseline_runs]
    shipped_runs = [r for r in result.runs if r.role is ArtifactRole.SHIPPED]
    measured = _metrics(shipped, shipped_runs) if shipped else Metrics()
    report.metrics = measured.model_copy(update=report.metrics.model_dump(exclude_none=True))
    report.variants = compared
    report.runtimes = [_timing(r, variants, batch_dim) for r in shipped_runs]
    report.gates = [_check_gate(c) for c in result.checks]
    if shipped:
        report.gates += apply_gates(gates, measured)
    if baseline:
        baseline_metrics = _metrics(baseline, [r for r in result.runs if r.role is ArtifactRole.BASELINE])
        report.gates += [
            g.model_copy(update={"name": f"baseline_{g.name}"})
            for g in apply_gates(FP32_GATES, baseline_metrics)
        ]
    failed = [g for g in report.gates if not g.passed]
    if failed or not shipped:
        reasons = [g.describe() for g in failed] or ["no artifact was run"]
        worst = max(shipped, key=lambda c: c.scaled_abs_err or c.max_abs_err) if shipped else None
        where = ""
        if worst and any(g.limit is not None for g in failed):
            where = f" (worst: variant {worst.variant}, output {worst.worst_output}, file {worst.file}"
            where += f", {worst.runtime})"
        report.status, report.error = Status.FAILED, "; ".join(reasons) + where
        return report
    report.status = Status.PASSED
    return report


def edge_dims(signature: Signature, narrowed: Envelope) -> dict[str, int] | None:
    """The variant at the top of a narrowed envelope, or None when the export serves the declared range.

    Each narrowed dim at its served max; every other dim at its typical size (within what is served).
    """
    served, _ = served_envelope(signature, narrowed)
    lowered = {d for d, r in served.items() if r.max < signature.dims[d].max}
    if not lowered:
        return None
    return {
        name: served[name].max
        if name in lowered
        else min(max(dim.typical, served[name].min), served[name].max)
        for name, dim in signature.dims.items()
    }


def in_envelope(dims: dict[str, int], envelope: Envelope) -> bool:
    return all(v in envelope[d] for d, v in dims.items() if d in envelope)
