"""A TensorFlow SavedModel source: packed, unpacked safely, checked for unsafe ops, then read.

A SavedModel folder is packed into one deterministic tar when a run is checked, so that a
source is always one file (hashed, stored in the registry, replayed by the nightly). Archives
are unpacked only after every entry is checked: no path leaving the folder, no links, bounded
size. Before TensorFlow loads the graph, every node and function in it is checked for ops that
touch files or run Python (shipyard/saved_model_ops.py): such a model is refused, never run.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.archive import unpack_archive
from shipyard.errors import SourceError, one_line
from shipyard.saved_model_ops import check_ops
from shipyard.signature import DynamicDim, Signature, TensorSpec, declared_shape

__all__ = [
    "SIGNATURE_KEY",
    "SavedModelSource",
    "load_saved_model",
    "run_saved_model",
    "saved_model_signature",
    "signature_name",
    "signature_names",
    "unpack_saved_model",
]

SIGNATURE_KEY = "serving_default"


def signature_name(tensor_name: str) -> str:
    """The name a SavedModel signature stores for a tensor: TensorFlow keeps ASCII letters, digits
    and `_` (tf2onnx's `input:0` becomes `input_0`, torch's `input.1` becomes `input_1`), and an
    argument starts with a letter."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", tensor_name)
    return name if re.match(r"[A-Za-z]", name) else f"arg_{name}"


def signature_names(tensor_names: list[str]) -> list[str]:
    """signature_name of each; ValueError when two become one (`a:0` and `a_0`), which a
    signature cannot tell apart."""
    stored = [signature_name(n) for n in tensor_names]
    if len(set(stored)) < len(stored):
        clash = sorted({n for n, s in zip(tensor_names, stored, strict=True) if stored.count(s) > 1})
        raise ValueError(f"tensor names {clash} are one name in a TensorFlow signature; rename them")
    return stored


def unpack_saved_model(source: Path, dest: Path) -> Path:
    """Unpack the archive into `dest` after checking every entry; returns the SavedModel folder."""
    unpack_archive(source, dest)
    found = sorted(p.parent for p in dest.rglob("saved_model.pb"))
    if len(found) != 1:
        raise SourceError(f"{source}: expected one saved_model.pb, found {len(found)}")
    return found[0]


class SavedModelSource:
    """A checked SavedModel loaded by TensorFlow, with its serving function."""

    def __init__(self, folder: Path, loaded: Any, function: Any, unpacked: Any = None) -> None:
        self.folder = folder
        self.unpacked = unpacked  # the temporary folder it was unpacked into, removed with it
        self.loaded = loaded  # keeps the function's variables alive
        self.function = function

    label = "a SavedModel"
    keeps_own_names = True

    def signature(self) -> Signature:
        return saved_model_signature(self)

    def run(self, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_saved_model(self, signature, inputs)


def load_saved_model(source: Path) -> SavedModelSource:
    """Unpack (into a temporary folder), check the ops, then load with TensorFlow."""
    import tensorflow as tf

    unpacked = tempfile.TemporaryDirectory(prefix="shipyard-saved-model-")
    folder = unpack_saved_model(source, Path(unpacked.name))
    check_ops(folder)
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise SourceError(f"{source} is not a loadable SavedModel: {one_line(exc)}") from None
    signatures = getattr(loaded, "signatures", {})
    if SIGNATURE_KEY not in signatures:
        raise SourceError(f"{source}: the SavedModel has no {SIGNATURE_KEY!r} signature to serve")
    return SavedModelSource(folder, loaded, signatures[SIGNATURE_KEY], unpacked)


def saved_model_signature(source: SavedModelSource) -> Signature:
    """The serving signature's inputs (by name; None dims dynamic) and outputs (sorted by name)."""
    _, kwargs = source.function.structured_input_signature
    dims: dict[str, DynamicDim] = {}

    inputs = []
    for name in sorted(kwargs):
        spec = kwargs[name]
        if spec.shape.rank is None:
            raise SourceError(f"input {name} has no known rank")
        shape = declared_shape(spec.shape.as_list(), name, dims)
        inputs.append(TensorSpec(name=name, dtype=spec.dtype.name, shape=shape))
    outputs = []
    for name, spec in sorted(source.function.structured_outputs.items()):
        shape = [s if s is not None else ("batch" if i == 0 and "batch" in dims else f"{name}_dim{i}")
                 for i, s in enumerate(spec.shape.as_list())]  # fmt: skip
        outputs.append(TensorSpec(name=name, dtype=spec.dtype.name, shape=shape))
    return Signature(inputs=inputs, outputs=outputs, dims=dims)


def run_saved_model(
    source: SavedModelSource, signature: Signature, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The serving function's outputs, keyed by the signature's output names."""
    import tensorflow as tf

    result = source.function(**{t.name: tf.constant(inputs[t.name]) for t in signature.inputs})
    return {t.name: np.asarray(result[t.name]) for t in signature.outputs}
