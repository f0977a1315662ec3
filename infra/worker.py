"""Start one Shipyard worker: `prefect worker start --pool shipyard`, named and bounded.

Usage: python -m infra.worker [--name NAME] [--slots N]   (needs PREFECT_API_URL)

A plain `prefect worker start --pool shipyard` on any machine with the project installed works
too; this adds what Shipyard wants from a worker: a name (its step limit is named after it), and
at most N flow runs at once and N export steps at once across them (default: its cores).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from flows._concurrency import worker_slots
from flows.deploy import WORK_POOL


def worker_command(name: str, slots: int) -> list[str]:
    return [
        sys.executable, "-m", "prefect", "worker", "start",
        "--pool", WORK_POOL, "--type", "process", "--name", name, "--limit", str(slots),
    ]  # fmt: skip


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
    command = worker_command(args.name, args.slots)
    os.execve(command[0], command, worker_env(args.name, args.slots))


if __name__ == "__main__":
    main()
