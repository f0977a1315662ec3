"""Exact rewrites of an ONNX graph, for converters and runtimes that lack an op.

Each rewrite computes the same values with ops every converter has; it changes only the order
of floating-point sums, never the math.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "casts_to_bool_as_compare",
    "constant_dequantization_folded",
    "constant_ifs_inlined",
    "constants_as_initializers",
    "erfc_as_erf",
    "gather_nd_as_gather",
    "inputs_as_constants",
    "lstm_initial_states_explicit",
    "node_names_as_tf_scopes",
    "slices_normalized",
    "split_grouped_convs",
    "strided_depthwise_as_slice",
]


def _initializer_array(graph: Any, name: str) -> Any:
    from onnx import numpy_helper

    found = next((i for i in graph.initializer if i.name == name), None)
    return numpy_helper.to_array(found) if found is not None else None


def _constant_arrays(graph: Any) -> dict[str, Any]:
    """Every initializer and Constant node output, by name."""
    from onnx import numpy_helper

    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return arrays


def _element_types(model: Any) -> dict[str, int]:
    """Every tensor's ONNX element type that shape inference knows."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model).graph
    types = {i.name: i.data_type for i in inferred.initializer}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        if value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def _static_shapes(model: Any) -> dict[str, list[int]]:
    """Tensors whose every dim ONNX shape inference knows as a number."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model).graph
    shapes = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = [d.dim_value for d in tensor.shape.dim]
    return shapes


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
    if not split:
        return 0
    del graph.node[:]
    graph.node.extend(nodes)
    used = _names_read(graph)  # a branch reads outer initializers too
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return split


def _names_read(graph: Any) -> set[str]:
    """Every tensor name `graph`, its subgraphs and its outputs read."""
    read = {v.name for v in graph.output}
    for node in graph.node:
        read.update(node.input)
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                read |= _names_read(sub)
    return read


def _flat_gather(node: Any, indices: Any, shape: list[int], graph: Any) -> list[Any]:
    """Reshape -> Gather computing what GatherND(data, indices) does, for constant indices."""
    import numpy as np
    from onnx import helper, numpy_helper

    depth = indices.shape[-1]
    dims = np.array(shape[:depth], dtype=np.int64)
    strides = np.array([int(np.prod(dims[i + 1 :])) for i in range(depth)], dtype=np.int64)
    flat = (np.mod(indices.astype(np.int64), dims) * strides).sum(axis=-1)  # mod: negative indices
    base = (node.name or node.output[0]).replace("/", "_")
    graph.initializer.append(numpy_helper.from_array(flat, f"{base}__flat_indices"))
    graph.initializer.append(
        numpy_helper.from_array(np.array([-1, *shape[depth:]], dtype=np.int64), f"{base}__flat_shape")
    )
    return [
        helper.make_node("Reshape", [node.input[0], f"{base}__flat_shape"], [f"{base}__flat"]),
        helper.make_node("Gather", [f"{base}__flat", f"{base}__flat_indices"], list(node.output), axis=0),
    ]


def gather_nd_as_gather(model: Any) -> int:
    """Turn every GatherND with constant indices over a tensor of known shape into a Gather on the
    flattened tensor (onnx2tf loses GatherND's layout on 4-D and wider indices, as in the padding
    masks of Hugging Face attention); returns how many were rewritten."""
    graph = model.graph
    constants, shapes = _constant_arrays(graph), _static_shapes(model)
    nodes, rewritten = [], 0
    for node in graph.node:
        batch_dims = next((a.i for a in node.attribute if a.name == "batch_dims"), 0)
        shape = shapes.get(node.input[0]) if node.op_type == "GatherND" else None
        if shape is None or batch_dims != 0 or node.input[1] not in constants:
            nodes.append(node)
            continue
        nodes += _flat_gather(node, constants[node.input[1]], shape, graph)
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def casts_to_bool_as_compare(model: Any) -> int:
    """Turn every Cast of a number to bool into Not(Equal(x, 0)); returns how many.

    TF.js's wasm backend casts to bool by keeping the value (a mask of 2s and 5s stays 2s and
    5s, and a later LogicalAnd then computes garbage); a comparison gives true 0/1 everywhere.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    types = _element_types(model)
    nodes, rewritten = [], 0
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        source = types.get(node.input[0]) if node.op_type == "Cast" else None
        if to != TensorProto.BOOL or source in (None, TensorProto.BOOL):
            nodes.append(node)
            continue
        base = (node.name or node.output[0]).replace("/", "_")
        zero = np.zeros((), dtype=helper.tensor_dtype_to_np_dtype(source))
        graph.initializer.append(numpy_helper.from_array(zero, f"{base}__zero"))
        nodes += [
            helper.make_node("Equal", [node.input[0], f"{base}__zero"], [f"{base}__is_zero"]),
            helper.make_node("Not", [f"{base}__is_zero"], list(node.output)),
        ]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def erfc_as_erf(model: Any) -> int:
    """Turn every TensorFlow `Erfc` node tf2onnx leaves in the graph (ONNX has no Erfc; exact GELU
    uses it) into 1 - Erf(x), the constant in x's own element type; returns how many."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    if not any(n.op_type == "Erfc" and not n.domain for n in graph.node):
        return 0
    nodes, rewritten = [], 0
    types = _element_types(model)
    for node in graph.node:
        if node.op_type != "Erfc" or node.domain:
            nodes.append(node)
            continue
        base = (node.name or node.output[0]).replace("/", "_")
        dtype = helper.tensor_dtype_to_np_dtype(types.get(node.input[0], onnx.TensorProto.FLOAT))
        graph.initializer.append(numpy_helper.from_array(np.ones((), dtype=dtype), f"{base}__one"))
        nodes += [
            helper.make_node("Erf", [node.input[0]], [f"{base}__erf"]),
            helper.make_node("Sub", [f"{base}__one", f"{base}__erf"], list(node.output)),
        ]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


TF_SCOPE_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")  # TensorFlow's op/scope name rule


def node_names_as_tf_scopes(model: Any) -> int:
    """Rename every node whose name TensorFlow refuses as a scope (Paddle2ONNX writes `Softmax@0`),
    unique within the graph; returns how many. Node names carry no meaning in ONNX: tensors
    are linked by their own names, which stay."""
    graph = model.graph
    taken = {n.name for n in graph.node}
    renamed = 0
    for node in graph.node:
        if not node.name or TF_SCOPE_NAME.fullmatch(node.name):
            continue
        base = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", node.name).lstrip("_-/\\>") or node.op_type
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        node.name = name
        renamed += 1
    return renamed


def strided_depthwise_as_slice(model: Any) -> int:
    """Turn every depthwise Conv whose strides differ by axis (Paddle's text models stride (2, 1))
    into the same Conv at stride 1 and a Slice keeping every s-th row and column; returns how many.

    TensorFlow's depthwise conv takes equal strides only, so onnx2tf writes a grouped Conv2D
    instead, which TF.js cannot run. Row i of a stride-s conv is row s*i of the stride-1 conv
    with the same pads, so the values are the same; the layer does s times the work.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = _constant_arrays(graph)
    nodes, rewritten = [], 0
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [])
        weight = constants.get(node.input[1]) if node.op_type == "Conv" and group > 1 else None
        if weight is None or weight.shape[1] != 1 or len(set(strides)) < 2:
            nodes.append(node)
            continue
        base = (node.name or node.output[0]).replace("/", "_")
        for attribute in node.attribute:
            if attribute.name == "strides":
                attribute.ints[:] = [1] * len(strides)
        dense = f"{base}__stride1"
        slice_of = {"starts": [0] * len(strides), "ends": [np.iinfo(np.int64).max] * len(strides)}
        slice_of |= {"axes": list(range(2, 2 + len(strides))), "steps": strides}
        names = []
        for key, values in slice_of.items():
            names.append(f"{base}__{key}")
            graph.initializer.append(numpy_helper.from_array(np.array(values, dtype=np.int64), names[-1]))
        outputs = list(node.output)
        node.output[:] = [dense]
        nodes += [node, helper.make_node("Slice", [dense, *names], outputs, name=f"{base}__strides")]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def _rename_uses(graph: Any, renames: dict[str, str]) -> None:
    """Rename tensors where `graph` and every subgraph in it read them."""
    for node in graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                _rename_uses(sub, renames)
    for value in graph.output:
        value.name = renames.get(value.name, value.name)


def inputs_as_constants(model: Any, values: dict[str, float]) -> int:
    """Feed each named input its one value (the spec's `value:`, a sample rate) as a constant
    the graph reads instead; the input stays declared, unread. Returns how many."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    renames = {}
    for value in graph.input:
        if value.name not in values:
            continue
        tensor = value.type.tensor_type
        shape = [d.dim_value for d in tensor.shape.dim]
        if any(not d.HasField("dim_value") for d in tensor.shape.dim):
            continue  # a fixed value of unknown shape: left to the runtime
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        constant = f"{value.name}__value"
        graph.initializer.append(numpy_helper.from_array(np.full(shape, values[value.name], dtype), constant))
        renames[value.name] = constant
    _rename_uses(graph, renames)
    return len(renames)


_FOLDABLE = {  # what an If's condition is computed with from sizes and fixed inputs
    *("Equal", "Not", "And", "Or", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"),
    *("Cast", "Identity", "Gather", "Squeeze", "Unsqueeze", "Slice", "Concat", "Shape", "Size"),
}


def _fold_constant_logic(graph: Any) -> dict[str, Any]:
    """Evaluate the comparisons, casts and index arithmetic whose inputs are all constants (what
    an If's condition is made of once its inputs are fixed), as initializers; returns every
    constant array by name."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    constants = _constant_arrays(graph)
    kept = []
    for node in graph.node:
        if node.op_type not in _FOLDABLE or node.domain or not all(i in constants for i in node.input):
            kept.append(node)
            continue
        evaluator = ReferenceEvaluator(node)
        for name, array in zip(
            node.output, evaluator.run(None, {i: constants[i] for i in node.input}), strict=True
        ):
            constants[name] = array
            graph.initializer.append(numpy_helper.from_array(array, name))
    del graph.node[:]
    graph.node.extend(kept)
    return constants


def _fix_input_shapes(model: Any, shapes: dict[str, list[int]]) -> None:
    for value in model.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name], strict=True):
                dim.Clear()
                dim.dim_value = size


# Ops whose output shape follows the values: a size measured on one input is no constant.
_DATA_DEPENDENT = {"NonZero", "Unique", "Compress", "NonMaxSuppression", "Loop", "Scan", "RandomNormalLike"}


def _measured_shapes(model: Any, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """Every top-level tensor's shape, measured by running ONNX Runtime once at the fixed sizes
    (shape inference loses sizes through a Slice with computed ends, an STFT's). Empty when a
    shape could follow the values."""
    import copy

    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    if any(n.op_type in _DATA_DEPENDENT for n in model.graph.node):
        return {}
    probe = copy.deepcopy(model)
    types = _element_types(probe)
    declared = {o.name for o in probe.graph.output}
    wanted = [o for n in probe.graph.node for o in n.output if o and o in types and o not in declared]
    probe.graph.output.extend(helper.make_tensor_value_info(name, types[name], None) for name in wanted)
    feeds = {
        value.name: np.zeros(
            shapes[value.name], helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        )
        for value in probe.graph.input
        if value.name in shapes
    }
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return {name: list(array.shape) for name, array in zip(names, session.run(None, feeds), strict=True)}


def _fold_shapes(model: Any, known: dict[str, list[int]]) -> None:
    """Shape and Size of tensors whose shape is known, as initializers."""
    import numpy as np
    from onnx import numpy_helper

    kept = []
    for node in model.graph.node:
        shape = known.get(node.input[0]) if node.op_type in ("Shape", "Size") and not node.domain else None
        if shape is None:
            kept.append(node)
            continue
        if node.op_type == "Size":
            array = np.array(int(np.prod(shape)), dtype=np.int64)
        else:
            ends = {a.name: a.i for a in node.attribute}
            array = np.array(shape[ends.get("start", 0) : ends.get("end", len(shape))], dtype=np.int64)
        model.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
    del model.graph.node[:]
    model.graph.node.extend(kept)


def _constant_if(graph: Any) -> tuple[Any, str] | None:
    """The first If whose condition is a constant once constant logic is folded, and the branch
    it takes; None when there is none."""
    constants = _fold_constant_logic(graph)
    node = next((n for n in graph.node if n.op_type == "If" and n.input[0] in constants), None)
    if node is None:
        return None
    return node, "then_branch" if bool(constants[node.input[0]].reshape(-1)[0]) else "else_branch"


def constant_ifs_inlined(model: Any, shapes: dict[str, list[int]] | None = None) -> int:
    """Replace every If whose condition is a constant with the nodes of the branch it takes
    (tensors made in the branch prefixed with the If's name, so they cannot clash); returns how
    many. With `shapes` (input name -> sizes) the inputs are fixed first and conditions on sizes
    fold too. onnx2tf converts a branch's constants into the wrong scope, and onnxsim renames
    tensors that branches read from outside without renaming them there."""
    from onnx import helper

    graph = model.graph
    inlined = 0
    if not any(n.op_type == "If" for n in graph.node):
        return inlined
    if shapes:
        _fix_input_shapes(model, shapes)
    while True:
        found = _constant_if(graph)
        if found is None and shapes and any(n.op_type == "If" for n in graph.node):
            # an If on a rank or a size (torch's conditional squeeze) is constant at fixed sizes
            _fold_shapes(model, {**shapes, **_measured_shapes(model, shapes)})
            found = _constant_if(graph)
        if found is None:
            return inlined
        node, taken = found
        branch = next(a.g for a in node.attribute if a.name == taken)
        prefix = f"{node.name or node.output[0]}__"
        made = [o for n in branch.node for o in n.output if o] + [i.name for i in branch.initializer]
        renames = {name: prefix + name for name in made}
        _rename_uses(branch, renames)
        for inner in branch.node:
            inner.output[:] = [renames.get(o, o) for o in inner.output]
            inner.name = prefix + inner.name if inner.name else ""
        for initializer in branch.initializer:
            initializer.name = renames[initializer.name]
        graph.initializer.extend(branch.initializer)
        position = list(graph.node).index(node)
        replacement = list(branch.node) + [
            helper.make_node("Identity", [out.name], [outer], name=f"{prefix}out{i}")
            for i, (out, outer) in enumerate(zip(branch.output, node.output, strict=True))
        ]
        nodes = list(graph.node)
        nodes[position : position + 1] = replacement
        del graph.node[:]
        graph.node.extend(nodes)
        inlined += 1


def lstm_initial_states_explicit(model: Any) -> int:
    """Give every LSTM without initial states explicit zero ones (ONNX's default), where its
    input's shape is static; returns how many. onnx2tf reads a bidirectional LSTM's initial state
    whether or not it has one, and onnxsim drops states that are zeros."""
    import numpy as np
    from onnx import numpy_helper

    if not any(n.op_type == "LSTM" for n in model.graph.node):
        return 0
    shapes = _static_shapes(model)
    constants = _constant_arrays(model.graph)
    written = 0
    for node in model.graph.node:
        inputs = list(node.input) + [""] * (7 - len(node.input))
        if node.op_type != "LSTM" or node.domain or inputs[5] or inputs[6] or node.input[0] not in shapes:
            continue
        attributes = {a.name: a for a in node.attribute}
        batch_first = "layout" in attributes and attributes["layout"].i == 1
        batch = shapes[node.input[0]][0 if batch_first else 1]
        hidden = attributes["hidden_size"].i
        directions = constants[node.input[1]].shape[0] if node.input[1] in constants else None
        if directions is None:
            continue
        zeros = np.zeros(
            (batch, directions, hidden) if batch_first else (directions, batch, hidden), np.float32
        )
        base = (node.name or node.output[0]).replace("/", "_")
        for index, state in ((5, "initial_h"), (6, "initial_c")):
            inputs[index] = f"{base}__{state}"
            model.graph.initializer.append(numpy_helper.from_array(zeros, inputs[index]))
        node.input[:] = inputs
        written += 1
    return written


# An end this large means "to the end of the axis" (tf2onnx writes 1e9 for a masked end); no
# tensor a converter handles has an axis that long.
_TO_THE_END = 2**30


def _unused_name(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`, ... : the first no tensor has; then taken."""
    found, n = name, 1
    while found in taken:
        n += 1
        found = f"{name}_{n}"
    taken.add(found)
    return found


def _normalized_slice(
    starts: list[int], ends: list[int], axes: list[int], shape: list[int] | None
) -> list[tuple[int, int, int]] | None:
    """(axis, start, end) for each axis the slice cuts, axes ascending and non-negative, starts
    and ends resolved where the size is known; None when a negative axis has no known rank."""
    rank = len(shape) if shape is not None else None
    cuts = []
    for axis, start, end in zip(axes, starts, ends, strict=True):
        if axis < 0:
            if rank is None:
                return None
            axis += rank
        size = shape[axis] if shape is not None else None
        if size is not None:
            start = min(max(start + size if start < 0 else start, 0), size)
            end = min(max(end + size if end < 0 else end, 0), size)
        if start == 0 and end >= (size if size is not None else _TO_THE_END):
            continue  # takes the whole axis
        cuts.append((axis, start, end))
    return sorted(cuts)


def slices_normalized(model: Any) -> int:
    """Rewrite every Slice with constant bounds and unit steps to cut only the axes it cuts, in
    ascending order, with non-negative bounds where sizes are known; one that cuts nothing
    becomes an Identity. Returns how many changed. tf2onnx writes slices that take their whole
    input (TF's strided_slice) and slices with permuted axes and negative starts (a transpose
    folded in); onnx2tf maps such axes to its channels-last layout wrongly (it cut the channels
    to one, or left a dim of 324 uncut)."""
    import numpy as np
    from onnx import numpy_helper

    if not any(n.op_type == "Slice" for n in model.graph.node):
        return 0
    constants = _constant_arrays(model.graph)
    shapes = _static_shapes(model)
    taken = _names_read(model.graph) | set(constants) | {o for n in model.graph.node for o in n.output}
    changed = 0
    for position, node in enumerate(model.graph.node):
        if node.op_type != "Slice" or node.domain or len(node.input) < 3:
            continue
        inputs = list(node.input) + [""] * (5 - len(node.input))
        bounds = [constants.get(name) if name else None for name in inputs[1:5]]
        starts, ends, axes, steps = bounds
        if starts is None or ends is None or (inputs[3] and axes is None) or (inputs[4] and steps is None):
            continue
        if steps is not None and not np.all(steps == 1):
            continue
        given = axes.tolist() if axes is not None else list(range(len(starts)))
        cuts = _normalized_slice(starts.tolist(), ends.tolist(), given, shapes.get(node.input[0]))
        if cuts is None:
            continue
        if not cuts:
            node.op_type = "Identity"
            node.input[:] = node.input[:1]
            del node.attribute[:]
            changed += 1
            continue
        if cuts == list(zip(given, starts.tolist(), ends.tolist(), strict=True)):
            continue  # already in that form
        base = f"{node.name or node.output[0]}_{position}".replace("/", "_")
        cut_axes, cut_starts, cut_ends = zip(*cuts, strict=True)
        names = []
        for suffix, values in (("starts", cut_starts), ("ends", cut_ends), ("axes", cut_axes)):
            names.append(_unused_name(f"{base}__{suffix}", taken))
            model.graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), names[-1]))
        node.input[:] = [node.input[0], *names]
        changed += 1
    return changed


def constants_as_initializers(model: Any) -> int:
    """Turn every top-level Constant node holding a tensor into an initializer; returns how many.
    onnx2tf takes a Constant node's scalar for a Python number, which its checks of the next op
    cannot feed to a Keras model (Paddle2ONNX writes its constants, a hard-swish's 3.0, as nodes)."""
    from onnx import TensorProto

    kept = []
    for node in model.graph.node:
        if node.op_type != "Constant" or node.domain or [a.name for a in node.attribute] != ["value"]:
            kept.append(node)
            continue
        tensor = TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        model.graph.initializer.append(tensor)
    turned = len(model.graph.node) - len(kept)
    if turned:
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return turned


def constant_dequantization_folded(model: Any) -> int:
    """Replace every DequantizeLinear of constants (the int8 weights of a model quantized for
    TFLite or by ONNX Runtime) with the float initializer it computes; returns how many. onnx2tf
    takes a Conv's weight that is not a constant for an activation and guesses its layout from
    its shape, which a square 1x1 kernel makes ambiguous."""
    import numpy as np
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    if not any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        return 0
    constants = _constant_arrays(model.graph)
    kept = []
    for node in model.graph.node:
        known = all(i in constants for i in node.input if i)
        if node.op_type != "DequantizeLinear" or node.domain or not known:
            kept.append(node)
            continue
        feeds = {i: constants[i] for i in node.input if i}
        try:
            [array] = ReferenceEvaluator(node).run(None, feeds)
        except Exception:  # a type the reference evaluator lacks (int4, fp4): the node stays
            kept.append(node)
            continue
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), node.output[0]))
    folded = len(model.graph.node) - len(kept)
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return folded
