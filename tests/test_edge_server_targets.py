"""executorch and aoti: exported from torch.export, proven in the ExecuTorch runtime and an AOTI loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipyard.report import Status
from targets.pipeline import Engine
from tests.conftest import parse_json, run_cli, run_targets


def test_executorch_runs_every_served_variant(convnet_all) -> None:
    report = parse_json(convnet_all[1].stdout)
    target = report["targets"]["executorch"]
    assert target["status"] == "passed", target["error"]
    assert [f["path"] for f in target["files"]] == ["model.pte"]
    assert any("XNNPACK took" in n for n in target["notes"])
    served = target["envelope"]["batch"]
    assert served["min"] == 1
    batches = {v["dims"]["batch"] for v in target["variants"]}
    assert {1, served["max"]} <= batches  # both ends of what it claims to serve
    if served["max"] < 16:  # narrower than declared: the report must say so
        assert any(f"serves [1, {served['max']}]" in n for n in target["notes"])
        assert any(s["step"] == "reference:executorch" for s in report["steps"])
    assert target["metrics"]["max_abs_err"] < 1e-4


def test_aoti_serves_the_declared_range_on_an_avx2_baseline(convnet_all, tmp_path: Path) -> None:
    home, report = convnet_all[0], parse_json(convnet_all[1].stdout)
    target = report["targets"]["aoti"]
    assert target["status"] == "passed", target["error"]
    assert target["envelope"] == {"batch": {"min": 1, "max": 16}}
    assert {v["dims"]["batch"] for v in target["variants"]} == {1, 4, 16}
    assert target["metrics"]["load_ms"] > 0
    # compiled for x86-64-v3 by default, and the package's own code proves it: no AVX-512, no AMX
    assert target["metrics"]["isa"] == "x86-64-v3"
    isa_gate = next(g for g in target["gates"] if g["name"] == "isa")
    assert isa_gate["passed"] and "none beyond x86-64-v3" in isa_gate["detail"]
    assert not any(f.startswith(("AVX512", "AMX")) for f in target["metrics"]["isa_features"].split(","))
    assert target["metrics"]["loaded_with_cpu_capability"] == "AVX2"  # torch's own AVX-512 kernels off
    pulled = run_cli(["pull", "convnet", "--target", "aoti", "-o", str(tmp_path / "aoti")], home)
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "aoti/model.pt2").stat().st_size == target["files"][0]["bytes"]


@pytest.mark.parametrize("name", ["executorch", "aoti"])
def test_multi_input_multi_output(engine: Engine, models: dict[str, Path], tmp_path: Path, name: str) -> None:
    report = run_targets(engine, models["multi_io"], [name], tmp_path).reports[name]
    assert report.status is Status.PASSED, report.error
    assert {v.worst_output for v in report.variants} <= {"output_0", "output_1"}
    assert report.metrics.max_abs_err is not None and report.metrics.max_abs_err < 1e-4


def test_the_aoti_build_lock_is_in_the_users_private_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a fixed /tmp path another user could create first: the private runtime folder, and
    none at all when that folder is open to others."""
    from exporters.torch2aoti import _build_dir

    private = tmp_path / "run"
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(private))
    with _build_dir() as build:
        assert build.is_dir()
        assert (private / "aoti-build.lock").stat().st_uid == os.getuid()
    private.chmod(0o777)
    with pytest.raises(RuntimeError, match="no private runtime folder"), _build_dir():
        pass


def test_a_graph_torch_onnx_cannot_decompose_goes_through_its_torchscript_exporter(
    engine: Engine, tmp_path: Path
) -> None:
    """Swin: the dynamo exporter fails ("Failed to decompose the FX graph"); the TorchScript
    exporter's trace bakes the sizes, so the ONNX targets serve the typical batch and say so."""
    from tests import zoo

    source = zoo.save("swin", tmp_path / "swin.pt2")
    result = run_targets(engine, source, ["ort-web", "triton"], tmp_path / "run")
    for name in ("ort-web", "triton"):
        report = result.reports[name]
        assert report.status is Status.PASSED, report.error
        typical = result.signature.dims["batch"].typical
        assert report.envelope["batch"].min == report.envelope["batch"].max == typical
        assert any("TorchScript exporter" in n for n in report.notes), report.notes
        assert report.metrics.top1_agreement == 1.0  # 5-class logits
    assert any("max_batch_size 0: the .onnx fixes dim batch" in n for n in result.reports["triton"].notes)
