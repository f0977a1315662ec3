"""An ONNX file as the source: ort-web, triton, tfjs and litert-int4 from it (the last two through
onnx2tf's SavedModel), the torch-only targets skipped with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from shipyard.report import Status
from targets.pipeline import Engine, PipelineResult
from tests.conftest import run_cli, run_targets
from tests.models import save_convnet_onnx
from tests.test_bad_input import assert_refused

SKIPPED = {"aoti", "executorch"}


@pytest.fixture(scope="module")
def convnet_onnx(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_convnet_onnx(models["convnet"], tmp_path_factory.mktemp("onnx") / "convnet.onnx")


@pytest.fixture(scope="module")
def packaged(engine: Engine, convnet_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    spec = {"dims": {"N": {"min": 1, "max": 6}}}
    return run_targets(engine, convnet_onnx, [], tmp_path_factory.mktemp("run"), spec)


def test_onnx_source_builds_the_onnx_family_and_skips_the_rest_with_reasons(packaged: PipelineResult) -> None:
    passed = {n for n, r in packaged.reports.items() if r.status is Status.PASSED}
    assert passed == {"ort-web", "triton", "tfjs", "litert-int4"}, {
        n: r.error for n, r in packaged.reports.items()
    }
    for name in SKIPPED:
        report = packaged.reports[name]
        assert report.status is Status.SKIPPED and report.files == []
        assert report.error and "no converter path from this onnx source" in report.error


def test_the_graph_names_the_dims_and_the_spec_narrows_them(packaged: PipelineResult) -> None:
    """The dim named `N` in the graph is one dim for input and output, validated across 1..6."""
    assert packaged.signature.inputs[0].shape == ["N", 3, 32, 32]
    assert packaged.signature.outputs[0].name == "logits" and packaged.signature.outputs[0].shape == ["N", 10]
    batches = {v.dims["N"] for v in packaged.reports["ort-web"].variants}
    assert min(batches) == 1 and max(batches) == 6 and len(batches) >= 3
    for name in ("ort-web", "triton", "tfjs"):
        assert packaged.reports[name].metrics.max_abs_err is not None
        assert packaged.reports[name].metrics.max_abs_err < 1e-4


def test_litert_int4_from_onnx_goes_through_the_tflite_converter_and_resizes(
    packaged: PipelineResult,
) -> None:
    """ONNX -> onnx2tf SavedModel -> TFLite converter -> int4: the interpreter resizes the batch
    (no fixed traced shape, unlike litert-torch), and the fp32 baseline meets the float gates."""
    litert = packaged.reports["litert-int4"]
    assert litert.envelope["N"].min == 1 and litert.envelope["N"].max == 6
    assert "inputs are resized in the interpreter" in litert.notes
    assert litert.metrics.cosine is not None and litert.metrics.cosine >= 0.98
    baseline = [g for g in litert.gates if g.name.startswith("baseline_")]
    assert baseline and all(g.passed for g in baseline)
    steps = {s.step for s in packaged.steps}
    assert {"convert:saved-model", "convert:tflite-fp32"} <= steps and "convert:onnx" not in steps


def test_a_named_target_that_cannot_take_onnx_is_refused(home: Path, convnet_onnx: Path) -> None:
    result = run_cli(["package", str(convnet_onnx), "--targets", "executorch"], home)
    assert_refused(result, home, "is a onnx model", "executorch cannot be built from it")


def _tiny_model(initializer: TensorProto) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [initializer],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_external_data_is_never_read(home: Path, tmp_path: Path) -> None:
    """A tensor whose data lives in a file elsewhere (here /etc/hostname) is refused, unread."""
    weight = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../../../etc/hostname")
    path = tmp_path / "external.onnx"
    path.write_bytes(_tiny_model(weight).SerializeToString())
    assert_refused(run_cli(["package", str(path)], home), home, "external files", "single-file")


def test_external_data_inside_a_node_attribute_is_refused_too(home: Path, tmp_path: Path) -> None:
    """Not only initializers: a Constant node's tensor may point at a file as well."""
    value = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "c")
    value.ClearField("raw_data")
    value.data_location = TensorProto.EXTERNAL
    value.external_data.add(key="location", value="/etc/hostname")
    model = _tiny_model(numpy_helper.from_array(np.zeros(2, dtype=np.float32), "w"))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=value))
    path = tmp_path / "constant.onnx"
    path.write_bytes(model.SerializeToString())
    assert_refused(run_cli(["package", str(path)], home), home, "external files")


def test_an_invalid_graph_is_refused_by_the_checker(home: Path, tmp_path: Path) -> None:
    model = _tiny_model(numpy_helper.from_array(np.zeros(2, dtype=np.float32), "w"))
    model.graph.node[0].input[1] = "nowhere"  # an input no node or initializer produces
    path = tmp_path / "broken.onnx"
    path.write_bytes(model.SerializeToString())
    assert_refused(run_cli(["package", str(path)], home), home, "is not a valid ONNX model")


def test_renames_are_refused_for_an_onnx_source(home: Path, convnet_onnx: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("inputs:\n  image: {name: pixels}\n")
    result = run_cli(["package", str(convnet_onnx), "--spec", str(spec)], home)
    assert_refused(result, home, "keeps its own tensor names")
