"""TensorFlow SavedModel -> float32 .tflite through the TFLite converter (builtin ops only)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["convert_saved_model_to_tflite"]


def convert_saved_model_to_tflite(saved_model: Path, path: Path) -> Path:
    """Convert the serving signature; LiteRT's builtin ops only, so the interpreter alone runs it
    (no TensorFlow Select ops, which a phone's LiteRT build does not have)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # the converter's own message names the ops it could not lower
        first = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:400]
        raise RuntimeError(f"TFLite converter: {first}") from exc
    path.write_bytes(flatbuffer)
    return path
