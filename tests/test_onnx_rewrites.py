"""The ONNX rewrites made for onnx2tf and TF.js compute exactly what the original graph does."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporters.onnx_rewrites import (
    casts_to_bool_as_compare,
    erfc_as_erf,
    gather_nd_as_gather,
    split_grouped_convs,
)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[Any]:
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _model(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], initializers: list[Any]
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_cast_to_bool_becomes_a_comparison_with_the_same_values() -> None:
    model = _model(
        [helper.make_node("Cast", ["mask"], ["flags"], to=TensorProto.BOOL)],
        [helper.make_tensor_value_info("mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("flags", TensorProto.BOOL, ["b", "s"])],
        [],
    )
    mask = np.array([[0, 1, 2, 5, -3, 9], [7, 0, 0, 1, 4, -1]], dtype=np.int64)  # a mask of 2s and 5s
    before = _run(model, {"mask": mask})
    assert casts_to_bool_as_compare(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Equal", "Not"]
    after = _run(model, {"mask": mask})
    np.testing.assert_array_equal(after[0], before[0])
    assert after[0].tolist() == (mask != 0).tolist()


def test_gather_nd_with_constant_indices_becomes_an_exact_gather() -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 5, 4)).astype(np.float32)
    indices = np.array([[[0, 1], [2, -1]], [[-3, 4], [1, 0]]], dtype=np.int64)  # negative ones too
    model = _model(
        [helper.make_node("GatherND", ["data", "indices"], ["picked"])],
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [3, 5, 4])],
        [helper.make_tensor_value_info("picked", TensorProto.FLOAT, [2, 2, 4])],
        [numpy_helper.from_array(indices, "indices")],
    )
    before = _run(model, {"data": data})
    assert gather_nd_as_gather(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Reshape", "Gather"]
    after = _run(model, {"data": data})
    assert after[0].shape == (2, 2, 4)
    np.testing.assert_array_equal(after[0], before[0])


def test_gather_nd_over_a_dynamic_shape_is_left_alone() -> None:
    model = _model(
        [helper.make_node("GatherND", ["data", "indices"], ["picked"])],
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("picked", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([[0, 1]], dtype=np.int64), "indices")],
    )
    assert gather_nd_as_gather(model) == 0
    assert [n.op_type for n in model.graph.node] == ["GatherND"]


def test_grouped_conv_split_per_group_is_exact_up_to_summation_order() -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)  # 4 groups of 2 in, 2 out
    bias = rng.standard_normal(8).astype(np.float32)
    model = _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=4, pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    before = _run(model, {"x": x})
    assert split_grouped_convs(model) == 1
    assert sum(n.op_type == "Conv" for n in model.graph.node) == 4
    np.testing.assert_allclose(_run(model, {"x": x})[0], before[0], rtol=0, atol=1e-5)


def test_splitting_grouped_convs_keeps_what_a_branch_reads_from_outside() -> None:
    """The split drops weights no node reads any more; an If's branch reading an outer
    initializer (torch.onnx's Silero VAD) still reads it."""
    rng = np.random.default_rng(2)
    then_out = helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1, 4, 4, 4])
    else_out = helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, 4, 4, 4])
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], group=2, pads=[1, 1, 1, 1]),
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Greater", ["total", "zero"], ["positive"]),
            helper.make_node(
                "If",
                ["positive"],
                ["y"],
                then_branch=helper.make_graph(
                    [helper.make_node("Mul", ["c", "k"], ["then_out"])], "then", [], [then_out]
                ),
                else_branch=helper.make_graph(
                    [helper.make_node("Add", ["c", "k"], ["else_out"])], "else", [], [else_out]
                ),
            ),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(np.float32(2.0), "k"),
            numpy_helper.from_array(np.float32(0.0), "zero"),
        ],
    )
    x = rng.standard_normal((1, 4, 4, 4)).astype(np.float32)
    before = _run(model, {"x": x})[0]
    assert split_grouped_convs(model) == 1
    assert "k" in {i.name for i in model.graph.initializer}
    np.testing.assert_allclose(_run(model, {"x": x})[0], before, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("elem", "dtype"), [(TensorProto.FLOAT, np.float32), (TensorProto.FLOAT16, np.float16)]
)
def test_erfc_becomes_one_minus_erf_in_the_inputs_own_precision(elem: int, dtype: type) -> None:
    """Erfc is not an ONNX op (tf2onnx leaves it for exact GELU): after the rewrite the graph
    checks and runs, and the constant 1 has the element type of what it is subtracted from."""
    import math

    model = _model(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Erfc", ["h"], ["y"], name="gelu/erfc")],
        [helper.make_tensor_value_info("x", elem, [5])],
        [helper.make_tensor_value_info("y", elem, [5])],
        [],
    )
    assert erfc_as_erf(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Relu", "Erf", "Sub"]
    assert model.graph.initializer[0].data_type == elem
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0], dtype=dtype)
    (y,) = _run(model, {"x": x})
    expected = np.array([math.erfc(max(float(v), 0.0)) for v in x])
    np.testing.assert_allclose(
        y.astype(np.float64), expected, rtol=0, atol=1e-6 if dtype == np.float32 else 2e-3
    )


def test_node_names_tensorflow_refuses_become_scope_names_and_the_graph_is_unchanged() -> None:
    from exporters.onnx_rewrites import TF_SCOPE_NAME, node_names_as_tf_scopes

    model = _model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="Relu@0"),
            helper.make_node("Softmax", ["r"], ["s"], name="Softmax@0", axis=-1),
            helper.make_node("Identity", ["s"], ["y"], name="Softmax_0"),  # the name the first would take
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [],
    )
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    before = _run(model, {"x": x})
    assert node_names_as_tf_scopes(model) == 2
    names = [n.name for n in model.graph.node]
    assert all(TF_SCOPE_NAME.fullmatch(n) for n in names) and len(set(names)) == 3, names
    assert names[2] == "Softmax_0"
    np.testing.assert_array_equal(_run(model, {"x": x})[0], before[0])


@pytest.mark.parametrize("height", [9, 10])  # odd and even: the last row kept or not
def test_a_depthwise_conv_with_unequal_strides_becomes_stride_1_and_a_slice(height: int) -> None:
    from exporters.onnx_rewrites import strided_depthwise_as_slice

    rng = np.random.default_rng(0)
    weight = helper.make_node(  # a Constant node, as Paddle2ONNX writes weights
        "Constant",
        [],
        ["w"],
        value=numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32)),
    )
    conv = helper.make_node(
        "Conv", ["x", "w"], ["y"], group=4, strides=[2, 1], pads=[1, 1, 1, 1], name="Conv@2"
    )
    model = _model(
        [weight, conv],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, height, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, (height + 1) // 2, 7])],
        [],
    )
    x = rng.standard_normal((1, 4, height, 7)).astype(np.float32)
    before = _run(model, {"x": x})[0]
    assert strided_depthwise_as_slice(model) == 1
    after = _run(model, {"x": x})[0]
    assert after.shape == before.shape
    np.testing.assert_array_equal(after, before)
    assert [n.op_type for n in model.graph.node] == ["Constant", "Conv", "Slice"]


def test_slices_cut_only_the_axes_they_cut_in_ascending_order() -> None:
    """Whole slices become Identity; permuted axes and negative starts (tf2onnx folding a
    transpose into a strided slice) become ascending axes and resolved bounds; a strided slice
    stays as it is. The values never change."""
    from exporters.onnx_rewrites import slices_normalized

    def ints(name: str, values: list[int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(values, np.int64), name)

    model = _model(
        [
            helper.make_node("Slice", ["x", "zero3", "huge3"], ["a"]),  # tf2onnx's masked ends
            helper.make_node("Slice", ["a", "zero1", "five", "last"], ["b"]),  # ends at the size
            helper.make_node("Slice", ["b", "from_back", "int_max", "permuted"], ["c"]),  # axes 0, 2, 1
            helper.make_node("Slice", ["b", "zero1", "five", "last", "two"], ["d"]),  # strided: kept
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5])],
        [
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 3, 2]),
            helper.make_tensor_value_info("d", TensorProto.FLOAT, [2, 3, 3]),
        ],
        [
            ints("zero3", [0, 0, 0]),
            ints("huge3", [10**9, 2**31 - 1, 2**31 - 1]),
            ints("zero1", [0]),
            ints("five", [5]),
            ints("last", [-1]),
            ints("two", [2]),
            ints("from_back", [0, -2, 0]),
            ints("int_max", [2**31 - 1] * 3),
            ints("permuted", [0, 2, 1]),
        ],
    )
    x = np.arange(30, dtype=np.float32).reshape(2, 3, 5)
    before = _run(model, {"x": x})
    assert slices_normalized(model) == 3
    assert [n.op_type for n in model.graph.node] == ["Identity", "Identity", "Slice", "Slice"]
    bounds = {i.name: numpy_helper.to_array(i).tolist() for i in model.graph.initializer}
    cut = model.graph.node[2]
    assert [bounds[name] for name in cut.input[1:]] == [[3], [5], [2]]  # starts, ends, axes
    for got, want in zip(_run(model, {"x": x}), before, strict=True):
        np.testing.assert_array_equal(got, want)
    assert slices_normalized(model) == 0  # a second pass (the fixed-size retry) has nothing to do


def test_constant_nodes_become_initializers_with_the_same_values() -> None:
    from exporters.onnx_rewrites import constants_as_initializers

    three = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.float32(3.0)))
    model = _model(
        [three, helper.make_node("Add", ["x", "k"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [],
    )
    x = np.array([1.0, -2.5], np.float32)
    before = _run(model, {"x": x})[0]
    assert constants_as_initializers(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Add"]
    assert [i.name for i in model.graph.initializer] == ["k"]
    np.testing.assert_array_equal(_run(model, {"x": x})[0], before)


def test_dequantized_constant_weights_fold_to_the_same_floats() -> None:
    from exporters.onnx_rewrites import constant_dequantization_folded

    rng = np.random.default_rng(0)
    model = _model(
        [
            helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["w"], axis=0),
            helper.make_node("DequantizeLinear", ["x", "scale1", "zero1"], ["xf"]),  # an input's: kept
            helper.make_node("MatMul", ["xf", "w"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.INT8, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [
            numpy_helper.from_array(rng.integers(-127, 128, (4, 3)).astype(np.int8), "q"),
            numpy_helper.from_array(rng.uniform(0.001, 0.02, 4).astype(np.float32), "scale"),
            numpy_helper.from_array(np.array([0, 3, -2, 1], np.int8), "zero"),
            numpy_helper.from_array(np.float32(0.05), "scale1"),
            numpy_helper.from_array(np.int8(0), "zero1"),
        ],
    )
    x = rng.integers(-127, 128, (2, 4)).astype(np.int8)
    before = _run(model, {"x": x})[0]
    assert constant_dequantization_folded(model) == 1
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "MatMul"]
    np.testing.assert_array_equal(_run(model, {"x": x})[0], before)
