"""Per target and model: export time, validation time, artifact size, runtime latency, and the
flow's overhead against the bare converter calls for the same model. Not a test.

Usage: python bench/export_bench.py [--models convnet,mlp,encoder,multi_io] [--targets a,b] [--out DIR]
Writes a table on stdout and DIR/export_bench.json (default bench/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def bare_export_seconds(source: Path, kind: Any, signature: Any, target_name: str) -> float | None:
    """The target's exporter called directly in this process: just the converter calls.

    None when the converter rejects the model (the flow reports why).
    """
    from targets import get_target
    from targets._jobs import ExportJob

    target = get_target(target_name)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "artifact"
        out.mkdir()
        job = ExportJob(
            target=target_name,
            model_name="bench",
            source=str(source),
            source_kind=kind,
            signature=signature,
            options=target.options().model_dump(),
            out_dir=str(out),
        )
        start = time.perf_counter()
        try:
            target.load_exporter()(job)
        except Exception:
            return None
        return time.perf_counter() - start


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 2) if num and den else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="convnet,mlp,encoder,multi_io")
    parser.add_argument("--targets", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from flows.package import package_model
    from shipyard.prepare import inspect_source
    from shipyard.spec import Spec
    from targets import resolve_targets
    from tests import models as test_models

    targets = [t.name for t in resolve_targets(args.targets)]
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SHIPYARD_HOME"] = tmp
        for model in args.models.split(","):
            source = getattr(test_models, f"save_{model}")(Path(tmp) / f"{model}.pt2")
            start = time.perf_counter()
            report = package_model(source=str(source), targets=targets, registry=Path(tmp, "reg").as_uri())
            flow_s = time.perf_counter() - start
            kind, signature, _ = inspect_source(source, Spec())
            bare = {t: bare_export_seconds(source, kind, signature, t) for t in targets}
            for name, result in report["targets"].items():
                m = result["metrics"]
                rows.append(
                    {
                        "model": model,
                        "target": name,
                        "status": result["status"],
                        "export_s": m.get("export_s"),
                        "bare_export_s": _round(bare[name], 3),
                        "export_overhead": _ratio(m.get("export_s"), bare[name]),
                        "validate_s": m.get("validate_s"),
                        "artifact_bytes": m.get("artifact_bytes"),
                        "latency_ms_p50": m.get("latency_ms_p50"),
                        "load_ms": m.get("load_ms"),
                    }
                )
            bare_total = sum(s for s in bare.values() if s is not None)
            summary.append(
                {
                    "model": model,
                    "flow_wall_s": round(flow_s, 2),
                    "sum_bare_export_s": round(bare_total, 2),
                    "flow_vs_bare": _ratio(flow_s, bare_total),
                }
            )

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "parallel_targets": os.environ.get("SHIPYARD_MAX_PARALLEL_TARGETS", "2"),
        "rows": rows,
        "summary": summary,
    }
    (args.out / "export_bench.json").write_text(json.dumps(result, indent=2))
    cols = list(rows[0])
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join("-" if row[c] is None else str(row[c]) for c in cols))
    print()
    for s in summary:
        print(
            f"{s['model']}: flow {s['flow_wall_s']}s (export + validate + publish, all targets) vs "
            f"{s['sum_bare_export_s']}s of bare converter calls -> {s['flow_vs_bare']}x"
        )


if __name__ == "__main__":
    main()
