"""TensorFlow SavedModel -> float32 .tflite through the TFLite converter (builtin ops only)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["convert_saved_model_to_tflite"]


def convert_saved_model_to_tflite(saved_model: Path, path: Path) -> Path:
    """Convert the serving signature; LiteRT's builtin ops only, so the interpreter alone runs it
    (no TensorFlow Select ops, which a phone's LiteRT build does not have)."""
    import tensorflow as tf

    from shipyard.errors import one_line
    from shipyard.saved_model import SIGNATURE_KEY

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE_KEY])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # the converter's own message names the ops it could not lower
        raise RuntimeError(f"TFLite converter: {one_line(exc, 400)}") from exc
    path.write_bytes(flatbuffer)
    return path
