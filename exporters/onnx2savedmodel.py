"""ONNX model -> TensorFlow SavedModel with onnx2tf, keeping NCHW inputs NCHW."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

__all__ = ["convert_to_saved_model"]


def convert_to_saved_model(
    onnx_path: Path, out_dir: Path, keep_layout_inputs: list[str], pseudo_ops: list[str]
) -> Path:
    """Write a SavedModel whose serving signature keeps the ONNX input/output names.

    keep_layout_inputs: 3-D to 5-D inputs whose channels-first layout must stay (onnx2tf
    would otherwise make them NHWC, and would try to download calibration images).
    pseudo_ops: ops onnx2tf rewrites into equivalent primitives (e.g. Erf, which TF.js lacks).
    """
    import onnx2tf

    console = io.StringIO()
    try:
        with contextlib.redirect_stdout(console):
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(out_dir),
                keep_ncw_or_nchw_or_ncdhw_input_names=keep_layout_inputs or None,
                replace_to_pseudo_operators=pseudo_ops or None,
                output_signaturedefs=True,
                non_verbose=True,
            )
    except (Exception, SystemExit) as exc:
        sys.stdout.write(console.getvalue())  # keep onnx2tf's own report in the target's log
        node = re.search(r"onnx_op_name: (\S+)", console.getvalue())
        where = f" (onnx2tf stopped at ONNX node {node.group(1)})" if node else ""
        raise RuntimeError(f"onnx2tf: {exc}{where}") from exc
    sys.stdout.write(console.getvalue())
    if not (out_dir / "saved_model.pb").is_file():
        raise RuntimeError("onnx2tf finished without writing saved_model.pb")
    return out_dir
