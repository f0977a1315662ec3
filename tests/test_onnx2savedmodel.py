"""Graphs written by other exporters that onnx2tf used to convert wrong, converted right: the
SavedModel computes what ONNX Runtime computes, in the source's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporters.onnx2savedmodel import ValueRange, convert_to_saved_model


def _saved(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _exported_convnet(path: Path, width: int) -> Path:
    """A conv net as Paddle2ONNX and tf2onnx --tflite write them: weights and a hard-swish's 3.0
    in Constant nodes, a pointwise conv with int8 weights behind a DequantizeLinear, and a Slice
    that takes its whole input (on a trailing dim of size 1 when `width` is 1)."""
    rng = np.random.default_rng(0)

    def constant(name: str, array: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))

    kernel_width, pad = (1, 0) if width == 1 else (3, 1)
    nodes = [
        constant("w1", (rng.standard_normal((8, 3, 3, kernel_width)) * 0.3).astype(np.float32)),
        constant("b1", rng.standard_normal((1, 8, 1, 1)).astype(np.float32)),
        constant("three", np.array(3.0, np.float32)),
        constant("six", np.array(6.0, np.float32)),
        helper.make_node("Conv", ["x", "w1"], ["c0"], pads=[1, pad, 1, pad]),
        helper.make_node("Add", ["c0", "b1"], ["c1"]),
        helper.make_node("Add", ["c1", "three"], ["shifted"]),
        helper.make_node("Relu", ["shifted"], ["r"]),
        helper.make_node("Min", ["r", "six"], ["r6"]),
        helper.make_node("Mul", ["c1", "r6"], ["scaled"]),
        helper.make_node("Div", ["scaled", "six"], ["h"]),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["w2"], axis=0),
        helper.make_node("Conv", ["h", "w2"], ["c2"]),  # 8 -> 8: a square 1x1 kernel
        helper.make_node("Slice", ["c2", "starts", "ends", "axes"], ["y"]),
    ]
    ends = [2**31 - 1] * 3 + [1] if width == 1 else [10**9] * 4
    initializers = [
        numpy_helper.from_array(rng.integers(-127, 128, size=(8, 8, 1, 1)).astype(np.int8), "wq"),
        numpy_helper.from_array((rng.uniform(0.5, 1.5, 8) / 127).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(8, np.int8), "w_zero"),
        numpy_helper.from_array(np.zeros(4, np.int64), "starts"),
        numpy_helper.from_array(np.array(ends, np.int64), "ends"),
        numpy_helper.from_array(np.arange(4, dtype=np.int64), "axes"),
    ]
    graph = helper.make_graph(
        nodes,
        "exported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, width])],
        initializers,
    )
    return _saved(graph, path)


@pytest.mark.parametrize("width", [1, 16])
def test_an_exported_convnet_converts_to_what_onnx_runtime_computes(tmp_path: Path, width: int) -> None:
    """Without the rewrites onnx2tf fails on the Constant scalar ("must be the output of a
    TensorFlow Layer. Found: 3.0"), takes the dequantized square kernel for an activation and
    transposes it (relative error 0.2), and cuts the channels to one at the whole Slice on the
    size-1 dim; its 4-D output comes channels-last and is turned back."""
    import tensorflow as tf

    source = _exported_convnet(tmp_path / "source.onnx", width)
    given = tmp_path / "model.onnx"
    given.write_bytes(source.read_bytes())
    shape = [1, 3, 16, width]
    notes = convert_to_saved_model(
        given,
        tmp_path / "saved",
        ["x"],
        ["Erf"],
        tmp_path,
        sizes=[{"x": shape}],
        outputs={"y": [1, 8, 16, width]},
        value_ranges={"x": ValueRange(-1.0, 1.0)},
    )
    assert any("dequantized constant weight" in n for n in notes), notes
    assert any("Slice(s) rewritten to cut only the axes they cut" in n for n in notes), notes
    assert any("transposed back from onnx2tf's channels-last layout" in n for n in notes), notes

    x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": x})
    serve = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    got = serve(x=tf.constant(x))["y"].numpy()
    assert got.shape == want.shape == (1, 8, 16, width)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def _stateful_lstm(path: Path) -> Path:
    """A streaming LSTM as Silero VAD writes it: the state input [2, batch, hidden] split into the
    LSTM's initial h and c, the new state stacked back as an output."""
    rng = np.random.default_rng(0)
    hidden, features = 16, 8

    def weights(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Gather", ["state", "zero"], ["h0"], axis=0),
        helper.make_node("Gather", ["state", "one"], ["c0"], axis=0),
        helper.make_node("Unsqueeze", ["h0", "axis0"], ["h0u"]),
        helper.make_node("Unsqueeze", ["c0", "axis0"], ["c0u"]),
        helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0u", "c0u"], ["", "h", "c"], hidden_size=hidden),
        helper.make_node("Concat", ["h", "c"], ["next_state"], axis=0),
        helper.make_node("Squeeze", ["h", "axis0"], ["features"]),
    ]
    initializers = [
        weights("W", (1, 4 * hidden, features)),
        weights("R", (1, 4 * hidden, hidden)),
        weights("B", (1, 8 * hidden)),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    graph = helper.make_graph(
        nodes,
        "streaming",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, features]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, hidden]),
        ],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, hidden]),
            helper.make_tensor_value_info("next_state", TensorProto.FLOAT, [2, 1, hidden]),
        ],
        initializers,
    )
    return _saved(graph, path)


def test_a_recurrent_state_input_keeps_its_shape_when_channels_last_breaks_the_lstm(tmp_path: Path) -> None:
    """Made channels-last inside the graph, the state no longer fits the LSTM cell ("initial_state
    ... not compatible with cell.state_size"); the retry keeps the inputs' shapes, and the stacked
    state comes out with its axes turned back."""
    import tensorflow as tf

    source = _stateful_lstm(tmp_path / "source.onnx")
    given = tmp_path / "model.onnx"
    given.write_bytes(source.read_bytes())
    sizes = {"x": [5, 1, 8], "state": [2, 1, 16]}
    notes = convert_to_saved_model(
        given,
        tmp_path / "saved",
        ["x", "state"],
        ["Erf"],
        tmp_path,
        sizes=[sizes],
        outputs={"features": [1, 16], "next_state": [2, 1, 16]},
        value_ranges={"x": ValueRange(-1.0, 1.0), "state": ValueRange(-0.5, 0.5)},
    )
    assert any("keep their shape inside the graph" in n for n in notes), notes

    rng = np.random.default_rng(1)
    feeds = {"x": rng.uniform(-1, 1, sizes["x"]), "state": rng.uniform(-0.5, 0.5, sizes["state"])}
    feeds = {name: array.astype(np.float32) for name, array in feeds.items()}
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    want = dict(zip(["features", "next_state"], session.run(None, feeds), strict=True))
    serve = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    got = serve(**{name: tf.constant(array) for name, array in feeds.items()})
    assert set(got) == set(want)  # the signature keeps the ONNX names
    for name, tensor in got.items():
        assert tensor.shape == want[name].shape, name
        np.testing.assert_allclose(tensor.numpy(), want[name], rtol=1e-4, atol=1e-5)


def _position_bias(path: Path) -> Path:
    """A fixed-size graph as torch.onnx's TorchScript exporter writes T5's relative position
    bias: positions from Range, broadcast by an Expand whose shape comes from Shape(x)."""

    def ints(name: str, value: object) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(value, dtype=np.int64), name)

    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "at0", "at1"], ["batch"]),
        helper.make_node("Slice", ["s", "at1", "at2"], ["length"]),
        helper.make_node("Concat", ["batch", "length", "length", "at1"], ["shape"], axis=0),
        helper.make_node("Range", ["zero", "eleven", "step"], ["positions"]),
        helper.make_node("Cast", ["positions"], ["positions_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["positions_f", "axes"], ["grid"]),
        helper.make_node("Expand", ["grid", "shape"], ["bias"]),
        helper.make_node("Squeeze", ["bias", "last"], ["bias3"]),
        helper.make_node("MatMul", ["bias3", "x"], ["y"]),
    ]
    initializers = [
        ints("at0", [0]),
        ints("at1", [1]),
        ints("at2", [2]),
        ints("zero", 0),
        ints("eleven", 11),
        ints("step", 1),
        ints("axes", [0, 1, 3]),
        ints("last", [3]),
    ]
    graph = helper.make_graph(
        nodes,
        "position_bias",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 11, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 11, 4])],
        initializers,
    )
    return _saved(graph, path)


def test_a_fixed_size_graph_gets_its_shape_arithmetic_folded_when_onnx2tf_fails_on_it(
    tmp_path: Path,
) -> None:
    """Every dim fixed already, yet as exported onnx2tf fails at the Expand ("must be the output
    of a TensorFlow Layer. Found: [[[[0.] [1.] ..."): the fold that serves dynamic graphs at a
    fixed size (onnxsim) runs for it too, and the result matches ONNX Runtime."""
    import tensorflow as tf

    source = _position_bias(tmp_path / "source.onnx")
    given = tmp_path / "model.onnx"
    given.write_bytes(source.read_bytes())
    notes = convert_to_saved_model(
        given, tmp_path / "saved", [], [], tmp_path, sizes=[{"x": [3, 11, 4]}], outputs={"y": [3, 11, 4]}
    )
    assert any(n.startswith("shape arithmetic folded (onnxsim) at the graph's own sizes") for n in notes)
    x = np.random.default_rng(2).standard_normal((3, 11, 4)).astype(np.float32)
    (want,) = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"](x=tf.constant(x))["y"]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
