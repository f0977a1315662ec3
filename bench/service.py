"""The service under a backlog: small models through the webhook, against the CLI on the same machine.

Usage: python bench/service.py [--models 20] [--backlog 200] [--targets triton,ort-web] [--out DIR]
       python bench/service.py --smoke      (2 models, a backlog of 4: checks the bench itself)

The service runs as `make up` + `make worker` start it (PostgreSQL, SeaweedFS, Prefect, the
webhook, 2 workers) in a temp state folder on free ports. Measured in one run, on the same models:
- `cli`: `shipyard package` of one model after another (warm servers up), seconds each;
- `solo`: the same work as a flow run, one submission at a time: seconds from the worker taking
  the run to its end, split into where they go (process start and imports, fetch and checks
  before the first step, the steps, publishing and reporting after them);
- `load`: `--models` distinct models submitted at once: runs/min from the first submission to
  the last completion, per-run seconds, peak memory in use on the machine, most warm servers;
- `backlog`: `--backlog` more distinct models submitted at once: drained with nothing lost, and
  memory in use no higher than under the smaller load (each worker takes at most its slots of
  runs, warm step servers are capped, one warm flow-run server per worker).
Writes DIR/service.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

if TYPE_CHECKING:
    from bench._service import RunningService

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SECRET = "bench-webhook-secret-0123456789"


@dataclass
class Sampler:
    """Memory in use on the machine and live warm servers, sampled every half second."""

    runtime_dir: Path
    peak_used_mb: float = 0.0
    peak_servers: int = 0  # warm step servers (torch, tf)
    peak_flow_servers: int = 0  # the workers' warm flow-run servers
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            used = psutil.virtual_memory()
            self.peak_used_mb = max(self.peak_used_mb, (used.total - used.available) / 2**20)
            sockets = [p.name for p in self.runtime_dir.glob("*.sock")] if self.runtime_dir.is_dir() else []
            flows = sum(name.startswith("flows-") for name in sockets)
            self.peak_servers = max(self.peak_servers, len(sockets) - flows)
            self.peak_flow_servers = max(self.peak_flow_servers, flows)

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def _t(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


@dataclass
class RunSplit:
    """Where one flow run's seconds went, from its states and its task runs in Prefect."""

    total_s: float  # from the worker taking it (PENDING) to its end
    start_s: float  # PENDING -> RUNNING: the flow process starting and importing
    before_steps_s: float  # RUNNING -> first step: fetching the source, checks, the engine
    steps_s: float  # first step start -> last step end
    after_steps_s: float  # last step end -> the run's end: publish, report, artifacts (CLI: exit)


def _split(service: RunningService, run: dict[str, Any]) -> RunSplit:
    states = httpx.get(
        f"{service.api}/flow_run_states/", params={"flow_run_id": run["id"]}, auth=service.auth, timeout=30
    ).json()
    when = {s["type"]: _t(s["timestamp"]) for s in states}
    tasks = service.prefect("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})
    steps = [  # task runs of flows.package.run_step (its task key starts with the function's name)
        t for t in tasks if t["task_key"].startswith("run_step") and t["start_time"] and t["end_time"]
    ]
    end = _t(run["end_time"])
    first = min(_t(t["start_time"]) for t in steps) if steps else end
    last = max(_t(t["end_time"]) for t in steps) if steps else end
    pending, running = when.get("PENDING", when["RUNNING"]), when["RUNNING"]
    return RunSplit(
        total_s=end - pending,
        start_s=running - pending,
        before_steps_s=first - running,
        steps_s=last - first,
        after_steps_s=end - last,
    )


def _models(count: int, folder: Path) -> list[bytes]:
    from tests.models import save_multi_io

    return [save_multi_io(folder / f"m{i}.pt2", seed=1000 + i).read_bytes() for i in range(count)]


def _cli_runs(service: RunningService, models: list[bytes], targets: str, work: Path) -> list[RunSplit]:
    """`shipyard package` of each model in turn, against the service's registry and warm servers."""
    from bench._shipyard import package_process

    splits = []
    for i, model in enumerate(models):
        path = work / f"cli{i}.pt2"
        path.write_bytes(model)
        report, wall, started = package_process(
            path,
            work / "cli-home",
            "--targets",
            targets,
            "--registry",
            service.registry,
            extra_env=service.registry_env,
        )
        if any(t["status"] != "passed" for t in report["targets"].values()):
            raise RuntimeError(f"the CLI did not pass: {report['targets']}")
        steps = [s for s in report["steps"] if s.get("started_at")]
        first = min(s["started_at"] for s in steps)
        last = max(s["started_at"] + s["seconds"] for s in steps)
        splits.append(RunSplit(wall, 0.0, first - started, last - first, started + wall - last))
    return splits


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else 0.0


def _solo(service: RunningService, models: list[bytes], targets: str) -> list[RunSplit]:
    splits = []
    for i, model in enumerate(models):
        run_id = service.submit(f"solo-{i}", model, targets)
        (run,) = service.wait_final([run_id], 600)
        if run["state"]["type"] != "COMPLETED":
            raise RuntimeError(f"solo run {i} ended {run['state']['type']}: {run['state'].get('message')}")
        splits.append(_split(service, run))
    return splits


def _load(
    service: RunningService, models: list[bytes], targets: str, label: str, timeout_s: float
) -> dict[str, Any]:
    """Submit every model at once; drained when every run is final."""
    runtime = Path(service.env["SHIPYARD_RUNTIME_DIR"])
    with Sampler(runtime).running() as sampler:
        started = time.time()
        run_ids = [service.submit(f"{label}-{i}", m, targets) for i, m in enumerate(models)]
        submitted = time.time() - started
        runs = service.wait_final(run_ids, timeout_s)
    wall = max(_t(r["end_time"]) for r in runs if r["end_time"]) - started
    per_run = [r["total_run_time"] for r in runs]
    return {
        "submissions": len(run_ids),
        "flow_runs": len(runs),
        "completed": sum(r["state"]["type"] == "COMPLETED" for r in runs),
        "submit_s": round(submitted, 1),
        "drain_s": round(wall, 1),
        "runs_per_min": round(60 * len(runs) / wall, 2),
        "run_s_p50": _median(per_run),
        "run_s_max": round(max(per_run), 2),
        "peak_used_mb": round(sampler.peak_used_mb),
        "peak_warm_servers": sampler.peak_servers,
        "peak_flow_servers": sampler.peak_flow_servers,
    }


def _split_row(name: str, splits: list[RunSplit]) -> dict[str, Any]:
    return {"what": name, **{k: _median([asdict(s)[k] for s in splits]) for k in asdict(splits[0])}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=20, help="distinct models in the load test")
    parser.add_argument("--backlog", type=int, default=200, help="submissions in the backlog (0: none)")
    parser.add_argument("--solo", type=int, default=4, help="models packaged alone, by CLI and flow run")
    parser.add_argument("--targets", default="triton,ort-web")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="2 models, a backlog of 4: the bench runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.backlog, args.solo = 2, 4, 1

    from bench._service import running_service

    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        work = Path(tmp)
        models = iter(_models(1 + 2 * args.solo + args.models + args.backlog, work))  # all distinct
        warmup = next(models)
        cli_models = [next(models) for _ in range(args.solo)]
        solo_models = [next(models) for _ in range(args.solo)]
        load_models = [next(models) for _ in range(args.models)]
        with running_service(args.workers, SECRET) as service:
            _cli_runs(service, [warmup], args.targets, work)  # starts the warm servers
            _solo(service, [warmup], args.targets)  # the workers' first run imports what later ones reuse
            cli = _cli_runs(service, cli_models, args.targets, work)
            solo = _solo(service, solo_models, args.targets)
            load = _load(service, load_models, args.targets, "load", 3600)
            backlog = None
            if args.backlog:
                backlog = _load(service, list(models), args.targets, "backlog", 4 * 3600)
            total_mb = psutil.virtual_memory().total / 2**20
    result = {
        "cores": os.cpu_count(),
        "memory_mb": round(total_mb),
        "workers": args.workers,
        "targets": args.targets,
        "database": service.database,
        "cli": [asdict(s) for s in cli],
        "cli_split_p50": _split_row("shipyard package", cli),
        "solo": [asdict(s) for s in solo],
        "solo_split_p50": _split_row("flow run", solo),
        "flow_run_over_cli": round(_median([s.total_s for s in solo]) / _median([s.total_s for s in cli]), 2),
        "load": load,
        "backlog": backlog,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "service-smoke.json" if args.smoke else "service.json"
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    _print(result)


def _print(result: dict[str, Any]) -> None:
    head = ("one model alone, p50", "total s", "start s", "before steps s", "steps s", "after steps s")
    print("{:<22} {:>8} {:>8} {:>15} {:>8} {:>14}".format(*head))
    for row in (result["cli_split_p50"], result["solo_split_p50"]):
        print(
            f"{row['what']:<22} {row['total_s']:>8} {row['start_s']:>8} {row['before_steps_s']:>15} "
            f"{row['steps_s']:>8} {row['after_steps_s']:>14}"
        )
    print(f"flow run / CLI: {result['flow_run_over_cli']}x")
    head = ("test", "runs", "ok", "drain s", "runs/min", "run p50 s", "run max s", "peak MB", "servers")
    print("{:<8} {:>5} {:>5} {:>8} {:>9} {:>10} {:>10} {:>8} {:>8}".format(*head))
    for name in ("load", "backlog"):
        r = result[name]
        if r:
            cells = (name, r["flow_runs"], r["completed"], r["drain_s"], r["runs_per_min"])
            cells += (r["run_s_p50"], r["run_s_max"], r["peak_used_mb"], r["peak_warm_servers"])
            print("{:<8} {:>5} {:>5} {:>8} {:>9} {:>10} {:>10} {:>8} {:>8}".format(*cells))


if __name__ == "__main__":
    main()
