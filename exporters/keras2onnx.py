"""Keras model (.keras) -> a single-file ONNX model through tf2onnx, keeping the Keras names."""

from __future__ import annotations

from pathlib import Path

from shipyard.signature import Signature

__all__ = ["export_onnx_from_keras"]


def export_onnx_from_keras(source: Path, signature: Signature, path: Path, opset: int) -> Path:
    """Write `path`; inputs keep the Keras names and layout (channels-last stays channels-last)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    from exporters.onnx_rewrites import erfc_as_erf
    from shipyard.keras_model import load_keras

    model = load_keras(source).model
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs]
    converted, _ = tf2onnx.convert.from_keras(model, input_signature=specs, opset=opset)
    erfc_as_erf(converted)
    known = {schema.name for schema in onnx.defs.get_all_schemas()}
    unknown = sorted({n.op_type for n in converted.graph.node if not n.domain and n.op_type not in known})
    if unknown:  # tf2onnx leaves TensorFlow ops it cannot map as they are
        raise RuntimeError(f"tf2onnx: no ONNX op for TensorFlow op(s) {', '.join(unknown)}")
    for value, spec in zip(converted.graph.output, signature.outputs, strict=True):
        value.name = _rename_uses(converted.graph, value.name, spec.name)
    onnx.save_model(converted, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path


def _rename_uses(graph: object, old: str, new: str) -> str:
    """Rename tensor `old` to `new` wherever the graph produces or uses it; returns `new`."""
    for node in graph.node:  # type: ignore[attr-defined]
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    return new
