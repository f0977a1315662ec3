"""TensorFlow SavedModel -> TF.js graph model (model.json + weight shards)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

__all__ = ["convert_to_tfjs"]


def convert_to_tfjs(saved_model: Path, out_dir: Path) -> list[Path]:
    """Convert the serving signature; returns model.json and its shard files."""
    # tensorflowjs imports tensorflow_decision_forests unconditionally; its wheel pins an older
    # TensorFlow, so an empty stand-in is enough for graph models without decision forests.
    sys.modules.setdefault("tensorflow_decision_forests", types.ModuleType("tensorflow_decision_forests"))
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs

    tfjs.convert_tf_saved_model(
        str(saved_model), str(out_dir), signature_def="serving_default", saved_model_tags="serve"
    )
    model_json = out_dir / "model.json"
    if not model_json.is_file():
        raise RuntimeError("tensorflowjs finished without writing model.json")
    return [model_json, *sorted(out_dir.glob("*.bin"))]
