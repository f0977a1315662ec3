"""Each benchmark's --smoke mode runs end to end and writes a result that holds together.

The figures themselves are not judged here (benchmarks measure, tests check); what is checked
is that the bench still runs against today's code and that what it reports is self-consistent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from targets import default_targets
from tests.conftest import ROOT


def _smoke(script: str, out: Path, timeout: float) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (found,) = out.glob("*-smoke.json")
    return dict(json.loads(found.read_text()))


def test_registry_bench_smoke(tmp_path: Path) -> None:
    result = _smoke("registry_bench.py", tmp_path, 300)
    ops = {row["op"] for row in result["rows"]}
    assert ops == {"boto3-upload", "shipyard-publish", "boto3-download", "shipyard-pull"}
    assert result["publish_vs_upload"] > 0 and result["pull_vs_download"] > 0


def test_service_bench_smoke(tmp_path: Path) -> None:
    """The make-up service with 2 workers: the CLI, a flow run alone, a load and a backlog."""
    result = _smoke("service.py", tmp_path, 900)
    for test in ("load", "backlog"):
        row = result[test]
        assert row["completed"] == row["flow_runs"] == row["submissions"], row  # nothing lost
        assert row["peak_warm_servers"] >= 1 and row["peak_flow_servers"] == result["workers"], row
    for split in (*result["solo"], *result["cli"]):  # the phases follow one another in time
        phases = ("start_s", "before_steps_s", "steps_s", "after_steps_s")
        assert all(split[p] >= 0 for p in phases) and split["steps_s"] > 0, split


def test_realworld_smoke(tmp_path: Path) -> None:
    """Four real trained models from pinned PyPI wheels (Paddle2ONNX, jax2tf + tf2onnx, tf2onnx,
    spox), each with the spec its users would write, pass the default gates in real runtimes."""
    result = _smoke("realworld.py", tmp_path, 1200)
    assert len(result["cells"]) == 4
    for model, cells in result["cells"].items():
        detail = result["details"][model]
        assert len(detail["package"]["sha256"]) == 64 and detail["exporter"], detail
        for target, cell in cells.items():
            assert cell.startswith("passed"), f"{model} {target}: {detail['targets'][target]['error']}"
            assert detail["targets"][target]["metrics"]["cosine"] > 0.9999, (model, target)


def test_large_onnx_smoke(tmp_path: Path) -> None:
    """An ONNX folder zipped with its external data, packaged for ort-web and triton."""
    (run,) = _smoke("large_onnx.py", tmp_path, 600)["runs"]
    assert set(run["targets"]) == {"ort-web", "triton"}
    for target in run["targets"].values():
        assert target["status"] == "passed", target
        weights = [b for f, b in target["files"].items() if f.endswith("weights.bin")]
        assert weights == [run["weights_bytes"]]


def test_export_bench_smoke(tmp_path: Path) -> None:
    """The run against the bare converter calls: every target's chain runs bare too (the bare
    half calls the catalog's converters by name, so a renamed one fails here, not in a bench)."""
    result = _smoke("export_bench.py", tmp_path, 900)
    (row,) = result["results"]
    assert row["targets_passed"] == sorted(t.name for t in default_targets())
    assert row["rerun_reused_all"]
    bare = {s["step"]: s["bare_s"] for s in row["steps"] if s["step"].startswith(("export:", "convert:"))}
    assert bare and all(seconds is not None for seconds in bare.values()), bare
