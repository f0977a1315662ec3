"""Read an ONNX model: its signature, and its outputs on given inputs (ONNX Runtime)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.errors import SourceError
from shipyard.onnx_external import external_data_files, external_tensors, unpack_onnx_archive
from shipyard.signature import DynamicDim, Signature, TensorSpec, unranged_dim

__all__ = ["OnnxSource", "load_onnx", "load_onnx_archive", "onnx_dtype_name", "onnx_signature", "run_onnx"]


class OnnxSource:
    """A checked ONNX model and its ONNX Runtime session."""

    def __init__(self, model: Any, session: Any, unpacked: Any = None) -> None:
        self.model = model  # the graph; weights kept in external files are not loaded
        self.session = session
        self.unpacked = unpacked  # the temporary folder an archive was unpacked into, removed with it

    label = "an ONNX"
    keeps_own_names = True

    def signature(self) -> Signature:
        return onnx_signature(self)

    def run(self, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_onnx(self, signature, inputs)


def _check(path: Path, external_data: bool, shown: str) -> tuple[Any, bool]:
    """The model (graph only), and whether it keeps weights in external files."""
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # an untrusted file: any failure to parse is bad input
        raise SourceError(f"{shown} is not a loadable ONNX model ({type(exc).__name__})") from None
    external = external_tensors(model)
    if external and not external_data:  # a location would be read from wherever it points
        raise SourceError(
            f"{shown}: {len(external)} tensor(s) (e.g. {external[0].name[:60]!r}) keep their data in "
            "external files; upload the model's folder as a .zip or .tar (the .onnx and its data "
            "files beside it), or a single-file model (onnx.save(model, f, save_as_external_data=False))"
        )
    try:
        external_data_files(model, path)  # every location checked before the checker reads one
    except SourceError as exc:
        raise SourceError(f"{shown}: {exc}") from None
    try:  # by path when the weights are outside: the checker then reads them beside it
        onnx.checker.check_model(str(path) if external else model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SourceError(f"{shown} is not a valid ONNX model: {first}") from None
    return model, bool(external)


def load_onnx(
    path: Path, external_data: bool = False, unpacked: Any = None, shown: str | None = None
) -> OnnxSource:
    """The model after onnx.checker, with an ONNX Runtime session; a one-line SourceError if bad.

    `external_data`: the model may read data files beside it (it was unpacked from an archive
    into a folder of its own, `unpacked`, kept as long as the source); the model keeps only its
    graph in memory, ONNX Runtime reads the weights from the files (past 2 GB too). `shown`:
    how messages name the source (the archive, not the folder it was unpacked into)."""
    import onnxruntime as ort

    shown = shown or str(path)
    model, external = _check(path, external_data, shown)
    try:
        loaded = str(path) if external else model.SerializeToString()
        session = ort.InferenceSession(loaded, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SourceError(f"{shown}: ONNX Runtime cannot load it: {first}") from None
    return OnnxSource(model, session, unpacked)


def load_onnx_archive(source: Path) -> OnnxSource:
    """An ONNX model packed with its external data files: unpacked into a temporary folder (every
    entry and every data location checked), then loaded from there."""
    unpacked = tempfile.TemporaryDirectory(prefix="shipyard-onnx-")
    return load_onnx(unpack_onnx_archive(source, Path(unpacked.name)), True, unpacked, str(source))


def onnx_dtype_name(elem_type: int) -> str:
    """numpy's name for an ONNX element type (`1` -> `float32`); KeyError for one numpy lacks."""
    import onnx

    return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))


# What exporters write for "unknown" instead of a name: Paddle2ONNX `?` and `-1` (not names: no
# identifier) or a counter (`p2o.DynamicDimension.3`), tf2onnx `unk__12`, others `None`/`unknown`/
# `dynamic` (identifiers that name nothing).
# Read as names, all of a model's `?` dims would become one dim.
_DIM_NAME = re.compile(r"[A-Za-z_][\w.]*")
_NAMELESS = re.compile(
    r"none|null|unk(nown)?(__\d+)?|dyn(amic)?|(p2o\.)?dynamic_?dimension\.?\d*", re.IGNORECASE
)


def _dim_name(d: Any) -> str:
    """The dim's own name, or "" for an unnamed dim (no name, or a placeholder that is no name)."""
    named = str(d.dim_param or "").strip()
    return named if _DIM_NAME.fullmatch(named) and not _NAMELESS.fullmatch(named) else ""


def onnx_signature(source: OnnxSource) -> Signature:
    """Names, dtypes, shapes and dynamic dims as the graph declares them (a named dim is one dim
    wherever it appears; an unnamed one, placeholders such as `?`, `-1` or `unk__3` and negative
    sizes included, is `<input>_dim<axis>` of its own, or `batch` first on axis 0)."""
    graph = source.model.graph
    initializers = {i.name for i in graph.initializer}
    dims: dict[str, DynamicDim] = {}

    def dim_of(d: Any, tensor: str, axis: int, is_input: bool) -> int | str:
        if d.HasField("dim_value") and d.dim_value >= 0:
            return int(d.dim_value)
        named = _dim_name(d)
        if not is_input:
            return named if named in dims else named or f"{tensor}_dim{axis}"
        return unranged_dim(
            dims, named or ("batch" if axis == 0 and "batch" not in dims else f"{tensor}_dim{axis}")
        )

    def spec(value: Any, is_input: bool) -> TensorSpec:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
            role = "input" if is_input else "output"
            raise SourceError(f"{role} {value.name} is not a tensor of known rank")
        shape = [dim_of(d, value.name, i, is_input) for i, d in enumerate(tensor.shape.dim)]
        return TensorSpec(name=value.name, dtype=onnx_dtype_name(tensor.elem_type), shape=shape)

    inputs = [spec(v, True) for v in graph.input if v.name not in initializers]
    outputs = [spec(v, False) for v in graph.output]
    return Signature(inputs=inputs, outputs=outputs, dims=dims)


def run_onnx(
    source: OnnxSource, signature: Signature, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """ONNX Runtime's outputs, keyed by the signature's output names."""
    feeds = {t.name: np.ascontiguousarray(inputs[t.name]) for t in signature.inputs}
    results = source.session.run([t.name for t in signature.outputs], feeds)
    return {t.name: np.asarray(r) for t, r in zip(signature.outputs, results, strict=True)}
