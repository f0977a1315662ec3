"""TensorFlow SavedModel -> TF.js graph model (model.json + weight shards)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

WeightStorage = Literal["float16", "uint8"]

__all__ = [
    "WeightStorage",
    "bias_adds_of_constants",
    "convert_to_tfjs",
    "grouped_convs_as_depthwise",
    "input_shapes",
    "rewrite_model_json",
    "weight_bytes",
]

# tensorflowjs imports tensorflow_decision_forests unconditionally; its wheel pins an older
# TensorFlow, so an empty stand-in is enough for graph models without decision forests.
sys.modules.setdefault("tensorflow_decision_forests", types.ModuleType("tensorflow_decision_forests"))


def rewrite_model_json(model_json: Path, input_names: list[str], output_names: list[str]) -> None:
    """Key the signature's inputs and outputs by the model's tensor names; write canonical JSON.

    The SavedModel stores each input under the name TensorFlow allows (`input:0` as `input_0`)
    and onnx2tf's names outputs output_0, output_1, ... in order; web code should see the real
    names. tensorflowjs writes protobuf maps in a different order on every run, so keys are
    sorted: the same graph always gives the same bytes.
    """
    from shipyard.saved_model import signature_name

    doc = json.loads(model_json.read_text())
    stored = {signature_name(name): name for name in input_names}
    inputs = doc["signature"]["inputs"]  # keyed "name:0" when the graph's shapes are all fixed
    doc["signature"]["inputs"] = {
        stored.get(key.removesuffix(":0"), key.removesuffix(":0")): spec for key, spec in inputs.items()
    }
    outputs = doc["signature"]["outputs"]
    if set(outputs) != set(output_names):
        doc["signature"]["outputs"] = _outputs_by_name(outputs, output_names)
    model_json.write_text(json.dumps(doc, sort_keys=True))


_BIAS_PARENTS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def bias_adds_of_constants(graph_def: Any) -> Any:
    """tensorflowjs's `normalize_bias_add_op`, for Adds of a rank-1 constant only.

    Its own pass turns every Add after a lone MatMul/Conv2D into a BiasAdd whatever the other
    operand is, so a residual (a ResNet's identity shortcut, a transformer's skip) becomes the
    "bias" of a fused op that TF.js then refuses ("FusedConv2D only supports rank-1 bias").
    """
    nodes = {n.name: n for n in graph_def.node}
    consumers: dict[str, int] = {}
    for node in graph_def.node:
        for tensor in node.input:
            consumers[_node_name(tensor)] = consumers.get(_node_name(tensor), 0) + 1
    for node in graph_def.node:
        if node.op not in ("Add", "AddV2") or len(node.input) != 2:
            continue
        parent, other = (nodes.get(_node_name(t)) for t in node.input)
        if parent is None or parent.op not in _BIAS_PARENTS or consumers.get(parent.name) != 1:
            continue
        if other is None or other.op != "Const" or len(other.attr["value"].tensor.tensor_shape.dim) != 1:
            continue
        node.op = "BiasAdd"
        node.attr["data_format"].s = b"NHWC"
    return graph_def


def _static_input_channels(graph_def: Any, names: list[str]) -> dict[str, int | None]:
    """The last dim of each named node's first input, where TensorFlow knows it statically."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return {name: graph.get_operation_by_name(name).inputs[0].shape[-1] for name in names}


def grouped_convs_as_depthwise(graph_def: Any) -> Any:
    """Rewrite every grouped Conv2D with one input channel per group (a depthwise conv that
    onnx2tf wrote as a grouped Conv2D, which TF.js cannot run: "depth of input must match input
    depth for filter") as the DepthwiseConv2dNative it is: filter [kh, kw, 1, C*m] is filter
    [kh, kw, C, m], output channel c*m + k in both."""
    from tensorflow.python.framework import tensor_util

    nodes = {n.name: n for n in graph_def.node}

    def filter_of(node: Any) -> Any:
        found = nodes.get(_node_name(node.input[1])) if len(node.input) > 1 else None
        return found if found is not None and found.op == "Const" else None

    convs = [
        n
        for n in graph_def.node
        if n.op == "Conv2D"
        and ("data_format" not in n.attr or n.attr["data_format"].s == b"NHWC")
        and (weights := filter_of(n)) is not None
        and [d.size for d in weights.attr["value"].tensor.tensor_shape.dim][2:3] == [1]
    ]
    if not convs:
        return graph_def
    channels = _static_input_channels(graph_def, [n.name for n in convs])
    made: dict[tuple[str, int], str] = {}  # (filter, depth) -> its depthwise filter (shared filters)
    for node in convs:
        weights = filter_of(node)
        kernel = tensor_util.MakeNdarray(weights.attr["value"].tensor)
        depth = channels[node.name]
        if depth is None or depth <= 1 or kernel.shape[3] % depth:
            continue
        if (weights.name, depth) not in made:
            depthwise = graph_def.node.add()
            depthwise.CopyFrom(weights)
            depthwise.name = f"{weights.name}/as_depthwise_{depth}"
            reshaped = kernel.reshape(*kernel.shape[:2], depth, kernel.shape[3] // depth)
            depthwise.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(reshaped))
            made[weights.name, depth] = depthwise.name
        node.input[1] = made[weights.name, depth]
        node.op = "DepthwiseConv2dNative"
        if "use_cudnn_on_gpu" in node.attr:  # a Conv2D attribute DepthwiseConv2dNative lacks
            del node.attr["use_cudnn_on_gpu"]
    return graph_def


def _graph_rewrites(graph_def: Any) -> Any:
    """What tensorflowjs's `normalize_bias_add_op` step does here instead (see the two rewrites)."""
    return grouped_convs_as_depthwise(bias_adds_of_constants(graph_def))


@contextlib.contextmanager
def _tfjs_graph_rewrites() -> Iterator[None]:
    from tensorflowjs.converters import normalize_bias_add

    original = normalize_bias_add.normalize_bias_add_op
    normalize_bias_add.normalize_bias_add_op = _graph_rewrites
    try:
        yield
    finally:
        normalize_bias_add.normalize_bias_add_op = original


_IDENTITY = re.compile(r"Identity(?:_(\d+))?:0")


def _outputs_by_name(outputs: dict[str, Any], output_names: list[str]) -> dict[str, Any]:
    """model.json's outputs keyed by the model's output names, from the ways tensorflowjs keys
    them: by the names the signature stores (`probs:0` as `probs_0`); `output_0, output_1, ...`
    in order (a Keras model's list of outputs); or by the frozen graph's tensor names
    (`Identity_2:0` is the third output in the order TensorFlow flattens a dict of outputs:
    sorted by stored name)."""
    from shipyard.saved_model import signature_name

    stored = {signature_name(name): name for name in output_names}
    if set(outputs) == set(stored):
        return {stored[key]: spec for key, spec in outputs.items()}
    positional = [f"output_{i}" for i in range(len(output_names))]
    if set(outputs) == set(positional):
        return {name: outputs[key] for name, key in zip(output_names, positional, strict=True)}
    flattened = [stored[key] for key in sorted(stored)]
    indexes = [_IDENTITY.fullmatch(spec.get("name", "")) for spec in outputs.values()]
    if len(outputs) == len(output_names) and all(indexes):
        return {
            flattened[int(match.group(1) or 0)]: spec
            for match, spec in zip(indexes, outputs.values(), strict=True)
            if match is not None
        }
    raise ValueError(f"model.json outputs {sorted(outputs)} match neither {output_names} nor {positional}")


def convert_to_tfjs(
    saved_model: Path,
    out_dir: Path,
    input_names: list[str],
    output_names: list[str],
    weights: WeightStorage | None = None,
) -> list[Path]:
    """Convert the serving signature; returns model.json and its shard files. `weights` stores
    every float weight as float16 or uint8 (affine, per tensor); TF.js dequantizes them to
    float32 when it loads the model, so this shrinks the download, not the compute."""
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs

    from shipyard.saved_model import SIGNATURE_KEY

    with _tfjs_graph_rewrites():
        tfjs.convert_tf_saved_model(
            str(saved_model),
            str(out_dir),
            signature_def=SIGNATURE_KEY,
            saved_model_tags="serve",
            quantization_dtype_map={weights: True} if weights else None,
            strip_debug_ops=True,  # Assert and CheckNumerics (a SavedModel's checks) have no TF.js op
        )
    model_json = out_dir / "model.json"
    if not model_json.is_file():
        raise RuntimeError("tensorflowjs finished without writing model.json")
    rewrite_model_json(model_json, input_names, output_names)
    return [model_json, *sorted(out_dir.glob("*.bin"))]


_ITEM_BYTES = {"float32": 4, "int32": 4, "float16": 2, "uint8": 1, "int8": 1, "bool": 1, "int64": 8}


def weight_bytes(model_json: Path) -> tuple[int, int]:
    """(bytes the shards hold, bytes the same weights take as float32)."""
    stored = as_fp32 = 0
    for group in json.loads(model_json.read_text())["weightsManifest"]:
        for spec in group["weights"]:
            count = math.prod(spec["shape"])
            dtype = spec.get("quantization", {}).get("original_dtype", spec["dtype"])
            as_fp32 += count * _ITEM_BYTES.get(dtype, 4)
        stored += sum((model_json.parent / p).stat().st_size for p in group["paths"])
    return stored, as_fp32


def input_shapes(model_json: Path) -> dict[str, list[int | None]]:
    """The graph model's declared input shapes (None where a dim is dynamic)."""
    inputs = json.loads(model_json.read_text())["signature"]["inputs"]
    return {
        name: [None if int(d.get("size", -1)) < 0 else int(d["size"]) for d in spec["tensorShape"]["dim"]]
        for name, spec in inputs.items()
    }
