"""An ONNX file as the source: ort-web, triton, tfjs and litert-int4 from it (the last two through
onnx2tf's SavedModel), the torch-only targets skipped with a reason."""

from __future__ import annotations

import json
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
    refused = run_cli(["package", str(path)], home)
    assert_refused(refused, home, "external files", ".zip or .tar", "single-file")


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
    spec.write_text("inputs:\n  image: {name: pixels, low: 0, high: 1}\n")
    result = run_cli(["package", str(convnet_onnx), "--spec", str(spec)], home)
    assert_refused(result, home, "image.name", "keeps its own tensor names")


def _wild_model(path: Path) -> Path:
    """As exporters in the wild write them: Paddle's `?` for every unknown dim, a literal -1, a
    tf2onnx `unk__` name; an int32 id input into a 5-word vocabulary; a rate that must be 16000."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?", 3, "?", "?"])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, ["unk__7", 4])
    ids.type.tensor_type.shape.dim[1].dim_value = -1
    rate = helper.make_tensor_value_info("rate", TensorProto.INT64, [1])
    table = numpy_helper.from_array(np.arange(10, dtype=np.float32).reshape(5, 2), "table")
    expected = numpy_helper.from_array(np.array([16000], dtype=np.int64), "expected")
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Gather", ["table", "ids"], ["embedded"]),  # ids outside 0..4 fail in ORT
        helper.make_node("Equal", ["rate", "expected"], ["rate_ok"]),
        helper.make_node("Cast", ["rate_ok"], ["rate_gate"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["embedded", "rate_gate"], ["z"]),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["?", 3, "?", "?"]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, ["unk__7", "?", 2]),
    ]
    graph = helper.make_graph(nodes, "wild", [x, ids, rate], outputs, [table, expected])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])  # IR 14 (onnx 1.23)
    path.write_bytes(model.SerializeToString())
    return path


def test_placeholder_dims_are_dims_of_their_own(tmp_path: Path) -> None:
    from shipyard.onnx_model import load_onnx

    signature = load_onnx(_wild_model(tmp_path / "wild.onnx")).signature()
    shapes = {t.name: t.shape for t in signature.inputs}
    assert shapes == {"x": ["batch", 3, "x_dim2", "x_dim3"], "ids": ["ids_dim0", "ids_dim1"], "rate": [1]}
    assert set(signature.dims) == {"batch", "x_dim2", "x_dim3", "ids_dim0", "ids_dim1"}


def test_a_wild_onnx_model_packages_with_ranges_and_values_from_its_spec(
    engine: Engine, tmp_path: Path
) -> None:
    """Value ranges and fixed values are what such a model needs, and they are not renames."""
    spec = {
        "inputs": {"x": {"low": 0.0, "high": 1.0}, "ids": {"low": 0, "high": 4}, "rate": {"value": 16000}},
        "dims": {"x_dim3": {"min": 8, "max": 8}},  # height and width are two dims: narrow one
    }
    result = run_targets(engine, _wild_model(tmp_path / "wild.onnx"), ["ort-web"], tmp_path / "run", spec)
    report = result.reports["ort-web"]
    assert report.status is Status.PASSED, report.error
    assert any(v.dims["x_dim2"] != v.dims["x_dim3"] for v in report.variants)
    assert any("IR version lowered from 14 to 13" in n for n in report.notes), report.notes
    assert report.metrics.cosine is not None and report.metrics.cosine > 0.9999  # z is not all zeros


def test_integer_ranges_include_high_and_values_fill_the_input() -> None:
    from shipyard.signature import Signature, TensorSpec
    from shipyard.spec import parse_spec
    from shipyard.variants import random_inputs

    signature = Signature(
        inputs=[
            TensorSpec(name="ids", dtype="int32", shape=[400]),
            TensorSpec(name="rate", dtype="int64", shape=[1]),
            TensorSpec(name="pixels", dtype="float32", shape=[400]),
        ],
        outputs=[],
    )
    pixels = {"name": "pixels", "low": 2, "high": 3}
    spec = parse_spec({"inputs": {"ids": {"low": 0, "high": 4}, "rate": {"value": 16000}, "x": pixels}})
    inputs = random_inputs(signature, spec, {}, np.random.default_rng(0))
    assert set(np.unique(inputs["ids"])) == {0, 1, 2, 3, 4}
    assert inputs["rate"].tolist() == [16000]
    assert inputs["pixels"].min() >= 2 and inputs["pixels"].max() <= 3  # a range under its new name


def test_the_interface_carries_the_specs_ranges_for_the_converters() -> None:
    """onnx2tf's result is checked on data in the spec's ranges: a layer norm over one-hot bytes
    is ill-conditioned on 0/1 ids that real bytes (0..256) never are."""
    from shipyard.prepare import apply_spec
    from shipyard.signature import Signature, TensorSpec
    from shipyard.spec import parse_spec

    signature = Signature(
        inputs=[
            TensorSpec(name="bytes", dtype="int32", shape=[4]),
            TensorSpec(name="sr", dtype="int64", shape=[]),
            TensorSpec(name="other", dtype="float32", shape=[2]),
        ],
        outputs=[],
    )
    spec = parse_spec({"inputs": {"bytes": {"low": 0, "high": 256}, "sr": {"value": 16000}}})
    inputs = {t.name: t for t in apply_spec(signature, spec).inputs}
    assert (inputs["bytes"].low, inputs["bytes"].high, inputs["bytes"].value) == (0, 256, None)
    assert (inputs["sr"].low, inputs["sr"].high, inputs["sr"].value) == (None, None, 16000)
    assert (inputs["other"].low, inputs["other"].high) == (None, None)


def test_paddle_counter_dims_are_unnamed_too(tmp_path: Path) -> None:
    """Paddle2ONNX numbers its unknown dims (`p2o.DynamicDimension.0`); they name nothing, and a
    spec refers to them as `batch` and `<input>_dim<axis>` like every placeholder."""
    from shipyard.onnx_model import load_onnx

    dims = ["p2o.DynamicDimension.0", 3, "p2o.DynamicDimension.1", "DynamicDimension.2"]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["p2o.DynamicDimension.3", 3, None, None])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "paddle", [x], [y])
    path = tmp_path / "paddle.onnx"
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    )
    signature = load_onnx(path).signature()
    assert signature.inputs[0].shape == ["batch", 3, "x_dim2", "x_dim3"]


def _sized_model(path: Path) -> Path:
    """A model that runs only where its last dim is 8 (or 1, by broadcasting), as a detector runs
    only at multiples of 32."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?", "?"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["?", 8])
    bias = numpy_helper.from_array(np.arange(8, dtype=np.float32), "bias")
    graph = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["y"])], "sized", [x], [y], [bias])
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    )
    return path


def test_inspect_shows_the_signature_before_running_and_names_the_variant_that_fails(
    home: Path, tmp_path: Path
) -> None:
    source = _sized_model(tmp_path / "sized.onnx")
    result = run_cli(["inspect", str(source)], home)
    assert result.returncode == 2, result.stderr
    assert "x                    float32   [batch, x_dim1]" in result.stdout  # the names to narrow
    assert "x_dim1" in result.stdout and "min 1  typical 6  max 32  from default" in result.stdout
    (error,) = result.stderr.strip().splitlines()
    assert "failed to run on validation variant typical (batch=6, x_dim1=6)" in error, error
    assert "dims: {batch: {min: 6, max: 6}, x_dim1: {min: 6, max: 6}}" in error  # the real names
    assert "Attempting to broadcast" in error  # ONNX Runtime's own words follow

    spec = tmp_path / "spec.yaml"
    spec.write_text("dims:\n  x_dim1: {min: 8, max: 8}\n")
    narrowed = run_cli(["inspect", str(source), "--spec", str(spec)], home)
    assert narrowed.returncode == 0, narrowed.stderr
    assert "runs: on every validation variant" in narrowed.stdout
    as_json = run_cli(["inspect", str(source), "--json"], home)
    assert as_json.returncode == 2
    assert "validation variant typical" in json.loads(as_json.stdout)["run_error"]


def test_package_refuses_a_source_that_fails_at_its_declared_sizes_and_says_how_to_narrow(
    home: Path, tmp_path: Path
) -> None:
    result = run_cli(["package", str(_sized_model(tmp_path / "sized.onnx")), "--targets", "ort-web"], home)
    assert_refused(result, home, "validation variant typical", "x_dim1: {min: 6, max: 6}")


def _residual_model(path: Path) -> Path:
    """Dense layers whose output is added to another computed tensor (a residual), as a ResNet's
    identity shortcut adds to a conv's output: never a bias."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), name) for name in ("w1", "w2")
    ]
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),  # a real bias: TF.js may fuse it
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Add", ["m", "x"], ["y"]),  # the residual
    ]
    graph = helper.make_graph(nodes, "residual", [x], [y], [*weights, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_tfjs_keeps_a_residual_add_out_of_the_matmul_bias(engine: Engine, tmp_path: Path) -> None:
    """tensorflowjs turned every Add after a MatMul/Conv2D into a BiasAdd, whatever the other
    operand, and TF.js then refused the fused op ("only supports rank-1 bias")."""
    source = _residual_model(tmp_path / "residual.onnx")
    result = run_targets(
        engine, source, ["tfjs"], tmp_path / "run", {"inputs": {"x": {"low": -1, "high": 1}}}
    )
    report = result.reports["tfjs"]
    assert report.status is Status.PASSED, report.error

    topology = json.loads((result.artifact_dirs["tfjs"] / "model.json").read_text())["modelTopology"]
    assert any(node["op"] in ("Add", "AddV2") for node in topology["node"])  # the residual stays an Add


def test_only_an_add_of_a_rank_1_constant_becomes_a_bias() -> None:
    import tensorflow as tf

    from exporters.savedmodel2tfjs import bias_adds_of_constants

    @tf.function(input_signature=[tf.TensorSpec([2, 8], tf.float32)])
    def dense(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weight = tf.constant(np.ones((8, 8), np.float32))
        biased = tf.add(tf.matmul(x, weight), tf.constant(np.ones(8, np.float32)), name="biased")
        residual = tf.add(tf.matmul(x, weight), x, name="residual")
        return biased, residual

    graph_def = bias_adds_of_constants(dense.get_concrete_function().graph.as_graph_def())
    ops = {node.name: node.op for node in graph_def.node}
    assert ops["biased"] == "BiasAdd" and ops["residual"] in ("Add", "AddV2")


def test_a_grouped_conv_with_one_channel_per_group_becomes_a_depthwise_conv() -> None:
    """onnx2tf writes some depthwise convs as grouped Conv2D (filter depth 1), which TF.js cannot
    run ("depth of input (32) must match input depth for filter 1"); a single-channel conv stays."""
    import tensorflow as tf

    from exporters.savedmodel2tfjs import grouped_convs_as_depthwise

    rng = np.random.default_rng(0)
    grouped_kernel = tf.constant(rng.standard_normal((3, 3, 1, 8)).astype(np.float32))  # 4 groups, 2 each
    gray_kernel = tf.constant(rng.standard_normal((3, 3, 1, 5)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 6, 6, 4]), tf.TensorSpec([1, 6, 6, 1])])
    def convs(x: tf.Tensor, gray: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pads = [[0, 0], [1, 1], [1, 1], [0, 0]]
        grouped = tf.nn.conv2d(x, grouped_kernel, strides=2, padding=pads)
        again = tf.nn.conv2d(x * 2.0, grouped_kernel, strides=2, padding=pads)  # the same filter
        return tf.identity(grouped + again, name="grouped"), tf.identity(
            tf.nn.conv2d(gray, gray_kernel, strides=1, padding="SAME"), name="single"
        )

    graph_def = convs.get_concrete_function().graph.as_graph_def()
    ops_before = {node.name: node.op for node in graph_def.node}
    x = rng.standard_normal((1, 6, 6, 4)).astype(np.float32)
    gray = rng.standard_normal((1, 6, 6, 1)).astype(np.float32)

    def run(graph: object) -> list[np.ndarray]:
        fn = tf.compat.v1.wrap_function(
            lambda a, b: tf.graph_util.import_graph_def(
                graph, {"x:0": a, "gray:0": b}, ["grouped:0", "single:0"], name=""
            ),
            [tf.TensorSpec([1, 6, 6, 4]), tf.TensorSpec([1, 6, 6, 1])],
        )
        return [t.numpy() for t in fn(tf.constant(x), tf.constant(gray))]

    before = run(graph_def)
    rewritten = grouped_convs_as_depthwise(graph_def)
    convs_after = sorted(n.op for n in rewritten.node if "Conv" in n.op)
    assert sorted(op for op in ops_before.values() if "Conv" in op) == ["Conv2D"] * 3
    assert convs_after == ["Conv2D", "DepthwiseConv2dNative", "DepthwiseConv2dNative"]
    for got, want in zip(run(rewritten), before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _rate_switch_model(path: Path) -> Path:
    """One network per sample rate behind an If on the rate input, constants made inside the
    branches (as spox writes Silero VAD), and an If on a size (torch's conditional squeeze)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    rate = helper.make_tensor_value_info("rate", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])

    def branch(name: str, factor: float) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, ["n", 4])
        nodes = [
            helper.make_node(
                "Constant", [], [f"{name}_k"], value=numpy_helper.from_array(np.float32(factor))
            ),
            helper.make_node("Mul", ["x", f"{name}_k"], [f"{name}_out"]),
        ]
        return helper.make_graph(nodes, name, [], [out])

    expected = numpy_helper.from_array(np.array(16000, dtype=np.int64), "expected")
    width_axis = numpy_helper.from_array(np.array(1, dtype=np.int64), "width_axis")
    four = numpy_helper.from_array(np.array(4, dtype=np.int64), "four")
    nodes = [
        helper.make_node("Equal", ["rate", "expected"], ["is_16k"]),
        helper.make_node(
            "If", ["is_16k"], ["scaled"], then_branch=branch("k16", 2.0), else_branch=branch("k8", 3.0)
        ),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "width_axis"], ["width"]),
        helper.make_node("Equal", ["width", "four"], ["is_four"]),
        helper.make_node(
            "If",
            ["is_four"],
            ["y"],
            then_branch=_identity_branch("scaled", "a"),
            else_branch=_identity_branch("x", "b"),
        ),
    ]
    graph = helper.make_graph(nodes, "rates", [x, rate], [y], [expected, width_axis, four])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _identity_branch(source: str, name: str) -> onnx.GraphProto:
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, ["n", 4])
    return helper.make_graph([helper.make_node("Identity", [source], [f"{name}_out"])], name, [], [out])


def test_an_if_on_a_fixed_input_keeps_only_its_branch_for_tfjs(engine: Engine, tmp_path: Path) -> None:
    """The spec's `value:` is folded into the graph for onnx2tf, and every If whose condition is
    then a constant (on the rate, on a size) becomes the branch it takes."""
    source = _rate_switch_model(tmp_path / "rates.onnx")
    spec = {
        "inputs": {"x": {"low": -1, "high": 1}, "rate": {"value": 16000}},
        "dims": {"n": {"min": 1, "max": 3}},
    }
    result = run_targets(engine, source, ["tfjs"], tmp_path / "run", spec)
    report = result.reports["tfjs"]
    assert report.status is Status.PASSED, report.error
    assert any("If node(s) with a constant condition" in n for n in report.notes), report.notes
    assert report.metrics.cosine is not None and report.metrics.cosine > 0.99999


def test_constant_ifs_inline_without_changing_the_values(tmp_path: Path) -> None:
    import onnxruntime as ort

    from exporters.onnx_rewrites import constant_ifs_inlined, inputs_as_constants

    model = onnx.load(str(_rate_switch_model(tmp_path / "rates.onnx")))
    feeds = {"x": np.arange(8, dtype=np.float32).reshape(2, 4), "rate": np.array(16000, dtype=np.int64)}

    def run(m: onnx.ModelProto) -> np.ndarray:
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, feeds
        )[0]

    before = run(model)
    assert inputs_as_constants(model, {"rate": 16000}) == 1
    assert constant_ifs_inlined(model) == 1  # the rate's If; the size's needs the sizes
    assert constant_ifs_inlined(model, {"x": [2, 4], "rate": []}) == 1
    assert not any(n.op_type == "If" for n in model.graph.node)
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(run(model), before)
    np.testing.assert_array_equal(before, feeds["x"] * 2)


def _bidirectional_lstm(path: Path) -> Path:
    """A bidirectional LSTM without initial states (zeros, ONNX's default), as onnxsim leaves
    torch.onnx's computed zero states (ddddocr's recogniser) and as other exporters write it."""
    rng = np.random.default_rng(0)
    hidden, features = 6, 5
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 7, features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [7, 2, "batch", hidden])
    arrays = {
        "w": rng.standard_normal((2, 4 * hidden, features)),
        "r": rng.standard_normal((2, 4 * hidden, hidden)),
        "b": rng.standard_normal((2, 8 * hidden)),
    }
    initializers = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    nodes = [
        helper.make_node("Transpose", ["x"], ["steps"], perm=[1, 0, 2]),  # time-major for the LSTM
        helper.make_node(
            "LSTM", ["steps", "w", "r", "b"], ["y"], direction="bidirectional", hidden_size=hidden
        ),
    ]
    graph = helper.make_graph(nodes, "lstm", [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_a_bidirectional_lstm_without_initial_states_converts_at_a_fixed_size(
    engine: Engine, tmp_path: Path
) -> None:
    """onnx2tf reads a bidirectional LSTM's initial state whether or not there is one; at the
    fixed size the zeros are written out as constants."""
    source = _bidirectional_lstm(tmp_path / "lstm.onnx")
    spec = {"inputs": {"x": {"low": -1, "high": 1}}, "dims": {"batch": {"min": 1, "max": 2}}}
    result = run_targets(engine, source, ["tfjs"], tmp_path / "run", spec)
    report = result.reports["tfjs"]
    assert report.status is Status.PASSED, report.error
    assert any(n.startswith("inputs fixed at") for n in report.notes), report.notes
