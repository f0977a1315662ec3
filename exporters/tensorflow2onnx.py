"""Keras model or TensorFlow SavedModel -> a single-file ONNX model through tf2onnx.

Inputs keep the source's names and layout (channels-last stays channels-last); outputs are
named as the source's signature names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporters.torch2onnx import OnnxExport
from shipyard.signature import Signature

__all__ = ["export_onnx_from_keras", "export_onnx_from_saved_model"]


def export_onnx_from_keras(source: Path, signature: Signature, path: Path, opset: int) -> OnnxExport:
    import tensorflow as tf
    import tf2onnx

    from shipyard.keras_model import load_keras

    model = load_keras(source).model
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs]

    # Traced as a plain function: tf2onnx's from_keras looks up the model's own Keras tensors by
    # name and fails on a Sequential's (KeyError: 'keras_tensor_9').
    def call(*inputs: Any) -> Any:
        return model(list(inputs) if len(inputs) > 1 else inputs[0])

    converted, _ = tf2onnx.convert.from_function(tf.function(call), input_signature=specs, opset=opset)
    return _finish(converted, signature, path)


def export_onnx_from_saved_model(
    saved_model: Path, signature: Signature, path: Path, opset: int
) -> OnnxExport:
    """From the `serving_default` signature, frozen as `python -m tf2onnx.convert --saved-model`
    freezes it, inputs and outputs named by the signature's keys.

    Calling the restored signature inside a new tf.function (tf2onnx's from_function) left the
    tensors that signature captures (a CQT's kernels, a lookup table) as extra graph inputs."""
    from tf2onnx import convert, tf_loader

    from shipyard.saved_model import SIGNATURE_KEY

    graph_def, inputs, outputs, _, renames = tf_loader.from_saved_model(
        str(saved_model),
        None,
        None,
        tag="serve",
        signatures=[SIGNATURE_KEY],
        return_initialized_tables=True,
        return_tensors_to_rename=True,
    )
    converted, _ = convert.from_graph_def(
        graph_def, input_names=inputs, output_names=outputs, opset=opset, tensors_to_rename=renames
    )
    return _finish(converted, signature, path)


def _finish(converted: Any, signature: Signature, path: Path) -> OnnxExport:
    """Rewrite what tf2onnx leaves unmapped, name the outputs, save and check the file."""
    import onnx

    from exporters.onnx_rewrites import erfc_as_erf

    erfc_as_erf(converted)  # exact GELU's Erfc has no ONNX op
    known = {schema.name for schema in onnx.defs.get_all_schemas()}
    unknown = sorted({n.op_type for n in converted.graph.node if not n.domain and n.op_type not in known})
    if unknown:  # tf2onnx leaves TensorFlow ops it cannot map as they are
        raise RuntimeError(f"tf2onnx: no ONNX op for TensorFlow op(s) {', '.join(unknown)}")
    if {o.name for o in converted.graph.output} != set(signature.output_names()):  # Keras: by position
        for value, spec in zip(converted.graph.output, signature.outputs, strict=True):
            for node in converted.graph.node:
                node.output[:] = [spec.name if o == value.name else o for o in node.output]
                node.input[:] = [spec.name if i == value.name else i for i in node.input]
            value.name = spec.name
    onnx.save_model(converted, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return OnnxExport(path=path)
