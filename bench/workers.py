"""Two workers against one on the same batch: 8 small models submitted at once to the webhook.

Usage: python bench/workers.py [--models 8] [--targets triton,ort-web] [--out DIR]
For 1 and then 2 workers, a fresh service as `make up` (+ `make worker`) starts it; the batch
(8 different small models, so no step cache is shared between runs) goes in through the
webhook at once. Measured: the batch's wall time from the first submission to the last
completion (throughput in runs/minute), each run's time-to-start (flow run created to
running), and how the runs were split between the workers. On this 2-core machine two
workers cannot be faster; the point is correct sharing, and the table says what it costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SECRET = "bench-webhook-secret-0123456789"


def _seconds(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def _batch(workers: int, models: list[bytes], targets: str) -> dict:
    from bench._service import running_service

    with running_service(workers, SECRET) as service:
        started = time.time()
        run_ids = [service.submit(f"batch-{i}", m, targets) for i, m in enumerate(models)]
        runs = service.wait_final(run_ids, 1800)
        wall = max(datetime.fromisoformat(r["end_time"]).timestamp() for r in runs) - started
        to_start = sorted(_seconds(r["start_time"], r["created"]) for r in runs)
        logs = sorted(Path(service.env["SHIPYARD_SERVICE_DIR"]).glob("worker-*.log"))
        texts = {log.stem: log.read_text(errors="replace") for log in logs}
        split = {  # a submission another worker won first is logged as aborted
            name: sum(
                text.count(f"submitting flow run '{r['id']}'")
                > text.count(f"Aborted submission of flow run '{r['id']}'")
                for r in runs
            )
            for name, text in texts.items()
        }
        return {
            "workers": workers,
            "database": service.database,
            "runs": len(runs),
            "completed": sum(r["state"]["type"] == "COMPLETED" for r in runs),
            "wall_s": round(wall, 1),
            "runs_per_min": round(60 * len(runs) / wall, 2),
            "time_to_start_s": {
                "median": round(statistics.median(to_start), 1),
                "max": round(to_start[-1], 1),
            },
            "runs_per_worker": split,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--targets", default="triton,ort-web")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from tests.models import save_multi_io

    with tempfile.TemporaryDirectory() as tmp:
        models = [
            save_multi_io(Path(tmp) / f"m{i}.pt2", seed=100 + i).read_bytes() for i in range(args.models)
        ]
    rows = [_batch(workers, models, args.targets) for workers in (1, 2)]
    result = {
        "cores": os.cpu_count(),
        "targets": args.targets,
        "results": rows,
        "throughput_ratio_2_over_1": round(rows[1]["runs_per_min"] / rows[0]["runs_per_min"], 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workers.json").write_text(json.dumps(result, indent=2) + "\n")
    head = ("workers", "runs", "ok", "wall s", "runs/min", "start p50 s", "start max s")
    print("{:>7} {:>5} {:>4} {:>7} {:>9} {:>12} {:>12}  split".format(*head))
    for r in rows:
        t = r["time_to_start_s"]
        print(
            f"{r['workers']:>7} {r['runs']:>5} {r['completed']:>4} {r['wall_s']:>7} {r['runs_per_min']:>9} "
            f"{t['median']:>12} {t['max']:>12}  {r['runs_per_worker']}"
        )
    print(f"throughput ratio (2 workers / 1): {result['throughput_ratio_2_over_1']}")


if __name__ == "__main__":
    main()
