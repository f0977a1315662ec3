"""Package a model: check the request, plan its steps, run them warm and isolated, judge each target.

    request = check_request(Path("model.pt2"), spec, ["tfjs", "aoti"])
    with Engine() as engine:
        result = engine.run(request, workdir)
    result.reports["tfjs"].status

The one request check serves the CLI, the webhook and the flow. The engine plans a graph of
typed steps (targets.engine.graph), runs each in a process forked from a warm server with a
timeout and memory cap, reuses any step whose inputs, options and toolchain are unchanged
(targets.engine.cache), and judges every target against the source's reference outputs.
Publishing is the registry's job; this module writes nothing outside the run folder and the
step cache.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipyard.digests import sha256_file
from shipyard.errors import InputError, ShipyardError, SourceError, SpecError
from shipyard.hf_folder import read_causal_lm
from shipyard.prepare import PreparedVariant, check_source, choose_model_name
from shipyard.report import FileEntry, Metrics, Status, StepRecord, StepStatus, TargetReport
from shipyard.settings import settings as env_settings
from shipyard.signature import Signature
from shipyard.source import ModelClass, SourceKind
from shipyard.spec import Spec, TargetSettings, parse_spec
from shipyard.variants import check_samples, max_variant_elements
from targets._catalog import Target, get_target, ladder_variant, resolve_targets, variant_name
from targets._formats import source_format
from targets._jobs import ExportResult, RuntimeResult
from targets.engine.cache import StepCache
from targets.engine.execute import RunContext, StepExecutor, located_variants, step_folder
from targets.engine.fingerprint import toolchain_versions
from targets.engine.graph import PREPARE, Plan, Step, StepKind, export_id, plan_steps, validate_id
from targets.engine.judge import judge, served_envelope
from targets.engine.limits import max_parallel_steps
from targets.engine.scheduler import NoHooks, StepHooks, StepOutcome, run_plan
from targets.engine.steps import PreparedSource
from targets.engine.workers import StepProcesses

__all__ = [
    "DryRun",
    "Engine",
    "NoHooks",
    "PackagingRequest",
    "PipelineResult",
    "PlannedStep",
    "Step",
    "StepHooks",
    "StepOutcome",
    "check_request",
    "check_target_settings",
    "default_cache_dir",
    "shipyard_home",
]


def shipyard_home() -> Path:
    return env_settings().home


def default_cache_dir() -> Path | None:
    """$SHIPYARD_CACHE_DIR, else $SHIPYARD_HOME/cache/steps; None when SHIPYARD_CACHE=off."""
    env = env_settings()
    if not env.cache:
        return None
    return env.home / "cache" / "steps" if env.cache_dir is None else env.cache_dir


class PackagingRequest(BaseModel):
    """A checked request: a readable source of a known kind, a valid spec, targets that can take it."""

    source: Path
    source_kind: SourceKind
    source_sha256: str
    source_bytes: int
    spec: Spec
    targets: list[str]
    model_name: str
    skipped: dict[str, str] = {}  # target -> why it is not built (no converter path, no such rung)
    asked: list[str] = []  # the target names as asked ([]: the default set)

    def asked_targets(self) -> list[str]:
        """The targets to hand on to a flow run, which checks the request again (and so says
        again why any is skipped)."""
        return self.asked


def check_target_settings(spec: Spec) -> None:
    """SpecError when a spec's per-target settings are invalid or beyond this service's step limits."""
    for target_name, settings in spec.targets.items():
        get_target(target_name).check_settings(settings)


def check_request(
    source: Path,
    spec: Spec | dict[str, Any] | None = None,
    targets: list[str] | str | None = None,
    name: str | None = None,
    sniff: bool = False,
) -> PackagingRequest:
    """Everything that can be checked without loading the model; InputError names what is wrong.

    `sniff`: know the source's kind from its headers only (the webhook's door check)."""
    spec = spec if isinstance(spec, Spec) else parse_spec(spec)
    check_target_settings(spec)
    resolve_targets(targets)  # an unknown name is refused before the source is read
    if spec.samples:
        samples = Path(spec.samples).resolve()  # step processes run in folders of their own
        if not samples.is_file():
            raise SpecError(f"spec field samples: {spec.samples} is not a file")
        check_samples(samples, max_variant_elements())
        spec = spec.model_copy(update={"samples": str(samples)})
    source = source.resolve()
    kind = check_source(source, sniff)
    model_name = choose_model_name(spec, source, name)
    if kind is SourceKind.HF_FOLDER:
        read_causal_lm(source)  # headers only: a folder that would be refused is, before packing it
    model_class = source_format(kind.packed).model_class
    chosen, unoffered = _climb_ladders(resolve_targets(targets, model_class), spec)
    skipped = {t.name: reason for t in chosen if (reason := t.refusal(kind.packed))}
    named = [n for n in (targets.split(",") if isinstance(targets, str) else targets or []) if n.strip()]
    if skipped and (named or len(skipped) == len(chosen)):  # asked by name, or nothing is left
        raise SourceError(_refused(source, kind, [t for t in chosen if t.name in skipped]))
    if kind.packed is not kind:  # a folder: from here on, one deterministic tar of it
        source, kind = _packed(source), kind.packed
    chosen = [t for t in chosen if t.name not in skipped]
    if not chosen and unoffered:
        raise SpecError(f"no target is left to build: {'; '.join(unoffered.values())}")
    return PackagingRequest(
        source=source,
        source_kind=kind,
        source_sha256=sha256_file(source),
        source_bytes=source.stat().st_size,
        spec=spec,
        targets=[t.name for t in chosen],
        model_name=model_name,
        skipped=skipped | unoffered,
        asked=[t.name for t in resolve_targets(targets)] if named else [],
    )


def _refused(source: Path, kind: SourceKind, refused: list[Target]) -> str:
    """Why the targets asked for (or all of them) cannot take this source."""
    names = ", ".join(t.name for t in refused)
    model_class = source_format(kind.packed).model_class
    if all(t.build(model_class) is None for t in refused):
        return (
            f"{source} is a {kind.value} model ({model_class.value}); {names} cannot be built from it: "
            f"{'it builds no' if len(refused) == 1 else 'none of them builds a'} {model_class.value} model"
        )
    able = sorted({k.value for k in SourceKind for t in refused if t.accepts(k.packed)})
    return (
        f"{source} is a {kind.value} model; {names} cannot be built from it "
        f"(this version takes {', '.join(able) or 'no'} sources)"
    )


def _climb_ladders(chosen: list[Target], spec: Spec) -> tuple[list[Target], dict[str, str]]:
    """Each target replaced by the rungs of its ladder the spec lists (itself when it lists none),
    and the rungs asked for that the ladder lacks, with the reason."""
    climbed: dict[str, Target] = {}
    unoffered: dict[str, str] = {}
    for target in chosen:
        settings = spec.targets.get(target.name)
        if settings is None or settings.precisions is None:
            climbed.setdefault(target.name, target)
            continue
        for precision in settings.precisions:
            rung = ladder_variant(target, precision)
            if isinstance(rung, Target):
                climbed.setdefault(rung.name, rung)
            else:
                unoffered[variant_name(target.name, precision)] = rung
    return list(climbed.values()), unoffered


def _packed(folder: Path) -> Path:
    """A model folder as a tar under $SHIPYARD_HOME/sources, named by its digest."""
    from shipyard.archive import pack_folder

    store = shipyard_home() / "sources"
    store.mkdir(parents=True, exist_ok=True)
    partial = store / f".{os.getpid()}.{folder.name}.tar.partial"
    try:
        pack_folder(folder, partial)
        packed = store / f"{sha256_file(partial)}.tar"
        partial.replace(packed)
    finally:
        partial.unlink(missing_ok=True)
    return packed


class PipelineResult(BaseModel):
    """Every target's report, every step's record, and where the passed artifacts are."""

    request: PackagingRequest
    signature: Signature
    reports: dict[str, TargetReport]
    steps: list[StepRecord]
    toolchain: dict[str, str]
    artifact_dirs: dict[str, Path]  # target -> its export's output folder


def _step_records(plan: Plan, outcomes: dict[str, StepOutcome]) -> list[StepRecord]:
    records = []
    for step_id, step in plan.steps.items():
        o = outcomes[step_id]
        if o.status is StepStatus.NOOP:
            continue  # nothing to compute: the export serves the declared range
        records.append(
            StepRecord(
                step=step_id,
                status=o.status,
                seconds=round(o.seconds, 3),
                started_at=round(o.started_at, 3) if o.started_at is not None else None,
                reused=o.reused,
                original_seconds=round(o.original_seconds, 3) if o.original_seconds is not None else None,
                targets=step.targets,
                error=o.reason() if o.status is not StepStatus.PASSED else None,
                folder=step_folder(step_id) if o.started_at is not None and not o.reused else None,
            )
        )
    return records


def _files(folder: Path, files: list[str]) -> list[FileEntry]:
    return [
        FileEntry(path=r, sha256=sha256_file(folder / r), bytes=(folder / r).stat().st_size) for r in files
    ]


def _target_report(
    target: Target,
    spec: Spec,
    signature: Signature,
    outcomes: dict[str, StepOutcome],
    model_class: ModelClass,
) -> TargetReport:
    """Judge one target; whatever goes wrong while judging fails that target only."""
    try:
        report = _judged(target, spec, signature, outcomes, model_class)
    except Exception as exc:  # a missing or unreadable output must not cost the other targets
        error = f"judging {target.name} failed: {type(exc).__name__}: {exc}"
        report = TargetReport(status=Status.FAILED, error=error)
    report.precision = target.precision
    return report


def _conversion_notes(target: Target, outcomes: dict[str, StepOutcome]) -> list[str]:
    """What the shared conversions a target was built from said about what they did."""
    return [
        note
        for o in outcomes.values()
        if o.step.kind is StepKind.CONVERT
        and target.name in o.step.targets
        and isinstance(o.result, ExportResult)
        for note in o.result.notes
    ]


def _judged(
    target: Target,
    spec: Spec,
    signature: Signature,
    outcomes: dict[str, StepOutcome],
    model_class: ModelClass,
) -> TargetReport:
    export = outcomes[export_id(target.name)]
    validate = outcomes[validate_id(target.name)]
    if not export.passed or not isinstance(export.result, ExportResult) or export.out_dir is None:
        return TargetReport(
            status=Status.FAILED, error=export.reason(), metrics=Metrics(export_s=round(export.seconds, 3))
        )
    exported = export.result
    files = _files(export.out_dir, exported.files)
    envelope, notes = served_envelope(signature, exported.envelope)
    notes = _conversion_notes(target, outcomes) + notes
    metrics = Metrics.model_validate(
        {
            "artifact_bytes": sum(f.bytes for f in files),
            "export_s": round(export.seconds, 3),
            "validate_s": round(validate.seconds, 3),
            **exported.metrics,
        }
    )
    report = TargetReport(
        status=Status.FAILED,
        files=files,
        metrics=metrics,
        envelope=envelope,
        notes=exported.notes + notes,
        interface=exported.interface,
    )
    if not validate.passed or not isinstance(validate.result, RuntimeResult) or validate.out_dir is None:
        report.error = validate.reason()
        return report
    runtime = validate.result
    report.metrics = Metrics.model_validate({**report.metrics.model_dump(exclude_none=True), **runtime.facts})
    gates = target.gates_for(model_class).merged(spec.targets.get(target.name, TargetSettings()).gates)
    variants = located_variants(outcomes, target.name)
    batch = signature.batch_dim()
    return judge(report, variants, runtime, validate.out_dir, gates, batch.name if batch else None)


class PlannedStep(BaseModel):
    step: str
    targets: list[str]
    cached: bool  # its result is in the step cache: it would not run
    conditional: bool = False  # runs only if the export narrows a dim (a reference step)


class DryRun(BaseModel):
    """What a run would do: the source's signature, the validation variants, every step."""

    signature: Signature
    variants: list[PreparedVariant]
    steps: list[PlannedStep]


class Engine:
    """Runs packaging requests; owns the warm process server and the step cache.

    Use it as a context manager: on exit the warm servers stop, with any step still running.
    """

    def __init__(
        self,
        cache: StepCache | None = None,
        max_parallel: int | None = None,
        warm: bool = True,
        log_dir: Path | None = None,
    ) -> None:
        """`cache`: by default the one in $SHIPYARD_HOME (none when SHIPYARD_CACHE=off);
        `StepCache(None)` keeps nothing."""
        self.cache = cache if cache is not None else StepCache(default_cache_dir())
        self.max_parallel = max_parallel or max_parallel_steps()
        logs = log_dir or shipyard_home() / "logs"
        self.processes = StepProcesses(warm=warm, log=logs / "workers.log")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.processes.close()

    def run(self, request: PackagingRequest, workdir: Path, hooks: StepHooks | None = None) -> PipelineResult:
        """Run every step the request needs and judge each target. InputError if the source is bad."""
        targets = [get_target(t) for t in request.targets]
        plan = plan_steps(request.source_kind, request.spec, targets)
        outcomes = self._run_plan(request, plan, workdir, hooks)
        prepared = outcomes[PREPARE]
        assert isinstance(prepared.result, PreparedSource)
        signature = prepared.result.signature
        model_class = source_format(request.source_kind).model_class
        reports = {t.name: _target_report(t, request.spec, signature, outcomes, model_class) for t in targets}
        reports |= {n: TargetReport(status=Status.SKIPPED, error=why) for n, why in request.skipped.items()}
        tools = {name for step in plan.steps.values() for name in step.recipe.toolchain}
        return PipelineResult(
            request=request,
            signature=signature,
            reports=reports,
            steps=_step_records(plan, outcomes),
            toolchain=toolchain_versions(tools),
            artifact_dirs={
                t.name: o.out_dir
                for t in targets
                if (o := outcomes[export_id(t.name)]).passed and o.out_dir is not None
            },
        )

    def plan(self, request: PackagingRequest, workdir: Path) -> DryRun:
        """Prepare the source (or reuse its preparation) and say which steps the cache would serve;
        nothing is exported."""
        plan = plan_steps(request.source_kind, request.spec, [get_target(t) for t in request.targets])
        outcomes = self._run_plan(request, plan, workdir, None, dry=True)
        prepared = outcomes[PREPARE].result
        assert isinstance(prepared, PreparedSource)
        steps = [
            PlannedStep(
                step=step_id,
                targets=step.targets,
                cached=outcomes[step_id].reused,
                conditional=step.kind is StepKind.REFERENCE,
            )
            for step_id, step in plan.steps.items()
            if step_id != PREPARE and outcomes[step_id].status is not StepStatus.NOOP
        ]
        return DryRun(signature=prepared.signature, variants=prepared.variants, steps=steps)

    def inspect(self, request: PackagingRequest, workdir: Path) -> Signature:
        """The source's signature with the spec applied, read in an isolated step process
        without running the model (`check_runs` runs it)."""
        plan = plan_steps(request.source_kind, request.spec, [])
        prepare = plan.steps[PREPARE]
        prepare.recipe = replace(prepare.recipe, function="targets.engine.steps:read_source_signature")
        prepared = self._run_plan(request, plan, workdir, None)[PREPARE].result
        assert isinstance(prepared, PreparedSource)
        return prepared.signature

    def check_runs(self, request: PackagingRequest, workdir: Path) -> None:
        """Run the source on every validation variant (as a packaging run does first); InputError
        naming the variant and its sizes when it cannot."""
        self.run(request.model_copy(update={"targets": []}), workdir)

    def _run_plan(
        self, request: PackagingRequest, plan: Plan, workdir: Path, hooks: StepHooks | None, dry: bool = False
    ) -> dict[str, StepOutcome]:
        """Every step's outcome (a dry run runs only the preparation); InputError for a bad source."""
        self.cache.prune()
        workdir.mkdir(parents=True, exist_ok=True)
        context = RunContext(
            source=request.source,
            source_sha256=request.source_sha256,
            spec=request.spec,
            model_name=request.model_name,
            folder=workdir,
        )
        executor = StepExecutor(context, self.processes, self.cache, plan.families(), dry=dry)
        outcomes = run_plan(plan, executor, self.max_parallel, hooks, abort=self.processes.close)
        prepared = outcomes[PREPARE]
        if not prepared.passed or not isinstance(prepared.result, PreparedSource):
            raise _prepare_error(prepared)
        return outcomes


class PrepareFailed(ShipyardError):
    """The source could not be prepared for a reason that is not bad input (a crash, a timeout)."""


def _prepare_error(prepared: StepOutcome) -> ShipyardError:
    """Bad input found while loading the source (exit 2); anything else as it is."""
    if prepared.bad_input:
        return InputError(prepared.error or "the source could not be prepared")
    return PrepareFailed(prepared.reason())
