"""Register Shipyard on a Prefect server: the `shipyard` work pool, the deployments, the re-run automations.

Run: python -m flows.deploy  (needs PREFECT_API_URL; `make up` runs it). Running it again updates
everything in place, so it is also the upgrade step. Cron: $SHIPYARD_NIGHTLY_CRON (default 0 3 * * *).

The deployments' entrypoints are module paths (`flows.package.package_model`): a worker runs
them from the project installed on its machine, so no code is pulled from a git host or a bucket.
Crash recovery is Prefect's own machinery: a flow run sends a heartbeat every
30 s (set in the work pool's template, so also under a bare `prefect worker start`);
one automation marks a run CRASHED when its heartbeats stop (its worker or machine died), another
puts a crashed run back in the pool as AwaitingRetry so another worker takes it. A run that
crashes MAX_RUN_ATTEMPTS times fails itself instead (flows/package.py).

The work pool's template is locked (`locked_job_template`): a flow run may not set the command,
the environment or the working folder, and infra/worker.py ignores a flow run's job variables.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from prefect import deploy
from prefect.automations import AutomationCore
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import StateType
from prefect.deployments.runner import RunnerDeployment
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound
from prefect.types.entrypoint import EntrypointType
from prefect.workers.process import ProcessWorker

from flows.nightly import nightly_reexport
from flows.package import package_model
from shipyard.settings import settings

__all__ = ["HEARTBEAT_SECONDS", "WORK_POOL", "automations", "register"]

WORK_POOL = "shipyard"
TAG = "shipyard"  # on both deployments, so on every run they start
HEARTBEAT_SECONDS = 30  # Prefect's minimum
# In the work pool's template, so every run heartbeats this often whichever worker runs it
# (Prefect's default is 180 s, which the 90 s silence below would take for a crash).
RUN_ENVIRONMENT = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}}
SILENCE_BEFORE_CRASHED = timedelta(seconds=3 * HEARTBEAT_SECONDS)
FINAL_FLOW_RUN_EVENTS = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}


def _tagged_shipyard() -> ResourceSpecification:
    """Runs of our deployments (they carry its tag; heartbeats name tags, not the work pool)."""
    return ResourceSpecification(
        {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{TAG}"}
    )


def automations() -> list[AutomationCore]:
    """Crashed when heartbeats stop; crashed runs back in the queue for another worker."""
    flow_runs = ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"})
    silent = AutomationCore(
        name="shipyard: crash silent flow runs",
        description="A run whose heartbeats stopped (its worker or machine died) is marked crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *FINAL_FLOW_RUN_EVENTS},
            match=flow_runs,
            match_related=_tagged_shipyard(),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=SILENCE_BEFORE_CRASHED,
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                force=False,
                state=StateType.CRASHED,
                message=f"no heartbeat for {SILENCE_BEFORE_CRASHED.seconds} s: its worker stopped",
            )
        ],
    )
    rerun = AutomationCore(
        name="shipyard: re-run crashed flow runs",
        description="A crashed run goes back to the work pool; another worker takes it.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match=flow_runs,
            match_related=_tagged_shipyard(),
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message="crashed; queued again for any worker",
                force=True,  # a crashed run is final: only a forced change re-opens it
            )
        ],
    )
    return [silent, rerun]


def locked_job_template() -> dict[str, Any]:
    """The process worker's template with nothing a run can set but its name and labels: the
    command is the worker's own, the environment RUN_ENVIRONMENT, the folder a fresh one. The
    server refuses a deployment flow run whose job variables name anything else."""
    template = ProcessWorker.get_default_base_job_template()
    configuration = template["job_configuration"]
    configuration.update(command=None, env=dict(RUN_ENVIRONMENT["env"]), working_dir=None)
    variables = template["variables"]
    for fixed in ("command", "env", "working_dir"):
        variables["properties"].pop(fixed)
    variables["additionalProperties"] = False
    return template


def _ensure_work_pool() -> None:
    """Create the work pool, or lock the template of one an older version made."""
    template = locked_job_template()
    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(WORK_POOL)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=WORK_POOL, type=ProcessWorker.type, base_job_template=template)
            )
            return
        if found.base_job_template != template:
            client.update_work_pool(WORK_POOL, WorkPoolUpdate(base_job_template=template))


def _ensure_automations() -> None:
    with get_client(sync_client=True) as client:
        for automation in automations():
            found = client.read_automations_by_name(automation.name)
            if found:
                client.update_automation(found[0].id, automation)
            else:
                client.create_automation(automation)


def register() -> None:
    """Create or update the work pool, both deployments and the automations."""
    _ensure_work_pool()
    package = package_model.to_deployment(
        name="package-model",
        tags=[TAG],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    nightly = nightly_reexport.to_deployment(
        name="nightly-reexport",
        tags=[TAG],
        cron=settings().nightly_cron,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    deploy(
        cast(RunnerDeployment, package),  # to_deployment is sync outside an event loop
        cast(RunnerDeployment, nightly),
        work_pool_name=WORK_POOL,
        build=False,
        push=False,
        print_next_steps_message=False,
    )
    _ensure_automations()
    print(f"deployments package-model and nightly-reexport in work pool {WORK_POOL!r}")


if __name__ == "__main__":
    register()
