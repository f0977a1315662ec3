"""Exact rewrites of an ONNX graph, for converters and runtimes that lack an op.

Each rewrite computes the same values with ops every converter has; it changes only the order
of floating-point sums, never the math.
"""

from __future__ import annotations

from typing import Any

__all__ = ["split_grouped_convs"]


def _initializer_array(graph: Any, name: str) -> Any:
    from onnx import numpy_helper

    found = next((i for i in graph.initializer if i.name == name), None)
    return numpy_helper.to_array(found) if found is not None else None


def _split_one(graph: Any, node: Any, weight: Any, group: int) -> list[Any]:
    """Split -> one Conv per group -> Concat, replacing a grouped Conv."""
    import numpy as np
    from onnx import helper, numpy_helper

    bias = _initializer_array(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    per_group_out, per_group_in = weight.shape[0] // group, weight.shape[1]
    base = (node.name or node.output[0]).replace("/", "_")
    parts = [f"{base}__in{i}" for i in range(group)]
    split = numpy_helper.from_array(np.full(group, per_group_in, dtype=np.int64), f"{base}__split")
    graph.initializer.append(split)
    nodes = [helper.make_node("Split", [node.input[0], split.name], parts, axis=1, name=f"{base}__split")]
    attributes = [a for a in node.attribute if a.name != "group"]
    outputs = []
    for i in range(group):
        rows = slice(i * per_group_out, (i + 1) * per_group_out)
        inputs = [parts[i], f"{base}__w{i}"]
        graph.initializer.append(numpy_helper.from_array(weight[rows], inputs[1]))
        if bias is not None:
            inputs.append(f"{base}__b{i}")
            graph.initializer.append(numpy_helper.from_array(bias[rows], inputs[2]))
        conv = helper.make_node("Conv", inputs, [f"{base}__out{i}"], name=f"{base}__conv{i}")
        conv.attribute.extend(attributes)
        nodes.append(conv)
        outputs.append(conv.output[0])
    nodes.append(helper.make_node("Concat", outputs, list(node.output), axis=1, name=f"{base}__concat"))
    return nodes


def split_grouped_convs(model: Any) -> int:
    """Turn every grouped Conv (1 < group, not depthwise) with constant weights into one Conv per
    group (TF.js has no grouped conv2d); returns how many were split."""
    graph = model.graph
    nodes, split = [], 0
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = _initializer_array(graph, node.input[1]) if node.op_type == "Conv" and group > 1 else None
        if weight is None or (weight.shape[1] == 1 and weight.shape[0] == group):  # depthwise stays
            nodes.append(node)
            continue
        nodes += _split_one(graph, node, weight, group)
        split += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return split
