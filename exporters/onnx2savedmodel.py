"""ONNX model -> TensorFlow SavedModel with onnx2tf, keeping NCHW inputs NCHW."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SavedModelOptions", "convert_to_saved_model"]

SIGNATURE_KEY = "serving_default"


class SavedModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Ops onnx2tf rewrites into primitives TF.js has (TF.js has no Erf, which exact GELU uses).
    pseudo_ops: list[str] = Field(
        default=["Erf"], description="ONNX ops onnx2tf replaces with equivalent primitives"
    )


def _write_saved_model(model: object, out_dir: Path) -> None:
    """Save the Keras model's serving signature, as onnx2tf's own `-osd` mode does.

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
            tf.TensorSpec(t.shape, t.dtype, t.name)
            for t in model.inputs  # type: ignore[attr-defined]
        ],
    )
    with contextlib.redirect_stdout(io.StringIO()):  # a long listing of captured tensors
        archive.write_out(str(out_dir))


def convert_to_saved_model(
    onnx_path: Path, out_dir: Path, keep_layout_inputs: list[str], pseudo_ops: list[str], work_dir: Path
) -> list[str]:
    """Write a SavedModel whose serving signature keeps the ONNX input/output names; returns notes.

    keep_layout_inputs: 3-D to 5-D inputs whose channels-first layout must stay (onnx2tf
    would otherwise make them NHWC, and would try to download calibration images).
    pseudo_ops: ops onnx2tf rewrites into equivalent primitives (e.g. Erf, which TF.js lacks).
    onnx_path is rewritten in place first (exporters.onnx_rewrites): give it a copy.
    """
    import onnx
    import onnx2tf

    from exporters.onnx_rewrites import split_grouped_convs

    model = onnx.load(str(onnx_path))
    notes = []
    if split := split_grouped_convs(model):
        onnx.save(model, str(onnx_path))
        notes.append(f"{split} grouped convolution(s) split into one per group (TF.js has no grouped conv2d)")

    console = io.StringIO()
    try:
        with contextlib.redirect_stdout(console):
            keras_model = onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(work_dir / "onnx2tf"),
                keep_ncw_or_nchw_or_ncdhw_input_names=keep_layout_inputs or None,
                replace_to_pseudo_operators=pseudo_ops or None,
                output_signaturedefs=True,  # names valid in a SavedModel signature
                disable_model_save=True,
                non_verbose=True,
            )
    except (Exception, SystemExit) as exc:
        sys.stdout.write(console.getvalue())  # keep onnx2tf's own report in the step's log
        node = re.search(r"onnx_op_name: (\S+)", console.getvalue())
        where = f" (onnx2tf stopped at ONNX node {node.group(1)})" if node else ""
        raise RuntimeError(f"onnx2tf: {exc}{where}") from exc
    sys.stdout.write(console.getvalue())
    _write_saved_model(keras_model, out_dir)
    if not (out_dir / "saved_model.pb").is_file():
        raise RuntimeError("the SavedModel was not written (no saved_model.pb)")
    (out_dir / "fingerprint.pb").unlink(missing_ok=True)  # random per save; nothing reads it
    return notes
