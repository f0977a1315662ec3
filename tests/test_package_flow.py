"""End to end through the real Prefect server: export, run in each runtime, gate, publish, pull."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from tests.conftest import parse_json, registry_files, run_cli

CONTRACT_METRICS = {"max_abs_err", "max_rel_err", "cosine", "latency_ms_p50", "artifact_bytes"}


def test_convnet_passes_all_six_targets_and_prints_contract_json(convnet_all) -> None:
    _home, result = convnet_all
    assert result.returncode == 0, result.stderr[-3000:]
    report = parse_json(result.stdout)
    assert report["model"] == "convnet"
    assert report["version"] == 1
    assert len(report["source_sha256"]) == 64
    assert {"torch", "onnxruntime", "npm:onnxruntime-web", "node"} <= set(report["toolchain"])
    assert set(report["targets"]) == {"ort-web", "triton", "executorch", "aoti", "litert-int4", "tfjs"}
    for name, target in report["targets"].items():
        assert target["status"] == "passed", (name, target["error"])
        assert target["error"] is None
        assert set(target["metrics"]) >= CONTRACT_METRICS
        assert target["metrics"]["latency_ms_p50"] > 0
        assert target["metrics"]["load_ms"] > 0
        assert target["metrics"]["artifact_bytes"] == sum(f["bytes"] for f in target["files"])
        served = target["envelope"]["batch"]
        assert {1, served["max"]} <= {v["dims"]["batch"] for v in target["variants"]}
    for name in ("ort-web", "triton", "aoti", "tfjs"):
        target = report["targets"][name]
        assert target["metrics"]["max_abs_err"] < 1e-4
        assert target["metrics"]["cosine"] > 0.99999
        assert {v["dims"]["batch"] for v in target["variants"]} == {1, 4, 16}
        assert target["envelope"] == {"batch": {"min": 1, "max": 16}}
    assert {f["path"] for f in report["targets"]["ort-web"]["files"]} == {"model.onnx"}
    assert {v["file"] for v in report["targets"]["ort-web"]["variants"]} == {"model.onnx"}
    assert {v["runtime"] for v in report["targets"]["tfjs"]["variants"]} == {
        "tfjs cpu",
        "tfjs wasm",
        "Chromium tfjs webgl (float32 textures: true)",
        "Chromium tfjs wasm",
    }
    # one ONNX export served the three ONNX-based targets
    (onnx,) = [s for s in report["steps"] if s["step"] == "convert:onnx"]
    assert sorted(onnx["targets"]) == ["ort-web", "tfjs", "triton"]
    assert {f["path"] for f in report["targets"]["triton"]["files"]} == {
        "convnet/config.pbtxt",
        "convnet/1/model.onnx",
    }


def test_published_layout_and_manifest(convnet_all) -> None:
    home, result = convnet_all
    report = parse_json(result.stdout)
    files = registry_files(home)
    assert "models/convnet/versions/1.json" in files
    assert "models/convnet/aliases/latest.json" in files
    blobs = {f.rsplit("/", 1)[-1] for f in files if f.startswith("blobs/sha256/")}
    wanted = {f["sha256"] for t in report["targets"].values() for f in t["files"]}
    assert wanted | {report["source_sha256"]} == blobs
    manifest = json.loads((home / "registry/models/convnet/versions/1.json").read_text())
    assert manifest["source"]["sha256"] == report["source_sha256"]
    assert manifest["toolchain"] == report["toolchain"]
    assert manifest["signature"]["dims"]["batch"]["max"] == 16
    assert manifest["run"]["flow_run_id"]


def test_pull_checks_digests(convnet_all, tmp_path: Path) -> None:
    home, result = convnet_all
    report = parse_json(result.stdout)
    out = tmp_path / "pulled"
    pulled = run_cli(["pull", "convnet@latest", "--target", "triton", "-o", str(out)], home)
    assert pulled.returncode == 0, pulled.stderr
    for entry in report["targets"]["triton"]["files"]:
        data = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]

    # Corrupt the stored blob: pull must refuse it and leave no file behind.
    model_entry = next(f for f in report["targets"]["ort-web"]["files"] if f["path"] == "model.onnx")
    blob = home / "registry/blobs/sha256" / model_entry["sha256"]
    original = blob.read_bytes()
    try:
        blob.write_bytes(original[:-10] + b"0123456789")
        bad = run_cli(["pull", "convnet:1", "--target", "ort-web", "-o", str(tmp_path / "bad")], home)
        assert bad.returncode == 1
        assert "sha256" in bad.stderr and "Traceback" not in bad.stderr
        assert not (tmp_path / "bad" / "model.onnx").exists()
    finally:
        blob.write_bytes(original)


def test_ls_and_show(convnet_all) -> None:
    home, _ = convnet_all
    listing = run_cli(["ls", "--json"], home)
    assert json.loads(listing.stdout) == [{"model": "convnet", "versions": 1, "aliases": {"latest": 1}}]
    versions = json.loads(run_cli(["ls", "convnet", "--json"], home).stdout)
    assert set(versions[0]["targets"].values()) == {"passed"} and len(versions[0]["targets"]) == 6
    shown = run_cli(["show", "convnet:1"], home)
    assert shown.returncode == 0 and "ort-web" in shown.stdout and "passed" in shown.stdout
    missing = run_cli(["show", "convnet:7"], home)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_multi_io_with_spec_renames(
    models: dict[str, Path], prefect_api: str, home: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: twin-heads\n"
        "inputs:\n  features: {name: feats}\n"
        "outputs:\n  output_0: {name: scores}\n  output_1: {name: gate}\n"
        "dims:\n  batch: {min: 2, max: 6, typical: 3}\n"
        "targets:\n  ort-web: {options: {ort_format: true}}\n"
    )
    result = run_cli(
        ["package", str(models["multi_io"]), "--spec", str(spec), "--targets", "ort-web,triton", "--json"],
        home,
        prefect_api,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = parse_json(result.stdout)
    assert report["model"] == "twin-heads"
    for target in report["targets"].values():
        assert target["status"] == "passed", target["error"]
        assert {v["dims"]["batch"] for v in target["variants"]} == {2, 3, 6}
    # the ORT-format file on request, run in onnxruntime-web beside the .onnx
    assert {v["file"] for v in report["targets"]["ort-web"]["variants"]} == {"model.onnx", "model.ort"}
    # batch starts at 2, so Triton cannot batch (it always allows batch 1): explicit -1 dims instead.
    out = tmp_path / "triton"
    assert run_cli(["pull", "twin-heads", "--target", "triton", "-o", str(out)], home).returncode == 0
    config = (out / "twin-heads/config.pbtxt").read_text()
    assert "max_batch_size" not in config or "max_batch_size: 0" in config
    assert 'name: "feats"' in config and 'name: "gate"' in config


def test_one_failing_target_does_not_stop_the_other(
    models: dict[str, Path], prefect_api: str, home: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    # aoti gets one second to compile (it needs several): its step is killed, triton goes on.
    spec.write_text("targets:\n  aoti: {timeout_s: 1}\n")
    result = run_cli(
        ["package", str(models["convnet"]), "--spec", str(spec), "--targets", "aoti,triton", "--json"],
        home,
        prefect_api,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    report = parse_json(result.stdout)
    assert report["version"] == 1
    assert report["targets"]["triton"]["status"] == "passed"
    failed = report["targets"]["aoti"]
    assert failed["status"] == "failed"
    assert "export:aoti timed out after 1s" in failed["error"]
    assert failed["files"] == []
    pulled = run_cli(["pull", "convnet", "--target", "aoti", "-o", str(tmp_path / "o")], home)
    assert pulled.returncode == 2 and "target 'aoti' failed (passed: triton)" in pulled.stderr
    manifest = json.loads((home / "registry/models/convnet/versions/1.json").read_text())
    assert manifest["targets"]["aoti"]["status"] == "failed"
    # the failed run keeps its folder, with what is needed to reproduce the failing step
    (run,) = (home / "runs").iterdir()
    assert (run / "steps" / "export-aoti" / "reproduce.sh").is_file()


def test_local_mode_without_prefect_server(models: dict[str, Path], home: Path) -> None:
    """No PREFECT_API_URL: the same run without Prefect. Kept run folders past their days go."""
    old, recent = home / "runs" / "old-failed-run", home / "runs" / "recent-failed-run"
    for folder in (old, recent):
        (folder / "steps").mkdir(parents=True)
    os.utime(old, (time.time() - 15 * 86400,) * 2)  # past the default 14 days
    result = run_cli(["package", str(models["convnet"]), "--targets", "triton"], home)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "triton" in result.stdout and "passed" in result.stdout
    assert not old.exists() and recent.is_dir()
