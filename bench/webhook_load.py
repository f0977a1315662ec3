"""Bounded load on the webhook: signed uploads accepted (202) and forged ones refused (401).

Usage: python bench/webhook_load.py [--requests 200] [--concurrency 8] [--out DIR]
Starts its own Prefect server and webhook on free 127.0.0.1 ports (temp dirs), sends a fixed
number of requests, stops everything, prints latency percentiles and writes DIR/webhook_load.json.
Accepted uploads create scheduled flow runs that nothing executes (no worker is started).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SECRET = "bench-webhook-secret-0123456789"


async def _send(client, url: str, model: bytes, seed: int, forged: bool) -> tuple[int, float]:
    import httpx

    from flows._signing import sign

    request = httpx.Request(
        "POST",
        url,
        files={"file": ("m.pt2", model)},
        data={"targets": "triton", "spec": json.dumps({"seed": seed})},
    )
    body = request.read()
    ts = str(int(time.time()))
    path = request.url.raw_path.decode()
    signature = sign("wrong-secret-000000" if forged else SECRET, ts, "POST", path, body)
    start = time.perf_counter()
    response = await client.post(
        url,
        content=body,
        headers={**request.headers, "X-Shipyard-Timestamp": ts, "X-Shipyard-Signature": signature},
    )
    return response.status_code, (time.perf_counter() - start) * 1000


async def _load(
    url: str, model: bytes, count: int, concurrency: int, forged: bool
) -> list[tuple[int, float]]:
    import httpx

    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(i: int) -> tuple[int, float]:
            async with limit:
                return await _send(client, url, model, i, forged)

        return await asyncio.gather(*(one(i) for i in range(count)))


def _summary(results: list[tuple[int, float]], seconds: float) -> dict:
    latencies = sorted(ms for _, ms in results)
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {
        "requests": len(results),
        "codes": codes,
        "rps": round(len(results) / seconds, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from infra.seaweed import free_port
    from infra.service import wait_http
    from tests.models import save_convnet

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prefect_port, port = free_port(), free_port()
        env = {
            **os.environ,
            "PREFECT_HOME": str(work / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            "SHIPYARD_WEBHOOK_SECRET": SECRET,
            "SHIPYARD_WEBHOOK_PORT": str(port),
            "SHIPYARD_REGISTRY": (work / "registry").as_uri(),
        }
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(prefect_port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        ]
        try:
            wait_http(f"http://127.0.0.1:{prefect_port}/api/health", 180)
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "from flows.serve import package_model as p; "
                    "p.to_deployment(name='package-model').apply()",
                ],
                env=env,
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "flows.webhook"],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            wait_http(f"http://127.0.0.1:{port}/healthz", 60)
            model = save_convnet(work / "convnet.pt2").read_bytes()
            url = f"http://127.0.0.1:{port}/v1/models/loadtest"
            rows = {}
            for label, forged in (("signed uploads (202)", False), ("forged signatures (401)", True)):
                start = time.perf_counter()
                results = asyncio.run(_load(url, model, args.requests, args.concurrency, forged))
                rows[label] = _summary(results, time.perf_counter() - start)
        finally:
            for proc in procs:
                os.killpg(proc.pid, 15)
                proc.wait(30)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"model_bytes": len(model), "concurrency": args.concurrency, "results": rows}
    (args.out / "webhook_load.json").write_text(json.dumps(result, indent=2))
    print(f"{'case':<26} {'requests':>8} {'rps':>7} {'p50 ms':>8} {'p95 ms':>8}  codes")
    for label, r in rows.items():
        print(f"{label:<26} {r['requests']:>8} {r['rps']:>7} {r['p50_ms']:>8} {r['p95_ms']:>8}  {r['codes']}")


if __name__ == "__main__":
    main()
