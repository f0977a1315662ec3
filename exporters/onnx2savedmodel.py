"""ONNX model -> TensorFlow SavedModel with onnx2tf, keeping NCHW inputs NCHW."""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from shipyard.errors import one_line
from shipyard.saved_model import SIGNATURE_KEY, signature_names

__all__ = ["SavedModelOptions", "ValueRange", "convert_to_saved_model"]


class ValueRange(NamedTuple):
    """An input's value range in the spec (None: not given)."""

    low: float | None = None
    high: float | None = None


class _Converted(NamedTuple):
    keras_model: Any
    input_layouts: list[list[int] | None]  # the transpose from the source's layout, per input
    output_layouts: list[list[int] | None]  # the transpose back to the source's layout, per output
    shapes_kept: bool  # every input kept its shape inside the graph (not made channels-last)


class SavedModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Ops onnx2tf rewrites into primitives TF.js has (TF.js has no Erf, which exact GELU uses).
    pseudo_ops: list[str] = Field(
        default=["Erf"], description="ONNX ops onnx2tf replaces with equivalent primitives"
    )


def _write_saved_model(
    converted: _Converted, input_names: list[str], output_names: list[str], out_dir: Path
) -> None:
    """Save the Keras model's serving signature, its inputs and outputs in the source's layout and
    under the ONNX names (as a signature can store them: `input:0` as `input_0`).

    onnx2tf would also convert to .tflite twice (float32 and float16) while saving; nobody
    downstream uses those, so the model is saved here instead.
    """
    import tensorflow as tf
    import tf_keras

    model, takes, layouts, _ = converted
    stored_outputs = signature_names(output_names)

    def serve(*inputs: Any) -> dict[str, Any]:
        outputs = model([x if p is None else tf.transpose(x, p) for x, p in zip(inputs, takes, strict=True)])
        listed = outputs if isinstance(outputs, list | tuple) else [outputs]
        back = [o if p is None else tf.transpose(o, p) for o, p in zip(listed, layouts, strict=True)]
        return dict(zip(stored_outputs, back, strict=True))

    specs = []
    for tensor, name, perm in zip(model.inputs, signature_names(input_names), takes, strict=True):
        shape = list(tensor.shape)
        if perm is not None:  # the source's layout: axis j of the source is axis perm.index(j) here
            shape = [shape[perm.index(j)] for j in range(len(shape))]
        specs.append(tf.TensorSpec(shape, tensor.dtype, name))
    archive = tf_keras.export.ExportArchive()
    archive.add_endpoint(name=SIGNATURE_KEY, fn=serve, input_signature=specs)
    with contextlib.redirect_stdout(io.StringIO()):  # a long listing of captured tensors
        archive.write_out(str(out_dir))


def _run_onnx2tf(
    onnx_path: Path,
    keep_layout_inputs: list[str],
    pseudo_ops: list[str],
    work_dir: Path,
    kept_shapes: list[str] | None = None,
) -> Any:
    """onnx2tf's Keras model of the file; its console goes to the step's log. `kept_shapes`:
    inputs that keep their shape inside the graph too, not only at the signature (a 2-D audio
    frame as much as a 3-D state: onnx2tf also moves axes of tensors made from a 2-D input)."""
    import onnx2tf

    console = io.StringIO()
    try:
        with contextlib.redirect_stdout(console):
            return onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(work_dir / "onnx2tf"),
                keep_ncw_or_nchw_or_ncdhw_input_names=None if kept_shapes else keep_layout_inputs or None,
                keep_shape_absolutely_input_names=kept_shapes,
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


def _graph_inputs(graph: Any) -> list[Any]:
    """The graph's inputs in order (some exporters list initializers as inputs too)."""
    initializers = {i.name for i in graph.initializer}
    return [v for v in graph.input if v.name not in initializers]


def _baked_dims(
    keras_model: Any, outputs: dict[str, list[int | str]], layouts: list[list[int] | None]
) -> list[str]:
    """Outputs where onnx2tf fixed a dim the source leaves dynamic, as 'name[axis]=size'."""
    baked = []
    for tensor, (name, shape), perm in zip(keras_model.outputs, outputs.items(), layouts, strict=False):
        dims = list(tensor.shape) if perm is None else [tensor.shape[p] for p in perm]
        for axis, (got, want) in enumerate(zip(dims, shape, strict=False)):
            if isinstance(want, str) and got is not None:
                baked.append(f"{name}[{axis}]={got}")
    return baked


def _layouts_to_try(have: tuple[int, ...], want: tuple[int, ...]) -> list[list[int] | None]:
    """Transposes that could turn onnx2tf's output of shape `have` into the source's `want`:
    none; channels-last to channels-first (what onnx2tf does to 3-D to 5-D tensors); then every
    other permutation with the wanted shape (a stacked LSTM state whose axes it swapped)."""
    rank = len(have)
    if rank < 3 or rank > 5:
        return [None]
    channels_first = [0, rank - 1, *range(1, rank - 1)]
    others = [
        list(p)
        for p in itertools.permutations(range(rank))
        if list(p) not in (list(range(rank)), channels_first) and [have[i] for i in p] == list(want)
    ]
    return [None, channels_first, *others]


def _input_layouts(keras_model: Any, shapes: list[list[int]]) -> list[list[int] | None]:
    """For each input, the transpose that turns the source's layout into the one onnx2tf's Keras
    model takes (None: the same). onnx2tf can make an input channels-last even when told to keep
    it (an audio input [N, samples, 1] taken as [N, 1, samples])."""
    layouts: list[list[int] | None] = []
    for tensor, shape in zip(keras_model.inputs, shapes, strict=True):
        takes = list(tensor.shape)

        def fits(perm: list[int], takes: list[Any] = takes, shape: list[int] = shape) -> bool:
            return all(t is None or t == shape[p] for t, p in zip(takes, perm, strict=True))

        rank = len(shape)
        same = list(range(rank))
        if len(takes) != rank or rank < 3 or fits(same):  # a scalar it takes as [None] is fed as it is
            layouts.append(None)
            continue
        channels_last = [0, *range(2, rank), 1]
        if not fits(channels_last):
            raise RuntimeError(f"onnx2tf's graph takes an input of shape {takes} for the source's {shape}")
        layouts.append(channels_last)
    return layouts


def _output_layouts(
    keras_model: Any,
    onnx_path: Path,
    inputs: list[Any],
    shapes: dict[str, list[int]],
    ranges: dict[str, ValueRange],
    takes: list[list[int] | None],
) -> list[list[int] | None]:
    """For each output, the transpose that turns the Keras model's output into what ONNX Runtime
    computes from the same ONNX file on seeded inputs of these shapes and value ranges (None: as
    it is); RuntimeError says why no layout matches.

    onnx2tf gives a 3-D to 5-D output channels-last (a segmentation map [N, H, W, C] for the
    source's [N, C, H, W]), sometimes with other axes swapped; the serving signature turns it
    back. A transpose is taken only where it makes the values match on random data. It also
    guesses layouts from dim sizes, and a size that equals another dim's (a sequence as long as
    the hidden size) can make it transpose the wrong axes without any error. This catches such a
    conversion before it is saved; validation against the source stays the gate.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    from shipyard.variants import seeded_values

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for value in inputs:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        low, high = ranges.get(value.name, ValueRange())
        # 0/1 for integer inputs the spec gives no range: valid ids, masks and indices alike
        feeds[value.name] = seeded_values(rng, dtype, shapes[value.name], low, high, integer_high=1)
    expected = session.run(None, feeds)
    try:
        fed = [feeds[v.name] for v in session.get_inputs()]
        got = keras_model([x if p is None else x.transpose(p) for x, p in zip(fed, takes, strict=True)])
    except Exception as exc:  # TensorFlow's own errors: a shape known only when it runs
        raise RuntimeError(f"onnx2tf's graph fails to run at {shapes}: {one_line(exc, 240)}") from exc
    got = got if isinstance(got, list | tuple) else [got]
    layouts = []
    for value, want, have in zip(session.get_outputs(), expected, got, strict=True):
        have = np.asarray(have)
        perms = _layouts_to_try(have.shape, want.shape)
        errors = [_relative_error(have if p is None else have.transpose(p), want) for p in perms]
        matching = [p for p, error in zip(perms, errors, strict=True) if error is not None and error <= 1e-3]
        if matching:
            layouts.append(matching[0])
            continue
        if all(error is None for error in errors):
            raise RuntimeError(
                f"onnx2tf's graph is wrong: output {value.name} has shape {list(have.shape)}, "
                f"ONNX Runtime gives {list(want.shape)}"
            )
        error = min(e for e in errors if e is not None)
        raise RuntimeError(
            f"onnx2tf's graph is wrong: output {value.name} differs from ONNX Runtime's by {error:.3g} "
            f"(relative L2) at {shapes}"
        )
    return layouts


def _relative_error(have: Any, want: Any) -> float | None:
    """Relative L2 error (NaN as infinity); None when the shapes differ."""
    import numpy as np

    if have.shape != want.shape:
        return None
    scale = float(np.linalg.norm(want)) or 1.0
    error = float(np.linalg.norm(have.astype(np.float64) - want)) / scale
    return error if error == error else math.inf


def _convert_checked(
    onnx_path: Path,
    shapes: dict[str, list[int]],
    outputs: dict[str, list[int | str]],
    ranges: dict[str, ValueRange],
    **options: Any,
) -> _Converted:
    """onnx2tf's Keras model, checked against ONNX Runtime at `shapes`; RuntimeError says why not.

    3-D to 5-D inputs are first made channels-last inside the graph (what convolutions want);
    when that conversion is wrong, again with their shapes kept (what a recurrent state or an
    audio frame wants: an LSTM's initial state made channels-last no longer fits its cell)."""
    import onnx
    import tf_keras

    inputs = _graph_inputs(onnx.load(str(onnx_path), load_external_data=False).graph)
    names = [v.name for v in inputs]
    modes = [False, True] if options["keep_layout_inputs"] else [False]  # only those are made channels-last
    failures = []
    for keep_shapes in modes:
        tf_keras.backend.clear_session()  # drop the failed attempt's graph
        try:
            keras_model = _run_onnx2tf(onnx_path, kept_shapes=names if keep_shapes else None, **options)
            takes = _input_layouts(keras_model, [shapes[name] for name in names])
            layouts = _output_layouts(keras_model, onnx_path, inputs, shapes, ranges, takes)
            if baked := _baked_dims(keras_model, outputs, layouts):
                raise RuntimeError(f"onnx2tf fixed dynamic output dims: {', '.join(baked)}")
        except RuntimeError as exc:
            failures.append(str(exc))
            continue
        return _Converted(keras_model, takes, layouts, keep_shapes)
    if len(failures) > 1:
        raise RuntimeError(f"{failures[0]} (and with the inputs' shapes kept: {one_line(failures[1], 240)})")
    raise RuntimeError(failures[0])


def _fix_shapes(source: Path, shapes: dict[str, list[int]], out: Path) -> int:
    """Write `out`: `source` with its inputs fixed at `shapes` and the shape arithmetic folded
    away (onnxsim). Returns how many GatherND became Gather once their indices were constants.
    LSTMs get their zero initial states back (onnxsim drops them; onnx2tf needs them)."""
    import onnx
    import onnxsim

    from exporters.onnx_rewrites import (
        constant_ifs_inlined,
        constants_as_initializers,
        gather_nd_as_gather,
        lstm_initial_states_explicit,
        slices_normalized,
    )

    model = onnx.load(str(source))
    constant_ifs_inlined(model, shapes)  # conditions on sizes: onnxsim leaves If nodes in place
    model, checked = onnxsim.simplify(model, overwrite_input_shapes=shapes)
    if not checked:
        raise RuntimeError("onnxsim: the simplified graph's outputs differ from the original's")
    rewritten = gather_nd_as_gather(model)
    lstm_initial_states_explicit(model)
    slices_normalized(model)  # at fixed sizes every bound resolves
    constants_as_initializers(model)  # onnxsim writes folded constants as Constant nodes
    onnx.save(model, str(out))
    return rewritten


def _first_fixed_size(
    onnx_path: Path,
    sizes: list[dict[str, list[int]]],
    dynamic_failure: str,
    ranges: dict[str, ValueRange],
    **options: Any,
) -> tuple[_Converted, dict[str, list[int]], str]:
    """The first of `sizes` at which the fixed-shape conversion is right: (model, size, note)."""
    failures = []
    for i, size in enumerate(sizes):
        fixed = onnx_path.with_name(f"fixed-{i}.onnx")
        try:
            rewritten = _fix_shapes(onnx_path, size, fixed)
            converted = _convert_checked(fixed, size, {}, ranges, **options)  # all fixed now
        except Exception as exc:  # onnxsim's and ONNX Runtime's own errors included
            failures.append(f"at {size}: {one_line(exc, 600)}")
            continue
        return converted, size, f"; {rewritten} GatherND rewritten as Gather" if rewritten else ""
    at_fixed = "with fixed input sizes: " + "; ".join(failures)
    raise RuntimeError(f"{dynamic_failure}; and {at_fixed}" if dynamic_failure else at_fixed)


def _rewrites() -> list[tuple[Callable[[Any], int], str]]:
    """The exact graph rewrites made before onnx2tf, in order, each with its note."""
    from exporters import onnx_rewrites as r

    return [
        (r.constant_ifs_inlined, "{} If node(s) with a constant condition replaced by the branch taken"),
        (r.constant_dequantization_folded, "{} dequantized constant weight(s) stored as float"),
        (r.split_grouped_convs, "{} grouped conv(s) split into one per group (TF.js has no grouped conv2d)"),
        (r.casts_to_bool_as_compare, "{} cast(s) to bool written as x != 0 (TF.js wasm keeps the value)"),
        (r.strided_depthwise_as_slice, "{} depthwise conv(s) with unequal strides run at stride 1, sliced"),
        (r.node_names_as_tf_scopes, "{} node name(s) TensorFlow refuses as scopes renamed"),
        (r.slices_normalized, "{} Slice(s) rewritten to cut only the axes they cut (or as Identity)"),
    ]


def convert_to_saved_model(
    onnx_path: Path,
    out_dir: Path,
    keep_layout_inputs: list[str],
    pseudo_ops: list[str],
    work_dir: Path,
    sizes: list[dict[str, list[int]]],
    outputs: dict[str, list[int | str]],
    fixed_values: dict[str, float] | None = None,
    value_ranges: dict[str, ValueRange] | None = None,
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
    value_ranges: the spec's low/high per input, for the data the conversion is checked on (a
    layer norm over one-hot bytes is ill-conditioned on 0/1 data that real bytes never are).
    onnx_path is rewritten in place first (exporters.onnx_rewrites): give it a copy.
    """
    import onnx

    from exporters.onnx_rewrites import constants_as_initializers, inputs_as_constants

    model = onnx.load(str(onnx_path))
    changed = constants_as_initializers(model)  # the rewrites below read weights from initializers
    notes = []
    if fixed := inputs_as_constants(model, fixed_values or {}):
        notes.append(f"{fixed} input(s) with one value folded into the graph: {sorted(fixed_values or {})}")
    for rewrite, note in _rewrites():
        if count := rewrite(model):
            notes.append(note.format(count))
        changed += count
    if fixed or changed:
        onnx.save(model, str(onnx_path))
    input_names = [v.name for v in _graph_inputs(model.graph)]
    ranges = value_ranges or {}
    options = {"keep_layout_inputs": keep_layout_inputs, "pseudo_ops": pseudo_ops, "work_dir": work_dir}
    # onnx2tf renames what an If's branch reads from outside without renaming it there: an If left
    # (its condition known only at fixed sizes) goes straight to the fixed sizes, which fold it
    ifs_left = sum(n.op_type == "If" for n in model.graph.node)
    dynamic_failure = None
    if ifs_left:
        why = f"{ifs_left} If node(s) whose condition is known only at fixed sizes"
    else:
        try:
            converted = _convert_checked(onnx_path, sizes[0], outputs, ranges, **options)
        except RuntimeError as exc:
            why = dynamic_failure = str(exc)
    if ifs_left or dynamic_failure:
        # a graph whose sizes are all fixed already goes the same way: onnxsim folds its shape
        # arithmetic (a position bias built from arange and Expand) that onnx2tf turns into
        # numpy values where a Keras layer's output is due
        converted, size, rewrites = _first_fixed_size(
            onnx_path, sizes, dynamic_failure or "", ranges, **options
        )
        if any(_has_dynamic_dim(model, name) for name in input_names):
            notes.append(f"inputs fixed at {size}: with dynamic dims, {why}{rewrites}")
        else:
            notes.append(
                f"shape arithmetic folded (onnxsim) at the graph's own sizes: as exported, {why}{rewrites}"
            )
    _write_saved_model(converted, input_names, [v.name for v in model.graph.output], out_dir)
    if converted.shapes_kept:
        notes.append("the inputs keep their shape inside the graph (channels-last was wrong)")
    if transposed := sum(p is not None for p in converted.output_layouts):
        notes.append(f"{transposed} output(s) transposed back from onnx2tf's channels-last layout")
    if not (out_dir / "saved_model.pb").is_file():
        raise RuntimeError("the SavedModel was not written (no saved_model.pb)")
    (out_dir / "fingerprint.pb").unlink(missing_ok=True)  # random per save; nothing reads it
    return notes


def _has_dynamic_dim(model: Any, input_name: str) -> bool:
    value = next(v for v in model.graph.input if v.name == input_name)
    return any(not d.HasField("dim_value") for d in value.type.tensor_type.shape.dim)
