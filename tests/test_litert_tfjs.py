"""litert-int4 and tfjs on the models the issue names: the int4 proof, layout, multi-IO, rejection."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shipyard.report import Status
from targets.pipeline import Engine
from tests import zoo
from tests.conftest import parse_json, run_cli, run_targets
from tests.models import save_mlp


@pytest.fixture(scope="session")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_mlp(tmp_path_factory.mktemp("mlp") / "mlp.pt2")


def test_int4_proof_on_large_linear_layers(engine: Engine, mlp: Path, tmp_path: Path) -> None:
    report = run_targets(engine, mlp, ["litert-int4"], tmp_path).reports["litert-int4"]
    assert report.status is Status.PASSED, report.error
    m = report.metrics.model_dump()
    assert m["int4_tensors"] == 3
    assert m["int4_weight_share"] >= 0.8
    assert m["size_vs_fp32"] <= 0.2
    assert report.metrics.artifact_bytes <= 0.2 * m["fp32_tflite_bytes"]
    # the fp32 baseline held to float32 gates, the int4 file to the lossy ones
    gates = {g.name: g for g in report.gates}
    assert {"min_cosine", "max_rel_l2_err", "baseline_max_abs_err", "baseline_min_cosine"} <= set(gates)
    assert gates["baseline_max_abs_err"].value < 1e-4
    assert report.metrics.max_abs_err > gates["baseline_max_abs_err"].value  # quantization did happen
    assert {v.dims["batch"] for v in report.variants} == {1, 3, 8}
    assert [f.path for f in report.files] == ["model_int4.tflite", "int4_recipe.json"]
    assert any(
        n.startswith("int4 recipe found by search: int4 per-channel (1 candidate") for n in report.notes
    )


def test_blockwise_recipe_from_spec(engine: Engine, mlp: Path, tmp_path: Path) -> None:
    spec = {"targets": {"litert-int4": {"options": {"recipe": "dynamic_wi4b32_afp32"}}}}
    report = run_targets(engine, mlp, ["litert-int4"], tmp_path, spec).reports["litert-int4"]
    assert report.status is Status.PASSED, report.error
    assert any("recipe dynamic_wi4b32_afp32" in n for n in report.notes)
    assert report.metrics.model_dump()["int4_weight_share"] >= 0.8


def test_model_without_int4_ops_is_not_published_as_int4(engine: Engine, tmp_path: Path) -> None:
    import torch

    class Scale(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x) * 2.0 + 1.0

    path = tmp_path / "scale.pt2"
    torch.export.save(torch.export.export(Scale(), (torch.randn(2, 4),)), str(path))
    report = run_targets(engine, path, ["litert-int4"], tmp_path / "run").reports["litert-int4"]
    assert report.status is Status.FAILED
    assert "no int4-eligible ops" in report.error


def test_tfjs_keeps_nchw_and_names(convnet_all) -> None:
    home, result = convnet_all
    report = parse_json(result.stdout)
    assert report["targets"]["tfjs"]["status"] == "passed", report["targets"]["tfjs"]["error"]
    out = home / "pulled-tfjs"
    assert run_cli(["pull", "convnet", "--target", "tfjs", "-o", str(out)], home).returncode == 0
    signature = json.loads((out / "model.json").read_text())["signature"]
    dims = [int(d["size"]) for d in signature["inputs"]["image"]["tensorShape"]["dim"]]
    assert dims == [-1, 3, 32, 32]  # NCHW as in PyTorch, dynamic batch
    assert list(signature["outputs"]) == ["output_0"]


def _fused_activations(model_json: Path) -> set[str]:
    nodes = json.loads(model_json.read_text())["modelTopology"]["node"]
    return {
        base64.b64decode(op).decode()
        for node in nodes
        for op in node.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])[1:]
    }


@pytest.mark.parametrize("name", ["litert-int4", "tfjs"])
def test_multi_input_multi_output(engine: Engine, models: dict[str, Path], tmp_path: Path, name: str) -> None:
    """On an AVX-512 host TensorFlow's oneDNN rewrites once fused MatMul+Tanh, which TF.js cannot run."""
    result = run_targets(engine, models["multi_io"], [name], tmp_path)
    report = result.reports[name]
    assert report.status is Status.PASSED, report.error
    assert len(report.variants) >= 3
    if name == "tfjs":
        model_json = result.artifact_dirs[name] / "model.json"
        doc = json.loads(model_json.read_text())
        assert set(doc["signature"]["outputs"]) == {"output_0", "output_1"}
        assert "Tanh" not in _fused_activations(model_json)
        portability = next(g for g in report.gates if g.name == "portability")
        assert portability.passed and "cpu, wasm, webgl" in (portability.detail or "")
        assert {v.runtime for v in report.variants} == {
            "tfjs cpu",
            "tfjs wasm",
            "Chromium tfjs webgl (float32 textures: true)",
            "Chromium tfjs wasm",
        }


def test_one_converter_rejecting_names_its_reason_and_the_others_publish(
    prefect_api: str, home: Path, tmp_path: Path
) -> None:
    """GPT-2-style decoder: onnx2tf cannot convert it with dynamic dims nor at a fixed size, and
    says where and why in one line; the ONNX targets publish."""
    source = zoo.save("gpt2", tmp_path / "gpt2.pt2")
    result = run_cli(
        ["package", str(source), "--targets", "tfjs,ort-web,triton", "--json"], home, prefect_api
    )
    assert result.returncode == 1, result.stderr[-3000:]
    report = parse_json(result.stdout)
    assert report["version"] == 1
    failed = {n: t for n, t in report["targets"].items() if t["status"] != "passed"}
    assert set(failed) == {"tfjs"}
    error = failed["tfjs"]["error"]
    assert error.startswith("convert:saved-model failed: RuntimeError: onnx2tf at ONNX node"), error
    assert "and with fixed input sizes: at {'input_ids': [3, 11]}" in error, error
    assert "\n" not in error and len(error) < 1500 and "Traceback" not in error
    for name in ("ort-web", "triton"):
        assert report["targets"][name]["metrics"]["max_abs_err"] < 1e-4


def test_signature_keys_match_by_name_by_position_or_not_at_all() -> None:
    from targets.litert_int4 import UnmatchedSignature, _keys

    assert _keys(["b", "a"], ["a", "b"]) == ["a", "b"]  # by name, in the model's order
    assert _keys(["args_10", "args_2", "args_0"], ["x", "y", "z"]) == ["args_0", "args_2", "args_10"]
    # a .tflite from a SavedModel: the names TensorFlow stores (tf2onnx's `input:0`, torch's `x.1`)
    assert _keys(["x_1", "input_0"], ["input:0", "x.1"]) == ["input_0", "x_1"]
    for found in (["serving_x", "serving_y"], ["args_0"]):  # unnumbered, or one short
        with pytest.raises(UnmatchedSignature, match="match neither"):
            _keys(found, ["x", "y"])


def test_model_json_inputs_get_back_the_names_a_savedmodel_cannot_store(tmp_path: Path) -> None:
    """A SavedModel signature stores `input:0` as `input_0`; model.json is keyed by the model's
    own names again, as the web runners feed them; two names that would become one are refused."""
    import json

    from exporters.savedmodel2tfjs import rewrite_model_json
    from shipyard.saved_model import signature_name, signature_names

    assert signature_name("input.1") == "input_1" and signature_name("0") == "arg_0"
    assert signature_name("é:0") == "arg___0"  # TensorFlow's names are ASCII
    with pytest.raises(ValueError, match="one name in a TensorFlow signature"):
        signature_names(["a:0", "a_0"])
    model_json = tmp_path / "model.json"
    spec = {"name": "x", "dtype": "DT_FLOAT"}
    inputs = {"audio_0:0": spec, "ids": spec}
    outputs = {"probs_0": {**spec, "name": "Identity_1:0"}, "boxes": {**spec, "name": "Identity:0"}}
    model_json.write_text(json.dumps({"signature": {"inputs": inputs, "outputs": outputs}}))
    rewrite_model_json(model_json, ["audio:0", "ids"], ["probs:0", "boxes"])
    signature = json.loads(model_json.read_text())["signature"]
    assert sorted(signature["inputs"]) == ["audio:0", "ids"]
    assert {k: v["name"] for k, v in signature["outputs"].items()} == {
        "probs:0": "Identity_1:0",
        "boxes": "Identity:0",
    }
