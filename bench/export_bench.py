"""The whole `shipyard package` run against the bare converter calls, per model. Not a test.

For each bench model, measured side by side in one run on this machine:
- first:      `shipyard package MODEL --json` as a process, fresh home (no step cache), no Prefect
              server, no warm server running: export + validation + publish of all six targets,
              the run starting the shared warm servers (which import the toolchains meanwhile);
- cold:       the same in another fresh home (no step cache), the warm servers already running:
              what every run but the first on a machine or worker costs;
- rerun:      the same command again in the same home (every step reused from the cache), three
              times: the median;
- no-fork:    cold again with SHIPYARD_WARM_WORKERS=0 (every step a fresh interpreter);
- bare:       each target's converter calls in one process that has imported every toolchain
              (and run inductor's one-time ISA probe) first, one after another: `per-target`
              chains as a user without Shipyard would write them (each ONNX-based target exports
              its own ONNX), and `shared` (each distinct conversion once);
- fixed cost: from `shipyard package` starting to its first step starting.

Usage: python bench/export_bench.py [--models convnet,mlp,encoder,multi_io] [--out DIR]
       python bench/export_bench.py --smoke   (mlp only, one rerun, no no-fork run: checks the bench)
Writes a table on stdout and DIR/export_bench.json (default bench/results/; --smoke:
export_bench-smoke.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _shipyard import package_process  # a sibling of this script

ROOT = Path(__file__).resolve().parents[1]
MODELS = "convnet,mlp,encoder,multi_io"


def _machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    flags = set(cpuinfo.split())
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "avx512": "avx512f" in flags,
        "python": platform.python_version(),
    }


def _package(source: Path, home: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One `shipyard package` process; its report, wall time and time to the first step."""
    report, wall, started = package_process(source, home, extra_env=extra_env)
    first = min(s["started_at"] for s in report["steps"] if s["started_at"] is not None)
    return {"report": report, "wall_s": round(wall, 2), "to_first_step_s": round(first - started, 2)}


# the bare converter calls, in one warm process -------------------------------------------
def _bare(model: str, source: Path) -> dict[str, Any]:
    """Run in a child process: import everything, then time each converter call once."""
    import exporters.torch2aoti as aoti
    from shipyard.precision import CalibrationSet, CalibrationSource, Precision
    from shipyard.prepare import read_signature
    from shipyard.spec import Spec
    from shipyard.variants import generated_calibration, save_arrays
    from targets import ExportJob, ExportResult, Family, Format, Target, conversion_path, default_targets
    from targets.engine.child import load_function
    from targets.engine.forkserver import preload

    for family in Family:
        for name in preload(family.value):
            module, _, function = name.partition(":")
            loaded = __import__(module, fromlist=["_"])
            if function:
                getattr(loaded, function)()
    signature, _ = read_signature(source, Spec())
    aoti.warm_up()
    work = Path(tempfile.mkdtemp(prefix="bare-"))
    batches = []  # what a quantizer calibrates on, as the prepare step generates it
    for i, arrays in enumerate(generated_calibration(signature, Spec())):
        save_arrays(work / f"calibration-{i}.npz", arrays)
        batches.append(str(work / f"calibration-{i}.npz"))
    calibration = CalibrationSet(source=CalibrationSource.GENERATED, batches=batches)

    def call(
        function: str, inputs: dict[str, Path], target: Target | None = None
    ) -> tuple[float, Path | None]:
        out = Path(tempfile.mkdtemp(dir=work))
        calibrated = target is not None and target.calibrated
        job = ExportJob(
            step="bare",
            model_name=model,
            signature=signature,
            precision=target.precision if target else Precision.FP32,
            inputs={k: str(v) for k, v in inputs.items()},
            out_dir=str(out),
            work_dir=str(Path(tempfile.mkdtemp(dir=work))),
            calibration=calibration if calibrated else None,
            gates=target.gates if target and calibrated else None,
        )
        start = time.perf_counter()
        try:
            result: ExportResult = load_function(function)(job)
        except Exception:
            return time.perf_counter() - start, None
        seconds = time.perf_counter() - start
        return seconds, (out / result.product) if result.product else out

    timings: dict[str, float | None] = {}
    shared: dict[Format, tuple[float, Path | None]] = {Format.TORCH_EXPORT: (0.0, source)}

    def produce(fmt: Format) -> tuple[float, Path | None]:
        if fmt not in shared:
            conversion = (conversion_path(Format.TORCH_EXPORT, fmt) or [])[-1]
            before, path = produce(conversion.consumes)
            seconds, made = (
                call(conversion.recipe.function, {conversion.consumes.value: path}) if path else (0, None)
            )
            shared[fmt] = (before + seconds, made)
            timings[conversion.name] = round(seconds, 3) if made else None
        return shared[fmt]

    per_target: dict[str, float | None] = {}
    for target in default_targets():
        target_name, build = target.name, target.build()
        if build is None:
            continue
        chain_s, product = produce(build.consumes)
        seconds, made = (
            call(build.export.function, {build.consumes.value: product}, target) if product else (0, None)
        )
        timings[f"export:{target_name}"] = round(seconds, 3) if made else None
        per_target[target_name] = round(chain_s + seconds, 3) if made else None
    ok = [t for t in per_target.values() if t is not None]
    return {
        "steps": timings,
        "per_target_s": per_target,
        "sum_per_target_s": round(sum(ok), 2),
        "sum_shared_s": round(sum(t for t in timings.values() if t is not None), 2),
    }


def _bare_in_child(model: str, source: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--bare", model, str(source)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **_toolchain_env()},
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _toolchain_env() -> dict[str, str]:
    from targets.engine.workers import TOOLCHAIN_ENVIRONMENT

    return dict(TOOLCHAIN_ENVIRONMENT)


# the comparison ---------------------------------------------------------------------------
def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num and den else None


def _steps(report: dict[str, Any]) -> dict[str, float]:
    return {s["step"]: s["seconds"] for s in report["steps"]}


def _shared_saving(report: dict[str, Any]) -> float:
    """Seconds the shared conversions would have cost again for every further target they serve."""
    return round(
        sum(
            s["seconds"] * (len(s["targets"]) - 1)
            for s in report["steps"]
            if s["step"].startswith("convert:")
        ),
        2,
    )


def bench_model(model: str, folder: Path, smoke: bool = False) -> dict[str, Any]:
    """`smoke`: one rerun and no no-fork run (the bench itself is checked, not the figures)."""
    from targets.engine.servers import stop_servers
    from tests import models as test_models

    source = getattr(test_models, f"save_{model}")(folder / f"{model}.pt2")
    stop_servers()  # the first run starts them
    first = _package(source, folder / "home-first")
    cold = _package(source, folder / "home-cold")
    reruns = [_package(source, folder / "home-cold") for _ in range(1 if smoke else 3)]
    rerun = sorted(reruns, key=lambda r: r["wall_s"])[len(reruns) // 2]
    nofork = cold if smoke else _package(source, folder / "home-nofork", {"SHIPYARD_WARM_WORKERS": "0"})
    bare = _bare_in_child(model, source)
    cold_steps, nofork_steps = _steps(cold["report"]), _steps(nofork["report"])
    return {
        "model": model,
        "targets_passed": sorted(n for n, t in cold["report"]["targets"].items() if t["status"] == "passed"),
        "first_wall_s": first["wall_s"],
        "first_vs_bare_per_target": _ratio(first["wall_s"], bare["sum_per_target_s"]),
        "cold_wall_s": cold["wall_s"],
        "rerun_wall_s": rerun["wall_s"],
        "rerun_vs_cold": _ratio(rerun["wall_s"], cold["wall_s"]),
        "rerun_vs_first": _ratio(rerun["wall_s"], first["wall_s"]),
        "rerun_walls_s": [r["wall_s"] for r in reruns],
        "rerun_reused_all": all(s["reused"] for r in reruns for s in r["report"]["steps"]),
        "nofork_wall_s": None if smoke else nofork["wall_s"],
        "to_first_step_s": first["to_first_step_s"],
        "bare_per_target_s": bare["sum_per_target_s"],
        "bare_shared_s": bare["sum_shared_s"],
        "cold_vs_bare_per_target": _ratio(cold["wall_s"], bare["sum_per_target_s"]),
        "cold_vs_bare_shared": _ratio(cold["wall_s"], bare["sum_shared_s"]),
        "shared_steps_saved_s": _shared_saving(cold["report"]),
        "fork_server_saved_s": None
        if smoke
        else round(sum(nofork_steps.values()) - sum(cold_steps.values()), 2),
        "steps": [
            {
                "step": step,
                "warm_s": seconds,
                "cold_process_s": None if smoke else nofork_steps.get(step),
                "bare_s": bare["steps"].get(step),
            }
            for step, seconds in cold_steps.items()
        ],
    }


def _print(results: list[dict[str, Any]]) -> None:
    cols = [
        "model",
        "first_wall_s",
        "first_vs_bare_per_target",
        "cold_wall_s",
        "bare_per_target_s",
        "cold_vs_bare_per_target",
        "bare_shared_s",
        "cold_vs_bare_shared",
        "rerun_wall_s",
        "rerun_vs_cold",
        "nofork_wall_s",
        "to_first_step_s",
        "shared_steps_saved_s",
        "fork_server_saved_s",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    for r in results:
        print(f"\n{r['model']}: step | warm process | cold process | bare call")
        for s in r["steps"]:
            print(
                f"  {s['step']:<28} {s['warm_s']:>8} {s['cold_process_s'] or '-':>8} {s['bare_s'] or '-':>8}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="mlp, one rerun, no no-fork run: the bench runs")
    parser.add_argument("--bare", nargs=2, metavar=("MODEL", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.models = "mlp"
    if args.bare:
        print(json.dumps(_bare(args.bare[0], Path(args.bare[1]))))
        return
    sys.path.insert(0, str(ROOT))
    from targets.engine.servers import stop_servers

    results = []
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        os.environ["SHIPYARD_RUNTIME_DIR"] = str(Path(tmp) / "rt")  # the bench's own warm servers
        try:
            for model in args.models.split(","):
                folder = Path(tmp) / model
                folder.mkdir()
                results.append(bench_model(model, folder, args.smoke))
        finally:
            stop_servers()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("export_bench-smoke.json" if args.smoke else "export_bench.json")).write_text(
        json.dumps({"machine": _machine(), "results": results}, indent=2)
    )
    print(json.dumps(_machine()))
    _print(results)


if __name__ == "__main__":
    main()
