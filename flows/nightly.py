"""The nightly-reexport flow: package every tracked model again with the current toolchain, report drift."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.deployments import run_deployment
from prefect.runtime import deployment as prefect_deployment
from prefect.runtime import flow_run as prefect_flow_run

from flows._parameters import TargetName
from flows.package import package_model
from registry import Registry, VersionManifest, open_registry
from shipyard.drift import DriftRow, drift_rows, toolchain_changes
from shipyard.errors import InputError, NotFound, RegistryError, one_line
from shipyard.report import RunReport, Status
from shipyard.source import ModelClass
from shipyard.spec import parse_spec
from targets import default_targets
from targets.pipeline import check_target_settings

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

__all__ = ["PACKAGE_DEPLOYMENT", "nightly_reexport"]

PACKAGE_DEPLOYMENT = "package-model/package-model"
WAIT_FOR_RUNS_S = 12 * 3600
POLL_S = 5


@task(name="tracked-versions")
def tracked_versions(registry: str | None, alias: str, models: list[str] | None) -> list[VersionManifest]:
    """The version each model's alias points at (models without that alias are not tracked)."""
    reg = open_registry(registry)
    found = []
    for name in models or reg.models():
        try:
            found.append(reg.resolve(f"{name}@{alias}"))
        except NotFound:
            continue
    return found


def _blob_uri(reg: Registry, digest: str) -> str:
    """Where the package-model flow fetches a stored blob from, on whichever worker runs it."""
    return f"{reg.url.rstrip('/')}/{reg.blob_key(digest)}"


def _asked_targets(old: VersionManifest) -> list[TargetName]:
    """The targets the version was packaged for; [] (the default set, skips reported again) if it
    was that set."""
    if any(set(old.targets) == {t.name for t in default_targets(c)} for c in ModelClass):
        return []
    return [TargetName(n) for n, r in sorted(old.targets.items()) if r.status is not Status.SKIPPED]


def _package_parameters(old: VersionManifest, reg: Registry, registry: str | None) -> dict[str, Any]:
    """package-model's parameters that package this version's source and spec again."""
    return {
        "source": _blob_uri(reg, old.source.sha256),
        "targets": _asked_targets(old),
        "spec": {k: v for k, v in old.spec.items() if k != "samples"},
        "name": old.model,
        "registry": registry,
        "samples": _blob_uri(reg, old.samples.sha256) if old.samples else None,
    }


def _spec_refused_today(spec: dict[str, Any]) -> str | None:
    """Why a stored spec may not run under today's catalog and step limits, or None."""
    try:
        check_target_settings(parse_spec(spec))
    except InputError as exc:
        return f"stored spec refused today: {one_line(exc)}"
    return None


def _on_workers(runs: dict[str, dict[str, Any]], reg: Registry) -> dict[str, RunReport | str]:
    """One package-model flow run per model, for any worker of the pool; each one's report or error.

    Idempotency keys tie the runs to this nightly run, so a re-run of the nightly (after a crash)
    waits for the same runs instead of starting them twice.
    """
    from prefect.client.orchestration import get_client

    started = {
        model: cast(
            "FlowRun",
            run_deployment(
                PACKAGE_DEPLOYMENT,
                parameters=parameters,
                timeout=0,
                idempotency_key=f"{prefect_flow_run.id}.{model}",
                tags=["nightly"],
            ),
        )
        for model, parameters in runs.items()
    }
    results: dict[str, RunReport | str] = {}
    deadline = time.monotonic() + WAIT_FOR_RUNS_S
    with get_client(sync_client=True) as client:
        for model, run in started.items():
            while True:
                state = client.read_flow_run(run.id).state
                if state is not None and state.is_final():
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"package-model runs still unfinished after {WAIT_FOR_RUNS_S} s")
                time.sleep(POLL_S)
            try:
                report = reg.run_report(str(run.id))
            except RegistryError as exc:  # one model's unreadable report must not stop the others
                results[model] = one_line(exc)
                continue
            results[model] = (
                report if report is not None else f"run {run.id} ended {state.type.value.lower()}"
            )
    return results


def _in_process(runs: dict[str, dict[str, Any]]) -> dict[str, RunReport | str]:
    """Each model packaged as a subflow of this run (no deployment to fan out to)."""
    results: dict[str, RunReport | str] = {}
    for model, parameters in runs.items():
        try:
            results[model] = package_model(**parameters)
        except Exception as exc:  # one model's failure must not stop the others
            results[model] = f"{type(exc).__name__}: {one_line(exc)}"
    return results


def _summary(old: VersionManifest, new: RunReport) -> tuple[list[DriftRow], dict[str, Any]]:
    """One re-exported version's drift rows and its summary."""
    changes = toolchain_changes(old.toolchain, new.toolchain)
    reran = [s.step for s in new.steps if not s.reused]
    get_run_logger().info(
        "%s: v%s -> v%s, toolchain changes %s, %d step(s) run again, %d reused",
        old.model,
        old.version,
        new.version,
        changes or "none",
        len(reran),
        len(new.steps) - len(reran),
    )
    summary = {
        "model": old.model,
        "old_version": old.version,
        "new_version": new.version,
        "toolchain_changes": changes,
        "steps_run": reran,
        "steps_reused": len(new.steps) - len(reran),
    }
    return drift_rows(old.model, old.targets, new.targets), summary


@flow(name="nightly-reexport", validate_parameters=True)
def nightly_reexport(
    registry: str | None = None, alias: str = "latest", models: list[str] | None = None
) -> dict[str, Any]:
    """Re-package each tracked model's source with today's toolchain; publish and report drift.

    Run from its deployment, it starts one package-model run per model, so every worker of the
    pool shares the night's work; run directly (no deployment), it packages them one by one here.

    An unchanged toolchain gives the same identity, so no new version is written, and every
    step comes from the step cache; a changed tool re-runs only the steps that use it.

    Args:
        registry: The registry to re-export: file:///abs/path or s3://bucket/prefix (default: the
            worker's $SHIPYARD_REGISTRY).
        alias: The version of each model to re-export is the one this alias points at.
        models: The models to re-export; none means every model that has the alias.
    """
    tracked = {old.model: old for old in tracked_versions(registry, alias, models)}
    reg = open_registry(registry)
    runs = {model: _package_parameters(old, reg, registry) for model, old in tracked.items()}
    refused = {model: problem for model, p in runs.items() if (problem := _spec_refused_today(p["spec"]))}
    runs = {model: p for model, p in runs.items() if model not in refused}
    results = {**refused, **(_on_workers(runs, reg) if prefect_deployment.id else _in_process(runs))}
    rows: list[DriftRow] = []
    summary: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for model, result in results.items():
        if isinstance(result, str):
            get_run_logger().error("%s: re-export failed: %s", model, result)
            failures.append({"model": model, "error": result})
            continue
        model_rows, model_summary = _summary(tracked[model], result)
        rows += model_rows
        summary.append(model_summary)
    if rows:
        table = [r.model_dump(mode="json") for r in rows]
        create_table_artifact(
            table=table, key="nightly-drift", description="Per-target drift after re-export"
        )
    report = _drift_page(reg, summary, rows, failures)
    create_markdown_artifact(
        markdown=f"Nightly drift report: [{report}]({report})", key="nightly-drift-report"
    )
    drift = [r.model_dump(mode="json") for r in rows]
    return {"models": summary, "drift": drift, "failures": failures, "report": report}


def _drift_page(
    reg: Registry, summary: list[dict[str, Any]], rows: list[DriftRow], failures: list[dict[str, str]]
) -> str | None:
    """The night's drift as an HTML page in the registry (named by the flow run); where it is,
    or None (logged) when it could not be stored: the re-exports themselves stand."""
    from flows.html_report import render_drift_report

    run = str(prefect_flow_run.id) if prefect_flow_run.id else time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    title = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        return reg.save_nightly_report(run, render_drift_report(title, summary, rows, failures))
    except Exception as exc:
        get_run_logger().warning("the drift report was not stored: %s: %s", type(exc).__name__, exc)
        return None
