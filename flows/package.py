"""The package-model flow: check the request, run its steps as Prefect task runs, publish what passed."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment as prefect_deployment
from prefect.runtime import flow_run as prefect_flow_run

from flows._packaging import package, publish_version
from flows._parameters import SpecForm, TargetName, spec_dict, target_names
from flows.concurrency import ensure_step_limit, step_slot
from flows.warm_runs import process_origin
from registry import RunInfo, fetch_source, open_registry
from shipyard.report import RunReport, StepStatus
from shipyard.table import table_rows
from targets.pipeline import PipelineResult, Step, StepOutcome, check_request

__all__ = ["MAX_RUN_ATTEMPTS", "package_model"]

MAX_RUN_ATTEMPTS = 3  # a run re-queued after crashes (flows/deploy.py) fails itself after this


@task(name="step", task_run_name="{step_id}", cache_policy=NO_CACHE, persist_result=False)
def run_step(step_id: str, call: Callable[[], StepOutcome]) -> StepOutcome:
    """One step of the run's graph (its own process; reused from the step cache when unchanged)."""
    outcome = call()
    if outcome.status is StepStatus.FAILED:
        get_run_logger().warning("%s failed: %s", step_id, outcome.error)
    elif outcome.reused:
        get_run_logger().info("%s reused from the step cache", step_id)
    return outcome


class PrefectStepHooks:
    """Each step is a Prefect task run of the flow run, so the UI shows the graph as it runs.

    With `step_limit`, each step first takes a slot of that concurrency limit (the worker's).
    """

    def __init__(self, step_limit: str | None = None) -> None:
        self.step_limit = step_limit

    def run(self, step: Step, call: Callable[[], StepOutcome]) -> StepOutcome:
        if self.step_limit is None:
            return run_step(step.id, call)
        with step_slot(self.step_limit):
            return run_step(step.id, call)

    def ended(self, outcome: StepOutcome) -> None:
        return None


@task(
    name="publish", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE
)  # safe: publishing is idempotent
def publish(result: PipelineResult, registry_url: str | None, run: RunInfo) -> int | None:
    """Blobs first, then the immutable version manifest, then `latest`."""
    return publish_version(result, registry_url, run)


@task(name="record-report", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def record_report(registry_url: str | None, flow_run_id: str, report: RunReport) -> None:
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
    reused = report.reused_steps()
    if reused:
        lines += ["", f"Reused from the step cache: {', '.join(reused)}"]
    if report.html_report:
        lines += ["", f"HTML report: [{report.html_report}]({report.html_report})"]
    create_markdown_artifact(markdown="\n".join(lines), key=f"{key}-summary")


@flow(name="package-model", validate_parameters=True)
def package_model(
    source: str,
    targets: list[TargetName] | None = None,
    spec: SpecForm | None = None,
    name: str | None = None,
    registry: str | None = None,
    keep_workdir: bool = False,
    samples: str | None = None,
) -> RunReport:
    """Package a model for every requested target, prove each artifact in its runtime, publish what passed.

    Args:
        source: The model (.pt2, .onnx, .keras, or a .zip/.tar.gz of a SavedModel or of an ONNX
            model's folder with its external data): a path
            on the worker, file:///abs/path, s3://bucket/key, or what the webhook stored
            (s3://.../incoming/<sha256>).
        targets: The targets to package for; none selected means every target.
        spec: Names, dim ranges, per-target options, gates and limits, as in a spec file.
        name: Registry model name (default: the spec's name, else the source file's stem).
        registry: Where to publish: file:///abs/path or s3://bucket/prefix (default: the worker's
            $SHIPYARD_REGISTRY).
        keep_workdir: Keep the run's work folder even when every target passed.
        samples: Validation inputs, an .npz with one array per input name: a path or URI like source.
    """
    flow_run_id = str(prefect_flow_run.id) if prefect_flow_run.id else None
    attempt = prefect_flow_run.run_count
    if attempt > MAX_RUN_ATTEMPTS:
        raise RuntimeError(f"this run crashed {attempt - 1} times; not starting it again")
    step_limit = ensure_step_limit() if prefect_deployment.id else None  # runs on a worker
    if prefect_deployment.id:
        get_run_logger().info("flow run process: %s", process_origin())
    with tempfile.TemporaryDirectory(prefix="shipyard-source-") as downloads:
        given = spec_dict(spec)
        if samples:
            given = {**given, "samples": str(fetch_source(samples, Path(downloads) / "samples"))}
        source_path = fetch_source(source, Path(downloads))
        # headers only here: the bounded prepare step checks the file whole before it is loaded
        request = check_request(source_path, given, target_names(targets), name, sniff=True)
        report = package(
            request,
            registry,
            hooks=PrefectStepHooks(step_limit),
            publish=publish,
            flow_run_id=flow_run_id,
            keep_workdir=keep_workdir,
        )
    summary = ", ".join(f"{n} {t.status.value}" for n, t in report.targets.items())
    get_run_logger().info("%s v%s: %s", report.model, report.version or "-", summary)
    _ui_artifacts(report)
    if flow_run_id:
        record_report(registry, flow_run_id, report)
    return report
