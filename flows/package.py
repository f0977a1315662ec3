"""The package-model flow: prepare once, package every target concurrently, publish what passed."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from flows._env import configure_prefect_env

configure_prefect_env()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.runtime import flow_run as prefect_flow_run  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from registry import RunInfo, SourceInfo, VersionManifest, fetch_source, open_registry  # noqa: E402
from shipyard import __version__  # noqa: E402
from shipyard.prepare import PreparedRun, prepare_run  # noqa: E402
from shipyard.report import RunReport, Status, TargetReport  # noqa: E402
from shipyard.spec import parse_spec  # noqa: E402
from shipyard.table import format_table, table_rows  # noqa: E402
from targets import get_target, resolve_targets  # noqa: E402
from targets._catalog import check_target_settings  # noqa: E402
from targets._package import package_target, target_dir  # noqa: E402
from targets._toolchain import toolchain_versions  # noqa: E402

__all__ = ["package_model", "runs_home"]

MAX_PARALLEL_TARGETS = int(os.environ.get("SHIPYARD_MAX_PARALLEL_TARGETS", "2"))


def runs_home() -> Path:
    home = Path(os.environ.get("SHIPYARD_HOME", Path.home() / ".shipyard"))
    return home / "runs"


@task(name="prepare")
def prepare(source: str, spec: dict[str, Any] | None, name: str | None, workdir: str) -> PreparedRun:
    """Fetch the source, read its signature, compute reference outputs on every variant."""
    parsed = parse_spec(spec)
    check_target_settings(parsed.targets)
    local = fetch_source(source, Path(workdir) / "source")
    return prepare_run(local, parsed, Path(workdir), name=name, run_id=Path(workdir).name)


@task(name="package-target", task_run_name="package-{target_name}")
def package_one(run: PreparedRun, target_name: str) -> TargetReport:
    """Export and validate one target in child processes; failures become a failed report."""
    report = package_target(run, get_target(target_name))
    if report.status is not Status.PASSED:
        get_run_logger().warning("%s failed: %s", target_name, report.error)
    return report


@task(name="publish", retries=2, retry_delay_seconds=10)  # safe: publishing is idempotent
def publish(
    run: PreparedRun,
    reports: dict[str, TargetReport],
    toolchain: dict[str, str],
    registry_url: str | None,
    flow_run_id: str | None,
) -> int | None:
    """Blobs first, manifest last, then `latest`; nothing when no target passed."""
    if not any(r.status is Status.PASSED for r in reports.values()):
        return None
    registry = open_registry(registry_url)
    draft = VersionManifest(
        model=run.model_name,
        version=0,
        created_at="",
        source=SourceInfo(
            sha256=run.source_sha256,
            kind=run.source_kind.value,
            bytes=run.source_bytes,
            filename=Path(run.source).name,
        ),
        spec=run.spec.model_dump(mode="json", exclude_defaults=True),
        signature=run.signature,
        toolchain=toolchain,
        run=RunInfo(run_id=run.run_id, shipyard_version=__version__, flow_run_id=flow_run_id),
        targets={
            n: r if r.status is Status.PASSED else r.model_copy(update={"files": []})
            for n, r in reports.items()
        },
    )
    dirs = {n: target_dir(run, get_target(n)) / "artifact" for n in reports}
    return registry.publish(draft, dirs, Path(run.source)).version


@task(name="record-report", retries=2, retry_delay_seconds=10)
def record_report(registry_url: str | None, flow_run_id: str, report: dict[str, Any]) -> None:
    """Keep the report in the registry under runs/<flow run id> (what the webhook's status shows)."""
    open_registry(registry_url).save_run_report(flow_run_id, report)


def _ui_artifacts(report: RunReport) -> None:
    key = f"package-{report.model}".replace(".", "-").replace("_", "-")
    create_table_artifact(
        table=table_rows(report), key=key, description=f"Shipyard results for {report.model}"
    )
    lines = [f"# {report.model} v{report.version or '-'}", ""]
    for name, t in report.targets.items():
        lines.append(f"- **{name}**: {t.status.value}" + (f" — {t.error}" if t.error else ""))
    create_markdown_artifact(markdown="\n".join(lines), key=f"{key}-summary")


@flow(
    name="package-model",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_TARGETS),  # type: ignore[arg-type]
    validate_parameters=True,
)
def package_model(
    source: str,
    targets: list[str] | None = None,
    spec: dict[str, Any] | None = None,
    name: str | None = None,
    registry: str | None = None,
    keep_workdir: bool = False,
) -> dict[str, Any]:
    """Package SOURCE for every requested target (all when none) and publish what passed."""
    chosen = [t.name for t in resolve_targets(targets)]
    flow_run_id = prefect_flow_run.id
    workdir = runs_home() / uuid.uuid4().hex[:12]
    run = prepare(source, spec, name, str(workdir))
    futures = {t: package_one.submit(run, t) for t in chosen}
    reports = {t: f.result() for t, f in futures.items()}
    toolchain = toolchain_versions([get_target(t) for t in chosen])
    version = publish(run, reports, toolchain, registry, flow_run_id)
    report = RunReport(
        model=run.model_name,
        version=version,
        source_sha256=run.source_sha256,
        toolchain=toolchain,
        targets=reports,
        run_id=run.run_id,
    )
    get_run_logger().info("\n%s", format_table(report))
    _ui_artifacts(report)
    if flow_run_id:
        record_report(registry, flow_run_id, report.to_json_dict())
    if report.exit_code() == 0 and not keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return report.to_json_dict()
