"""One packaging run, from a checked request to a published version and a report. No Prefect.

The `package-model` flow and the CLI's local mode (no Prefect server configured) both call
`package`; the flow adds Prefect task runs around each step, retries around publishing and
artifacts in the UI.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from registry import Registry, RunInfo, SourceInfo, VersionDraft, VersionManifest, open_registry
from shipyard import __version__
from shipyard.digests import sha256_file
from shipyard.errors import InputError
from shipyard.report import RunReport, Status
from shipyard.settings import settings
from targets.pipeline import Engine, PackagingRequest, PipelineResult, StepHooks, shipyard_home

__all__ = [
    "RUN_REPORT",
    "Publish",
    "package",
    "prune_run_folders",
    "publish_version",
    "runs_home",
    "store_version_report",
]

RUN_REPORT = "report.json"  # in a kept run folder

# (result, registry URL, run info) -> the published version, or None when nothing passed
Publish = Callable[[PipelineResult, str | None, RunInfo], int | None]


def runs_home() -> Path:
    return shipyard_home() / "runs"


def prune_run_folders() -> list[Path]:
    """Remove kept run folders (failed runs, --keep-workdir) older than $SHIPYARD_KEEP_RUNS_DAYS."""
    cutoff = time.time() - settings().keep_runs_days * 86400
    removed = []
    with contextlib.suppress(OSError):
        for folder in runs_home().iterdir():
            with contextlib.suppress(OSError):
                if folder.is_dir() and not folder.is_symlink() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder)
                    removed.append(folder)
    return removed


def _file_info(path: Path, kind: str) -> SourceInfo:
    return SourceInfo(sha256=sha256_file(path), kind=kind, bytes=path.stat().st_size, filename=path.name)


def publish_version(result: PipelineResult, registry_url: str | None, run: RunInfo) -> int | None:
    """Blobs first, manifest last, then `latest`; nothing when no target passed.

    The spec is recorded as given, except that samples are named by content (`sha256:<digest>`)
    and stored beside the source, so the nightly can replay them wherever it runs.
    """
    if not any(r.status is Status.PASSED for r in result.reports.values()):
        return None
    request = result.request
    samples = Path(request.spec.samples) if request.spec.samples else None
    samples_info = _file_info(samples, "npz") if samples else None
    spec = request.spec.model_dump(mode="json", exclude_defaults=True)
    if samples_info:
        spec["samples"] = f"sha256:{samples_info.sha256}"
    draft = VersionDraft(
        model=request.model_name,
        source=SourceInfo(
            sha256=request.source_sha256,
            kind=request.source_kind.value,
            bytes=request.source_bytes,
            filename=request.source.name,
        ),
        spec=spec,
        signature=result.signature,
        toolchain=result.toolchain,
        run=run,
        targets={
            n: r if r.status is Status.PASSED else r.model_copy(update={"files": []})
            for n, r in result.reports.items()
        },
        samples=samples_info,
    )
    registry = open_registry(registry_url)
    manifest = registry.publish(draft, result.artifact_dirs, request.source, samples=samples)
    try:
        store_version_report(registry, manifest, result)
    except Exception as exc:  # the version is published; its page can be rendered again later
        logging.getLogger(__name__).warning(
            "%s:%s is published, but its HTML report was not stored (%s: %s); "
            "`shipyard report` renders it from the manifest",
            manifest.model,
            manifest.version,
            type(exc).__name__,
            exc,
        )
    return manifest.version


def store_version_report(registry: Registry, manifest: VersionManifest, result: PipelineResult) -> None:
    """The version's HTML report, beside its manifest; compared with the version before it."""
    from flows.html_report import render_version_report

    previous = registry.previous_version(manifest.model, manifest.version)
    run = {
        "steps": [s.model_dump(mode="json") for s in result.steps],
        "workdir": str(runs_home() / manifest.run.run_id),
    }
    html = render_version_report(manifest, previous, run)
    registry.save_version_report(manifest.model, manifest.version, html)


def _remove_run_folder(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    with contextlib.suppress(OSError):
        workdir.parent.rmdir()  # runs/ itself, when this was the only run in it


def package(
    request: PackagingRequest,
    registry_url: str | None,
    hooks: StepHooks | None = None,
    publish: Publish = publish_version,
    flow_run_id: str | None = None,
    keep_workdir: bool = False,
) -> RunReport:
    """Run every step, publish the targets that passed, return the report.

    The run folder ($SHIPYARD_HOME/runs/<id>) keeps each step's job, log and reproduce.sh; it is
    removed after a fully passing run and kept when a target failed, for $SHIPYARD_KEEP_RUNS_DAYS
    days (default 14: every run removes older ones). InputError (a source that
    does not load, a spec that does not fit it) leaves nothing behind.
    """
    prune_run_folders()
    run_id = uuid.uuid4().hex[:12]
    workdir = runs_home() / run_id
    try:
        with Engine() as engine:
            result = engine.run(request, workdir, hooks)
    except InputError:
        _remove_run_folder(workdir)
        raise
    version = publish(
        result, registry_url, RunInfo(run_id=run_id, shipyard_version=__version__, flow_run_id=flow_run_id)
    )
    report = RunReport(
        model=request.model_name,
        version=version,
        source_sha256=request.source_sha256,
        toolchain=result.toolchain,
        targets=result.reports,
        run_id=run_id,
        steps=result.steps,
        html_report=open_registry(registry_url).report_location(request.model_name, version)
        if version is not None
        else None,
    )
    if report.exit_code() == 0 and not keep_workdir:
        _remove_run_folder(workdir)
    else:  # kept: say where, and leave the report beside the steps for `shipyard runs`
        report.workdir = str(workdir)
        (workdir / RUN_REPORT).write_text(report.model_dump_json(indent=2))
    return report
