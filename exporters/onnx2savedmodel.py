"""ONNX model -> TensorFlow SavedModel with onnx2tf, keeping NCHW inputs NCHW."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shipyard.errors import one_line
from shipyard.saved_model import SIGNATURE_KEY

__all__ = ["SavedModelOptions", "convert_to_saved_model"]


class SavedModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Ops onnx2tf rewrites into primitives TF.js has (TF.js has no Erf, which exact GELU uses).
    pseudo_ops: list[str] = Field(
        default=["Erf"], description="ONNX ops onnx2tf replaces with equivalent primitives"
    )


def _write_saved_model(model: object, input_names: list[str], out_dir: Path) -> None:
    """Save the Keras model's serving signature under the ONNX input names, as onnx2tf's own
    `-osd` mode does.

    onnx2tf would also convert to .tflite twice (float32 and float16) while saving; nobody
    downstream uses those, so the model is saved here instead.
    """
    import tensorflow as tf
    import tf_keras

    archive = tf_keras.export.ExportArchive()
    archive.add_endpoint(
        name=SIGNATURE_KEY,
        fn=lambda *inputs: model(inputs),  # type: ignore[operator]
        input_signature=[
            tf.TensorSpec(t.shape, t.dtype, name)
            for t, name in zip(model.inputs, input_names, strict=True)  # type: ignore[attr-defined]
        ],
    )
    with contextlib.redirect_stdout(io.StringIO()):  # a long listing of captured tensors
        archive.write_out(str(out_dir))


def _run_onnx2tf(
    onnx_path: Path, keep_layout_inputs: list[str], pseudo_ops: list[str], work_dir: Path
) -> Any:
    """onnx2tf's Keras model of the file; its console goes to the step's log."""
    import onnx2tf

    console = io.StringIO()
    try:
        with contextlib.redirect_stdout(console):
            return onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(work_dir / "onnx2tf"),
                keep_ncw_or_nchw_or_ncdhw_input_names=keep_layout_inputs or None,
                replace_to_pseudo_operators=pseudo_ops or None,
                output_signaturedefs=True,  # names valid in a SavedModel signature
                disable_model_save=True,
                non_verbose=True,
                not_use_onnxsim=True,  # the fixed-shape retry simplifies itself, with its shapes
            )
    except (Exception, SystemExit) as exc:
        node = re.search(r"onnx_op_name: (\S+)", console.getvalue())
        where = f" at ONNX node {node.group(1)}" if node else ""
        raise RuntimeError(f"onnx2tf{where}: {one_line(exc, 240)}") from exc
    finally:
        sys.stdout.write(console.getvalue())


def _baked_dims(keras_model: Any, outputs: dict[str, list[int | str]]) -> list[str]:
    """Outputs where onnx2tf fixed a dim the source leaves dynamic, as 'name[axis]=size'."""
    baked = []
    for tensor, (name, shape) in zip(keras_model.outputs, outputs.items(), strict=False):
        for axis, (got, want) in enumerate(zip(tensor.shape, shape, strict=False)):
            if isinstance(want, str) and got is not None:
                baked.append(f"{name}[{axis}]={got}")
    return baked


def _disagreement(keras_model: Any, onnx_path: Path, shapes: dict[str, list[int]]) -> str | None:
    """Why the Keras model does not compute what ONNX Runtime computes from the same ONNX file on
    seeded inputs of these shapes (None when it does).

    onnx2tf guesses layouts from dim sizes, and a size that equals another dim's (a sequence as
    long as the hidden size) can make it transpose the wrong axes without any error. This
    catches such a conversion before it is saved; validation against the source stays the gate.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    for value in (v for v in graph.input if v.name not in initializers):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = shapes[value.name]
        feeds[value.name] = (  # 0/1 for integer and bool inputs: valid ids, masks and indices alike
            rng.integers(0, 2, size=shape).astype(dtype)
            if dtype.kind in "iub"
            else rng.standard_normal(shape).astype(dtype)
        )
    expected = session.run(None, feeds)
    got = keras_model([feeds[v.name] for v in session.get_inputs()])
    got = got if isinstance(got, list | tuple) else [got]
    for value, want, have in zip(session.get_outputs(), expected, got, strict=True):
        have = np.asarray(have)
        if have.shape != want.shape:
            return f"output {value.name} has shape {list(have.shape)}, ONNX Runtime gives {list(want.shape)}"
        scale = float(np.linalg.norm(want)) or 1.0
        error = float(np.linalg.norm(have.astype(np.float64) - want)) / scale
        if not error <= 1e-3:  # NaN fails too
            return f"output {value.name} differs from ONNX Runtime's by {error:.3g} (relative L2) at {shapes}"
    return None


def _convert_checked(
    onnx_path: Path, shapes: dict[str, list[int]], outputs: dict[str, list[int | str]], **options: Any
) -> Any:
    """onnx2tf's Keras model, checked against ONNX Runtime at `shapes`; RuntimeError says why not."""
    keras_model = _run_onnx2tf(onnx_path, **options)
    if baked := _baked_dims(keras_model, outputs):
        raise RuntimeError(f"onnx2tf fixed dynamic output dims: {', '.join(baked)}")
    if why := _disagreement(keras_model, onnx_path, shapes):
        raise RuntimeError(f"onnx2tf's graph is wrong: {why}")
    return keras_model


def _fix_shapes(source: Path, shapes: dict[str, list[int]], out: Path) -> int:
    """Write `out`: `source` with its inputs fixed at `shapes` and the shape arithmetic folded
    away (onnxsim). Returns how many GatherND became Gather once their indices were constants.
    LSTMs get their zero initial states back (onnxsim drops them; onnx2tf needs them)."""
    import onnx
    import onnxsim

    from exporters.onnx_rewrites import (
        constant_ifs_inlined,
        gather_nd_as_gather,
        lstm_initial_states_explicit,
    )

    model = onnx.load(str(source))
    constant_ifs_inlined(model, shapes)  # conditions on sizes: onnxsim leaves If nodes in place
    model, checked = onnxsim.simplify(model, overwrite_input_shapes=shapes)
    if not checked:
        raise RuntimeError("onnxsim: the simplified graph's outputs differ from the original's")
    rewritten = gather_nd_as_gather(model)
    lstm_initial_states_explicit(model)
    onnx.save(model, str(out))
    return rewritten


def _first_fixed_size(
    onnx_path: Path, sizes: list[dict[str, list[int]]], dynamic_failure: str, **options: Any
) -> tuple[Any, dict[str, list[int]], str]:
    """The first of `sizes` at which the fixed-shape conversion is right: (model, size, note)."""
    import tf_keras

    failures = []
    for i, size in enumerate(sizes):
        tf_keras.backend.clear_session()  # drop the failed attempt's graph
        fixed = onnx_path.with_name(f"fixed-{i}.onnx")
        try:
            rewritten = _fix_shapes(onnx_path, size, fixed)
            keras_model = _convert_checked(fixed, size, outputs={}, **options)  # all fixed now
        except Exception as exc:  # onnxsim's and ONNX Runtime's own errors included
            failures.append(f"at {size}: {one_line(exc, 400)}")
            continue
        return keras_model, size, f"; {rewritten} GatherND rewritten as Gather" if rewritten else ""
    at_fixed = "with fixed input sizes: " + "; ".join(failures)
    raise RuntimeError(f"{dynamic_failure}; and {at_fixed}" if dynamic_failure else at_fixed)


def convert_to_saved_model(
    onnx_path: Path,
    out_dir: Path,
    keep_layout_inputs: list[str],
    pseudo_ops: list[str],
    work_dir: Path,
    sizes: list[dict[str, list[int]]],
    outputs: dict[str, list[int | str]],
    fixed_values: dict[str, float] | None = None,
) -> list[str]:
    """Write a SavedModel whose serving signature keeps the ONNX input/output names; returns notes.

    keep_layout_inputs: 3-D to 5-D inputs whose channels-first layout must stay (onnx2tf
    would otherwise make them NHWC, and would try to download calibration images).
    pseudo_ops: ops onnx2tf rewrites into equivalent primitives (e.g. Erf, which TF.js lacks).
    sizes: concrete input shapes, most wanted first. The conversion with dynamic dims is checked
    against ONNX Runtime at the first; when it fails (attention built from shape arithmetic,
    mostly), the inputs are fixed at each size in turn, and the SavedModel declares the first
    that converts right (a reader sees the narrower envelope there).
    outputs: the source's output shapes (dim names where dynamic), to catch baked dims.
    fixed_values: inputs that take one value (the spec's `value:`), folded into the graph so that
    an `If` on them (a sample rate) keeps only the branch taken; the input stays, unread.
    onnx_path is rewritten in place first (exporters.onnx_rewrites): give it a copy.
    """
    import onnx

    from exporters.onnx_rewrites import (
        casts_to_bool_as_compare,
        constant_ifs_inlined,
        inputs_as_constants,
        node_names_as_tf_scopes,
        split_grouped_convs,
        strided_depthwise_as_slice,
    )

    model = onnx.load(str(onnx_path))
    notes = []
    if fixed := inputs_as_constants(model, fixed_values or {}):
        notes.append(f"{fixed} input(s) with one value folded into the graph: {sorted(fixed_values or {})}")
    if inlined := constant_ifs_inlined(model):
        notes.append(f"{inlined} If node(s) with a constant condition replaced by the branch taken")
    if split := split_grouped_convs(model):
        notes.append(f"{split} grouped convolution(s) split into one per group (TF.js has no grouped conv2d)")
    if casts := casts_to_bool_as_compare(model):
        notes.append(f"{casts} cast(s) to bool written as x != 0 (TF.js wasm keeps the value when casting)")
    if strided := strided_depthwise_as_slice(model):
        notes.append(f"{strided} depthwise conv(s) with unequal strides run at stride 1, then sliced")
    if renamed := node_names_as_tf_scopes(model):
        notes.append(f"{renamed} node name(s) TensorFlow refuses as scopes renamed")
    if fixed or inlined or split or casts or strided or renamed:
        onnx.save(model, str(onnx_path))
    initializers = {i.name for i in model.graph.initializer}  # listed as inputs by some exporters
    input_names = [v.name for v in model.graph.input if v.name not in initializers]
    options = {"keep_layout_inputs": keep_layout_inputs, "pseudo_ops": pseudo_ops, "work_dir": work_dir}
    # onnx2tf renames what an If's branch reads from outside without renaming it there: an If left
    # (its condition known only at fixed sizes) goes straight to the fixed sizes, which fold it
    ifs_left = sum(n.op_type == "If" for n in model.graph.node)
    dynamic_failure = None
    if ifs_left:
        why = f"{ifs_left} If node(s) whose condition is known only at fixed sizes"
    else:
        try:
            keras_model = _convert_checked(onnx_path, sizes[0], outputs, **options)
        except RuntimeError as exc:
            if not any(_has_dynamic_dim(model, name) for name in input_names):
                raise
            why = dynamic_failure = str(exc)
    if ifs_left or dynamic_failure:
        keras_model, size, rewrites = _first_fixed_size(onnx_path, sizes, dynamic_failure or "", **options)
        notes.append(f"inputs fixed at {size}: with dynamic dims, {why}{rewrites}")
    _write_saved_model(keras_model, input_names, out_dir)
    if not (out_dir / "saved_model.pb").is_file():
        raise RuntimeError("the SavedModel was not written (no saved_model.pb)")
    (out_dir / "fingerprint.pb").unlink(missing_ok=True)  # random per save; nothing reads it
    return notes


def _has_dynamic_dim(model: Any, input_name: str) -> bool:
    value = next(v for v in model.graph.input if v.name == input_name)
    return any(not d.HasField("dim_value") for d in value.type.tensor_type.shape.dim)
