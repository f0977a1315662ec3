"""The warm process families: which toolchain a step's server has imported."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Family"]


class Family(StrEnum):
    """The warm process family a step runs in: which toolchain its server has imported."""

    TORCH = "torch"  # torch, ONNX, ONNX Runtime, ExecuTorch, AOTInductor
    TF = "tf"  # TensorFlow, onnx2tf, tensorflowjs, LiteRT (and torch for litert-torch)
