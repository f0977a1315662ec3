"""ONNX model -> ORT format (.ort), the compact form ONNX Runtime Web and Mobile load fastest."""

from __future__ import annotations

from pathlib import Path

__all__ = ["convert_to_ort"]


def convert_to_ort(onnx_path: Path, ort_path: Path) -> Path:
    """Save the model in ORT format after the platform-independent (basic) graph optimizations.

    Basic level only: the extended/layout optimizations insert CPU-specific kernels that a
    browser build need not have.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    if not ort_path.is_file() or ort_path.stat().st_size == 0:
        raise RuntimeError(f"onnxruntime did not write {ort_path.name}")
    return ort_path
