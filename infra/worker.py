"""Start one Shipyard worker of the `shipyard` work pool, named, bounded and locked.

Usage: python -m infra.worker [--name NAME] [--slots N]   (needs PREFECT_API_URL, and
PREFECT_API_AUTH_STRING when the server asks for one)

It is Prefect's process worker (what `prefect worker start --pool shipyard --type process` runs)
with what Shipyard wants from a worker: a name (its step limit is named after it), at most N
flow runs at once and N export steps at once across them (default: its cores), and job
variables taken only from the work pool and the deployment, never from the flow run: a flow run
created through the API cannot change the command the worker runs or add to its environment
(which holds the registry's keys). The work pool's template says the same to the server
(flows/deploy.py), so such a flow run is refused when it is created from the deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.settings import (
    PREFECT_WORKER_HEARTBEAT_SECONDS,
    PREFECT_WORKER_QUERY_SECONDS,
    temporary_settings,
)
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

from flows._concurrency import worker_slots
from flows.deploy import WORK_POOL


class LockedJobConfiguration(ProcessJobConfiguration):
    """The process job configuration of a flow run, built without the flow run's job variables."""

    @classmethod
    async def resolve_for_flow_run(cls, flow_run: FlowRun, **kwargs: Any) -> LockedJobConfiguration:
        return await super().resolve_for_flow_run(flow_run.model_copy(update={"job_variables": {}}), **kwargs)


class ShipyardWorker(ProcessWorker):
    job_configuration = LockedJobConfiguration


async def serve(name: str, slots: int) -> None:
    """Poll the work pool and run its flow runs until stopped."""
    async with ShipyardWorker(
        name=name,
        work_pool_name=WORK_POOL,
        limit=slots,
        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()),
    ) as worker:
        await worker.start()


def worker_env(name: str, slots: int) -> dict[str, str]:
    return {
        **os.environ,
        "SHIPYARD_WORKER_NAME": name,
        "SHIPYARD_WORKER_SLOTS": str(slots),
        "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "5"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("SHIPYARD_WORKER_NAME") or socket.gethostname(),
        help="its name in Prefect, unique per worker (default: $SHIPYARD_WORKER_NAME, else the host name)",
    )
    parser.add_argument(
        "--slots", type=int, default=worker_slots(), help="runs and steps at once (default: cores)"
    )
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit("PREFECT_API_URL must point at the Prefect server, e.g. http://host:4200/api")
    os.environ.update(worker_env(args.name, args.slots))  # for the flow runs it starts
    query_seconds = float(os.environ["PREFECT_WORKER_QUERY_SECONDS"])
    with temporary_settings(updates={PREFECT_WORKER_QUERY_SECONDS: query_seconds}):  # read at import
        asyncio.run(serve(args.name, args.slots))


if __name__ == "__main__":
    main()
