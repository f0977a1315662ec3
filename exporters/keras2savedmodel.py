"""Keras model (.keras) -> TensorFlow SavedModel with a serving signature (Keras's own export)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["KerasSavedModelOptions", "export_saved_model"]


class KerasSavedModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    erfc_as_erf: bool = Field(
        default=False,
        description="Keras sources: trace TensorFlow's erfc (exact GELU) as 1 - erf, for runtimes "
        "without Erfc (TF.js); TFLite needs erfc to fuse its GELU",
    )


@contextlib.contextmanager
def _erfc_as_erf() -> Iterator[None]:
    """While tracing, TensorFlow's erfc (exact GELU uses it) is computed as 1 - erf."""
    from tensorflow.python.ops import math_ops

    real = math_ops.erfc

    def erfc(x: Any, name: str | None = None) -> Any:
        return 1.0 - math_ops.erf(x, name=name)

    math_ops.erfc = erfc
    try:
        yield
    finally:
        math_ops.erfc = real


def export_saved_model(source: Path, out_dir: Path, erfc_as_erf: bool) -> Path:
    """Write the SavedModel (`serving_default`, the model's input names, outputs output_0..)."""
    from shipyard.keras_model import load_keras

    model = load_keras(source).model
    tracing = _erfc_as_erf() if erfc_as_erf else contextlib.nullcontext()
    with tracing, contextlib.redirect_stdout(io.StringIO()):  # stdout: every captured variable
        model.export(str(out_dir), format="tf_saved_model", verbose=False)
    (out_dir / "fingerprint.pb").unlink(missing_ok=True)  # random per save; nothing reads it
    return out_dir
