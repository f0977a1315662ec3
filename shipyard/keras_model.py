"""Read a Keras 3 model (.keras): its signature, and its outputs on given inputs (TensorFlow)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.errors import SourceError, one_line
from shipyard.signature import DynamicDim, Signature, TensorSpec, declared_shape

__all__ = ["KerasSource", "keras_signature", "load_keras", "run_keras"]


class KerasSource:
    """A Keras model loaded in safe mode."""

    def __init__(self, model: Any) -> None:
        self.model = model

    label = "a Keras"
    keeps_own_names = True

    def signature(self) -> Signature:
        return keras_signature(self)

    def run(self, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_keras(self, signature, inputs)


def load_keras(path: Path) -> KerasSource:
    """keras.saving.load_model with safe_mode=True: a Lambda layer or any other serialized Python
    code is refused without running it; so is a layer class Keras does not know."""
    import keras

    try:
        with tempfile.TemporaryDirectory(prefix="shipyard-keras-") as folder:
            named = Path(folder) / "model.keras"  # Keras reads a zip only under a .keras name
            named.symlink_to(path.resolve())  # (a stored upload is named by its digest)
            model = keras.saving.load_model(str(named), compile=False, safe_mode=True)
    except Exception as exc:  # an untrusted file: any failure to load is bad input, said in one line
        raise SourceError(f"{path} is not a loadable Keras model: {one_line(exc)}") from None
    if not getattr(model, "inputs", None) or not getattr(model, "outputs", None):
        raise SourceError(f"{path}: the model has no defined inputs (build it with keras.Input first)")
    return KerasSource(model)


def keras_signature(source: KerasSource) -> Signature:
    """Input names, dtypes and shapes as the model declares them (None dims are dynamic: `batch` on
    axis 0, else `<input>_dim<axis>`); outputs named as the model names them."""
    model = source.model
    dims: dict[str, DynamicDim] = {}

    inputs = []
    for t in model.inputs:
        shape = declared_shape(list(t.shape), t.name, dims)
        inputs.append(TensorSpec(name=t.name, dtype=str(np.dtype(t.dtype)), shape=shape))
    output_names = list(
        getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))]
    )
    outputs = []
    for name, t in zip(output_names, model.outputs, strict=True):
        shape = ["batch" if s is None and i == 0 and "batch" in dims else s for i, s in enumerate(t.shape)]
        shape = [s if s is not None else f"{name}_dim{i}" for i, s in enumerate(shape)]
        outputs.append(TensorSpec(name=name, dtype=str(np.dtype(t.dtype)), shape=shape))
    return Signature(inputs=inputs, outputs=outputs, dims=dims)


def run_keras(
    source: KerasSource, signature: Signature, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The model's outputs (TensorFlow, inference mode), keyed by the signature's output names."""
    args = [np.ascontiguousarray(inputs[t.name]) for t in signature.inputs]
    result = source.model(args if len(args) > 1 else args[0], training=False)
    if isinstance(result, dict):
        result = [result[t.name] for t in signature.outputs]
    flat = result if isinstance(result, list | tuple) else [result]
    return {t.name: np.asarray(r) for t, r in zip(signature.outputs, flat, strict=True)}
