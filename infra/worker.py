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

Its flow runs fork from one warm process of the worker that has imported Prefect and the flows
already (flows/warm_runs.py), instead of importing them in a fresh interpreter each time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.settings import (
    PREFECT_WORKER_HEARTBEAT_SECONDS,
    PREFECT_WORKER_QUERY_SECONDS,
    temporary_settings,
)
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

from flows.concurrency import worker_name, worker_slots
from flows.deploy import WORK_POOL
from flows.warm_runs import SERVER_ENV, launcher_command
from shipyard.runtime_dir import runtime_dir
from shipyard.settings import env_name, settings


class LockedJobConfiguration(ProcessJobConfiguration):
    """The process job configuration of a flow run, built without the flow run's job variables;
    its command is the warm-run launcher when the worker has a warm server."""

    @classmethod
    async def resolve_for_flow_run(cls, flow_run: FlowRun, **kwargs: Any) -> LockedJobConfiguration:
        return await super().resolve_for_flow_run(flow_run.model_copy(update={"job_variables": {}}), **kwargs)

    def prepare_for_flow_run(self, *args: Any, **kwargs: Any) -> None:
        if os.environ.get(SERVER_ENV):
            self.command = launcher_command()
        super().prepare_for_flow_run(*args, **kwargs)


class ShipyardWorker(ProcessWorker):
    job_configuration = LockedJobConfiguration


@contextmanager
def warm_server() -> Iterator[None]:
    """The worker's warm flow-run server, for as long as the worker runs (it exits when its stdin
    closes, so also when the worker is killed). Without a private runtime folder, runs start cold."""
    folder = runtime_dir()
    if folder is None or not settings().warm_runs:
        yield
        return
    path = Path(folder) / f"flows-{os.getpid()}.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.warm_runs", "serve", str(path)], stdin=subprocess.PIPE
    )
    os.environ[SERVER_ENV] = str(path)
    try:
        yield
    finally:
        os.environ.pop(SERVER_ENV, None)
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


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
        env_name("worker_name"): name,
        env_name("worker_slots"): str(slots),
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
        default=worker_name(),
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
    with temporary_settings(updates={PREFECT_WORKER_QUERY_SECONDS: query_seconds}), warm_server():
        asyncio.run(serve(args.name, args.slots))


if __name__ == "__main__":
    main()
