"""Precision ladders side by side: size, p50 latency and accuracy of every rung. Not a test.

Each bench model is packaged once by `shipyard package` for every target of the catalog (the
fp32 targets, their int8 / fp16 / uint8 rungs, and litert-int4 with its accuracy-aware search),
so every rung of a family is measured in the same run, on the same machine, against the same
reference outputs. The int4 search's own cost is its `search_s` metric.

Usage: python bench/quantization.py [--models convnet,mlp,mobilenet_v2] [--readme]
Writes bench/results/quantization.json and prints the table; --readme also puts it in README.md
between the quantization markers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from _shipyard import PackageFailed, package_process, write_readme_section  # a sibling of this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FAMILIES = {
    "executorch": ["fp32", "int8"],
    "ort-web": ["fp32", "int8", "fp16"],
    "triton": ["fp32", "int8", "fp16"],
    "tfjs": ["fp32", "fp16", "uint8"],
    "litert-int4": ["int4"],
}


def _save(name: str, path: Path) -> Path:
    from tests import models, zoo

    if name == "convnet":
        return models.save_convnet(path)
    if name == "mlp":
        return models.save_mlp(path)
    return zoo.save(name, path)


def _target(family: str, precision: str) -> str:
    return family if precision in ("fp32", "int4") else f"{family}-{precision}"


def _row(report: dict[str, Any]) -> dict[str, Any]:
    m = report.get("metrics", {})
    return {
        "status": report["status"],
        "bytes": m.get("artifact_bytes"),
        "p50_ms": m.get("latency_ms_p50"),
        "cosine": m.get("cosine"),
        "rel_l2_err": m.get("rel_l2_err"),
        "export_s": m.get("export_s"),
        "size_vs_fp32": m.get("size_vs_fp32"),
        "search_s": m.get("search_s"),
        "kept_layers": m.get("kept_layers"),
        "error": (report.get("error") or "")[:200] or None,
    }


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row["status"] != "passed":
        return f"{row['status']}: {(row['error'] or '')[:50]}"
    cosine = f"{row['cosine']:.5f}" if row["cosine"] is not None else "?"
    return f"{row['bytes'] / 1024:,.0f} KB, {row['p50_ms']:.2f} ms, cos {cosine}"


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    rungs = ["fp32", "fp16", "uint8", "int8", "int4"]
    lines = ["| model | target | " + " | ".join(rungs) + " |", "|---|---|" + "---|" * len(rungs)]
    for model, rows in results.items():
        for family, precisions in FAMILIES.items():
            cells = [_cell(rows.get(_target(family, p))) if p in precisions else "" for p in rungs]
            lines.append(f"| {model} | {family} | " + " | ".join(cells) + " |")
    searches = [
        f"{model} {r['search_s']:.1f} s ({r['kept_layers']} layer(s) kept higher)"
        for model, rows in results.items()
        if (r := rows.get("litert-int4")) and r.get("search_s") is not None
    ]
    lines.append(
        "\nSize is the artifact's bytes, latency the runtime's p50 at the typical batch, cosine the "
        "worst over validation inputs against the source model. int4 search cost: "
        + ("; ".join(searches) or "no search ran")
        + "."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="convnet,mlp,mobilenet_v2")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    targets = sorted({_target(f, p) for f, ps in FAMILIES.items() for p in ps})
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="shipyard-quantization-") as tmp:
        for name in args.models.split(","):
            source = _save(name, Path(tmp) / f"{name}.pt2")
            try:
                report, _, _ = package_process(
                    source, Path(tmp) / "home", "-q", "--targets", ",".join(targets)
                )
            except PackageFailed as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                continue
            results[name] = {t: _row(r) for t, r in report["targets"].items()}
            print(f"{name}: { ({t: r['status'] for t, r in results[name].items()}) }", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quantization.json").write_text(json.dumps(results, indent=2) + "\n")
    rendered = table(results)
    print(rendered)
    if args.readme:
        write_readme_section("quantization", rendered)


if __name__ == "__main__":
    main()
