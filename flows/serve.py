"""Serve the deployments: `package-model` (started from the UI or the webhook) and `nightly-reexport`.

Run: python -m flows.serve  (needs PREFECT_API_URL). Cron: $SHIPYARD_NIGHTLY_CRON (default 0 3 * * *).
At most $SHIPYARD_MAX_CONCURRENT_RUNS runs at once (default 1: each run already uses both cores).
"""

from __future__ import annotations

import os

from prefect import serve

from flows.nightly import nightly_reexport
from flows.package import package_model


def main() -> None:
    package = package_model.to_deployment(name="package-model", tags=["shipyard"])
    nightly = nightly_reexport.to_deployment(
        name="nightly-reexport", tags=["shipyard"], cron=os.environ.get("SHIPYARD_NIGHTLY_CRON", "0 3 * * *")
    )
    limit = int(os.environ.get("SHIPYARD_MAX_CONCURRENT_RUNS", "1"))
    serve(package, nightly, limit=limit)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
