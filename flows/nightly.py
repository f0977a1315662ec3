"""The nightly-reexport flow: package every tracked model again with the current toolchain, report drift."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows._parameters import SpecForm, TargetName
from flows.package import package_model
from registry import VersionManifest, open_registry
from shipyard.drift import drift_rows, toolchain_changes
from shipyard.errors import NotFound
from shipyard.report import Status
from targets import all_targets

__all__ = ["nightly_reexport"]


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


@task(name="fetch-source")
def fetch_source_blob(registry: str | None, manifest: VersionManifest, folder: str) -> str:
    """The version's source model, from the registry, digest checked."""
    dest = Path(folder) / f"{manifest.model}.pt2"
    open_registry(registry).download_blob(manifest.source.sha256, dest, label=f"{manifest.model} source")
    return str(dest)


@task(name="fetch-samples")
def fetch_samples_blob(registry: str | None, manifest: VersionManifest, folder: str) -> str | None:
    """The version's validation samples, from the registry, digest checked (None if it had none)."""
    if manifest.samples is None:
        return None
    dest = Path(folder) / f"{manifest.model}.samples.npz"
    open_registry(registry).download_blob(manifest.samples.sha256, dest, label=f"{manifest.model} samples")
    return str(dest)


def _asked_targets(old: VersionManifest) -> list[TargetName]:
    """The targets the version was packaged for; [] (all, skips reported again) if it was all."""
    if set(old.targets) == {t.name for t in all_targets()}:
        return []
    return [TargetName(n) for n, r in sorted(old.targets.items()) if r.status is not Status.SKIPPED]


def _reexport(
    old: VersionManifest, registry: str | None, folder: str
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Package one tracked version's source again; its drift rows and its summary."""
    source = fetch_source_blob(registry, old, folder)
    new = package_model(
        source=source,
        targets=_asked_targets(old),
        spec=SpecForm.model_validate({k: v for k, v in old.spec.items() if k != "samples"}),
        name=old.model,
        registry=registry,
        samples=fetch_samples_blob(registry, old, folder),
    )
    before = {"targets": {n: t.model_dump(mode="json") for n, t in old.targets.items()}}
    changes = toolchain_changes(old.toolchain, new["toolchain"])
    reran = [s["step"] for s in new["steps"] if not s["reused"]]
    get_run_logger().info(
        "%s: v%s -> v%s, toolchain changes %s, %d step(s) run again, %d reused",
        old.model,
        old.version,
        new["version"],
        changes or "none",
        len(reran),
        len(new["steps"]) - len(reran),
    )
    summary = {
        "model": old.model,
        "old_version": old.version,
        "new_version": new["version"],
        "toolchain_changes": changes,
        "steps_run": reran,
        "steps_reused": len(new["steps"]) - len(reran),
    }
    return drift_rows(old.model, before, new), summary


@flow(name="nightly-reexport", validate_parameters=True)
def nightly_reexport(
    registry: str | None = None, alias: str = "latest", models: list[str] | None = None
) -> dict[str, Any]:
    """Re-package each tracked model's source with today's toolchain; publish and report drift.

    An unchanged toolchain gives the same identity, so no new version is written, and every
    step comes from the step cache; a changed tool re-runs only the steps that use it.

    Args:
        registry: The registry to re-export: file:///abs/path or s3://bucket/prefix (default: the
            worker's $SHIPYARD_REGISTRY).
        alias: The version of each model to re-export is the one this alias points at.
        models: The models to re-export; none means every model that has the alias.
    """
    logger = get_run_logger()
    rows: list[dict[str, str]] = []
    summary: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="shipyard-nightly-") as folder:
        for old in tracked_versions(registry, alias, models):
            try:
                model_rows, model_summary = _reexport(old, registry, folder)
            except Exception as exc:  # one model's failure must not stop the others
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                logger.error("%s: re-export failed: %s", old.model, reason)
                failures.append({"model": old.model, "error": f"{type(exc).__name__}: {reason}"})
                continue
            rows += model_rows
            summary.append(model_summary)
    if rows:
        create_table_artifact(table=rows, key="nightly-drift", description="Per-target drift after re-export")
    return {"models": summary, "drift": rows, "failures": failures}
