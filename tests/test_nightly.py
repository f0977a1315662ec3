"""nightly-reexport: re-package tracked models from their stored sources and report drift."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shipyard.drift import drift_rows, toolchain_changes
from shipyard.report import Metrics, Status, TargetReport
from tests.conftest import ROOT, parse_json, run_cli
from tests.models import save_convnet_onnx


def _nightly(registry: str, prefect_api: str, home: Path, **env: str) -> dict:
    """Run the nightly-reexport flow against the test Prefect server, in a process of its own."""
    code = (
        "import json; from flows.nightly import nightly_reexport; "
        f"print(json.dumps(nightly_reexport(registry={registry!r})))"
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "SHIPYARD_HOME": str(home), **env}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_nightly_reexport_same_toolchain_keeps_the_version(
    models: dict[str, Path], prefect_api: str, home: Path, tmp_path: Path
) -> None:
    registry = (tmp_path / "registry").as_uri()
    first = run_cli(
        ["package", str(models["multi_io"]), "--targets", "triton", "--registry", registry, "--json"],
        home,
        prefect_api,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    old = parse_json(first.stdout)
    result = _nightly(registry, prefect_api, home)
    assert [m["model"] for m in result["models"]] == ["multi_io"]
    summary = result["models"][0]
    assert summary["old_version"] == summary["new_version"] == old["version"]  # same identity
    assert summary["toolchain_changes"] == {}
    assert summary["steps_run"] == [] and summary["steps_reused"] > 0  # nearly free: all from the cache
    assert [(r["target"], r["status"], r["regressed"]) for r in result["drift"]] == [
        ("triton", "passed -> passed", False)
    ]
    page = Path(result["report"].removeprefix("file://")).read_text()  # the night's HTML drift page
    assert (
        result["report"].startswith(registry + "/nightly/")
        and "<tr class='drift' data-target='triton'>" in page
    )
    assert "multi_io" in page and "1 model(s) re-exported, 0 target(s) regressed, 0 failed" in page


def test_one_model_failing_does_not_stop_the_others(
    models: dict[str, Path], prefect_api: str, home: Path, tmp_path: Path
) -> None:
    """beta's source is gone; gamma's stored spec asks for more time than today's operator allows."""
    registry = (tmp_path / "registry").as_uri()
    spec = tmp_path / "spec.yaml"
    spec.write_text("targets:\n  triton:\n    timeout_s: 900\n")
    for name in ("alpha", "beta", "gamma"):
        args = ["package", str(models["multi_io"]), "--name", name, "--targets", "triton"]
        args += ["--spec", str(spec)] if name == "gamma" else []
        done = run_cli([*args, "--registry", registry, "--json"], home, prefect_api)
        assert done.returncode == 0, done.stderr[-2000:]
    # beta's stored version now names a source the registry does not hold
    manifest = tmp_path / "registry/models/beta/versions/1.json"
    doc = json.loads(manifest.read_text())
    doc["source"]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(doc))
    result = _nightly(registry, prefect_api, home, SHIPYARD_MAX_STEP_TIMEOUT_S="600")
    assert [m["model"] for m in result["models"]] == ["alpha"]
    failures = {f["model"]: f["error"] for f in result["failures"]}
    assert sorted(failures) == ["beta", "gamma"]
    assert "Traceback" not in failures["beta"]
    assert failures["gamma"] == (
        "stored spec refused today: spec field targets.triton.timeout_s: 900 s is above this "
        "service's limit of 600 s ($SHIPYARD_MAX_STEP_TIMEOUT_S)"
    )


def test_drift_rows_flag_regressions() -> None:
    old = {"tfjs": TargetReport(status=Status.PASSED, metrics=Metrics(max_abs_err=1e-7, artifact_bytes=10))}
    new = {"tfjs": TargetReport(status=Status.FAILED, error="export failed: Erf")}
    (row,) = drift_rows("m", old, new)
    assert row.status == "passed -> failed" and row.regressed is True
    llm_old = {
        "lm": TargetReport(
            status=Status.PASSED, metrics=Metrics(token_agreement=1.0, decode_tokens_per_s=300)
        )
    }
    llm_new = {
        "lm": TargetReport(
            status=Status.PASSED, metrics=Metrics(token_agreement=0.9, decode_tokens_per_s=450)
        )
    }
    (lm,) = drift_rows("m", llm_old, llm_new)
    assert (lm.token_agreement, lm.decode_tokens_per_s, lm.regressed) == ("1 -> 0.9", "300 -> 450", False)
    assert row.error == "export failed: Erf"
    assert toolchain_changes(
        {"onnx": "1.23.2", "torch": "2.13.0"}, {"onnx": "1.24.0", "torch": "2.13.0"}
    ) == {"onnx": ["1.23.2", "1.24.0"]}


def test_nightly_keeps_an_onnx_sources_skipped_targets_skipped(
    models: dict[str, Path], prefect_api: str, home: Path, tmp_path: Path
) -> None:
    """Packaged for all targets, an ONNX model skips two; the nightly asks for all again (not for
    the skipped ones by name, which would be refused) and keeps the same version."""
    registry = (tmp_path / "registry").as_uri()
    source = save_convnet_onnx(models["convnet"], tmp_path / "convnet.onnx")
    first = run_cli(["package", str(source), "--registry", registry, "--json"], home, prefect_api)
    assert first.returncode == 0, first.stderr[-2000:]
    old = parse_json(first.stdout)
    assert {n for n, t in old["targets"].items() if t["status"] == "skipped"} == {"aoti", "executorch"}
    result = _nightly(registry, prefect_api, home)
    summary = result["models"][0]
    assert summary["old_version"] == summary["new_version"] == old["version"]
    statuses = {r["target"]: r["status"] for r in result["drift"]}
    assert statuses["executorch"] == "skipped -> skipped" and statuses["tfjs"] == "passed -> passed"
