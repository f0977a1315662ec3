"""Bounded load on the webhook of the `make up` service: signed uploads (202) and forgeries (401).

Usage: python bench/webhook_load.py [--requests 300] [--clients 1,4,16] [--out DIR]
Starts the whole service as `make up` does (PostgreSQL, SeaweedFS, Prefect, a worker, the
webhook) in a temp state folder on free 127.0.0.1 ports, pauses the work pool so the worker
does not compete for the 2 cores while the door is measured, sends a fixed number of small
signed uploads (each a new submission) and as many forgeries at each client count, then waits
until every accepted submission has its Prefect flow run (the dispatch backlog), stops
everything and writes DIR/webhook_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench._service import RunningService

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SECRET = "bench-webhook-secret-0123456789"


async def _send(client, url: str, model: bytes, seed: int, forged: bool) -> tuple[int, float]:
    import httpx

    from flows.signing import signed_body_headers

    request = httpx.Request(
        "POST",
        url,
        files={"file": ("m.pt2", model)},
        data={"targets": "triton", "spec": json.dumps({"seed": seed})},
    )
    body = request.read()
    path = request.url.raw_path.decode()
    secret = "wrong-secret-000000" if forged else SECRET
    signing = signed_body_headers(secret, "POST", path, body, request.headers["Content-Type"])
    start = time.perf_counter()
    response = await client.post(url, content=body, headers={**request.headers, **signing})
    return response.status_code, (time.perf_counter() - start) * 1000


async def _load(
    url: str, model: bytes, count: int, clients: int, forged: bool, tag: int
) -> list[tuple[int, float]]:
    """`clients` connections, each sending its share of `count` requests back to back."""
    import httpx

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as client:

        async def one_client(c: int) -> list[tuple[int, float]]:
            return [
                await _send(client, url, model, tag * 1_000_000 + i, forged) for i in range(c, count, clients)
            ]

        per_client = await asyncio.gather(*(one_client(c) for c in range(clients)))
    return [r for results in per_client for r in results]


def _summary(results: list[tuple[int, float]], seconds: float) -> dict:
    latencies = sorted(ms for _, ms in results)
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {
        "requests": len(results),
        "codes": codes,
        "per_s": round(len(results) / seconds, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
    }


def _flow_runs(service: RunningService) -> int:
    return int(service.prefect("/flow_runs/count", {}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="per client count, signed and forged each")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from bench._service import running_service
    from tests.models import save_convnet

    rows: dict[str, dict] = {}
    with running_service(1, SECRET) as service, tempfile.TemporaryDirectory() as tmp:
        service.command("prefect", "work-pool", "pause", "shipyard")
        model = save_convnet(Path(tmp) / "convnet.pt2").read_bytes()
        url = f"{service.webhook}/v1/models/loadtest"
        runs_before = _flow_runs(service)
        accepted = 0
        for clients in [int(c) for c in args.clients.split(",")]:
            for label, forged in (("signed", False), ("forged", True)):
                start = time.perf_counter()
                results = asyncio.run(_load(url, model, args.requests, clients, forged, clients))
                rows[f"{label} x{clients}"] = {
                    "clients": clients,
                    **_summary(results, time.perf_counter() - start),
                }
                accepted += sum(1 for code, _ in results if code == 202)
        start = time.perf_counter()
        while _flow_runs(service) - runs_before < accepted and time.perf_counter() - start < 600:
            time.sleep(0.5)
        drained_s = time.perf_counter() - start
        dispatched = _flow_runs(service) - runs_before
        database = service.database
    result = {
        "model_bytes": len(model),
        "database": database,
        "cores": os.cpu_count(),
        "accepted": accepted,
        "flow_runs_created": dispatched,
        "dispatch_backlog_drained_s": round(drained_s, 1),
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "webhook_load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'case':<12} {'requests':>8} {'per s':>7} {'p50 ms':>8} {'p95 ms':>8}  codes")
    for label, r in rows.items():
        print(
            f"{label:<12} {r['requests']:>8} {r['per_s']:>7} {r['p50_ms']:>8} {r['p95_ms']:>8}  {r['codes']}"
        )
    print(f"{accepted} accepted; {dispatched} flow runs created, backlog drained {drained_s:.1f} s later")


if __name__ == "__main__":
    main()
