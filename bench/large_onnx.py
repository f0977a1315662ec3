"""An ONNX model past protobuf's 2 GB, uploaded as a .zip of its folder (model.onnx + its external
data), packaged for the ONNX targets as a user runs `shipyard package`.

Usage: python bench/large_onnx.py [--mb 1500,2300] [--targets ort-web,triton] [--out DIR]
       python bench/large_onnx.py --smoke   (a 24 MB table: checks the bench itself)
The model is an embedding table (`--mb` of float32 weights, one external data file) read by a
Gather and averaged: little arithmetic, so the figures are the cost of carrying the weights
(unpacking, copying into each artifact, loading in each runtime, publishing). Writes
DIR/large_onnx.json (--smoke: large_onnx-smoke.json) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from _shipyard import ROOT, package_process  # a sibling of this script

WIDTH = 1024  # floats per table row
PROTOBUF_LIMIT = 2**31


def _table_model(folder: Path, mb: int) -> tuple[Path, int]:
    """model.onnx and weights.bin (the table, written in pieces); returns the model and its rows."""
    import onnx
    from onnx import TensorProto, helper

    rows = mb * 2**20 // (WIDTH * 4)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (folder / "weights.bin").open("wb") as fh:
        for start in range(0, rows, 8192):
            fh.write(rng.standard_normal((min(8192, rows - start), WIDTH), dtype=np.float32).tobytes())
    init = onnx.TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[rows, WIDTH])
    init.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(rows * WIDTH * 4))):
        init.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["rows"]),
            helper.make_node("ReduceMean", ["rows", "axis"], ["pooled"], keepdims=0),
        ],
        "table",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 16])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", WIDTH])],
        [init, onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, str(folder / "model.onnx"))
    return folder / "model.onnx", rows


def _zip_folder(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{folder.name}/{path.name}")
    return dest


def run_size(mb: int, targets: str) -> dict[str, Any]:
    """Build the model with `mb` of weights, zip its folder, package it; the row of the table."""
    with tempfile.TemporaryDirectory(prefix="shipyard-large-onnx-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        model, rows = _table_model(work / "table", mb)
        source = _zip_folder(model.parent, work / "table.zip")
        built_s = time.perf_counter() - start
        spec = work / "spec.json"
        spec.write_text(
            json.dumps({"inputs": {"ids": {"low": 0, "high": rows - 1}}, "dims": {"batch": {"max": 4}}})
        )
        report, wall, _ = package_process(
            source, work / "home", "--targets", targets, "--spec", str(spec), "--name", "table"
        )
    return {
        "weights_bytes": rows * WIDTH * 4,
        "past_protobuf_limit": rows * WIDTH * 4 >= PROTOBUF_LIMIT,
        "build_and_zip_s": round(built_s, 1),
        "package_wall_s": round(wall, 1),
        "targets": {
            name: {
                "status": t["status"],
                "error": t.get("error"),
                "files": {f["path"]: f["bytes"] for f in t.get("files", [])},
                "load_ms": (t.get("metrics") or {}).get("load_ms"),
                "max_abs_err": (t.get("metrics") or {}).get("max_abs_err"),
            }
            for name, t in report["targets"].items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mb", default="1500,2300", help="MB of weights, one run each (past 2048: past protobuf's limit)"
    )
    parser.add_argument("--targets", default="ort-web,triton")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="a 24 MB table: the bench runs")
    args = parser.parse_args()
    sizes = [24] if args.smoke else [int(mb) for mb in args.mb.split(",")]
    runs = [run_size(mb, args.targets) for mb in sizes]
    print("| weights (bytes) | past 2 GB | target | status | load ms | max abs err | wall s | error |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        for name, t in run["targets"].items():
            error = (t["error"] or "")[:120]
            print(f"| {run['weights_bytes']:,} | {run['past_protobuf_limit']} | {name} | {t['status']} | "
                  f"{t['load_ms']} | {t['max_abs_err']} | {run['package_wall_s']} | {error} |")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    name = "large_onnx-smoke.json" if args.smoke else "large_onnx.json"
    (args.out / name).write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    passed = all(t["status"] == "passed" for run in runs for t in run["targets"].values())
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
