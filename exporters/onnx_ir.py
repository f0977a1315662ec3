"""Fit an ONNX model's IR version to the runtime it ships to.

Current `onnx` writes IR version 14 (`onnx.helper.make_model`, onnxscript, spox), which
onnxruntime-web 1.30 refuses ("Unsupported model IR version: 14, max supported IR version:
13") although the model uses nothing of the newer IR. The version is lowered only when
`onnx.checker` still accepts the model under the lower one; otherwise the export fails and says so.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["fit_ir_version"]


def fit_ir_version(path: Path, most: int, runtime: str) -> str | None:
    """Rewrite `path` with IR version `most` when it declares a newer one; a note saying so, or None."""
    import onnx

    from shipyard.errors import one_line
    from shipyard.source import onnx_header_ir_version

    declared = onnx_header_ir_version(path)  # a few bytes: most models need no rewrite, no parse
    if declared is not None and declared <= most:
        return None
    model = onnx.load_model(str(path), load_external_data=False)
    found = model.ir_version
    if found <= most:
        return None
    model.ir_version = most
    # checked by path, beside the original: external data files are found where the model reads them
    lowered = path.with_name(f".{path.name}.lowered")
    onnx.save_model(model, str(lowered))
    try:
        onnx.checker.check_model(str(lowered), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        lowered.unlink()
        raise ValueError(
            f"the model declares ONNX IR version {found}, {runtime} loads at most {most}, and the "
            f"model is not valid under IR {most}: {one_line(exc, 200)}"
        ) from None
    lowered.replace(path)
    return f"ONNX IR version lowered from {found} to {most}, the most {runtime} loads (checked valid)"
