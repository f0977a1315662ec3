"""torch.export program -> float32 .tflite through litert-torch, traced at fixed input shapes.

litert-torch 0.10 cannot lower a symbolic batch through Linear (its jax bridge asserts), so
the model is converted at one concrete shape; the interpreter can often resize inputs later,
which the caller probes and validates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["export_tflite"]


def export_tflite(source: Path, inputs: list[np.ndarray], path: Path) -> Path:
    import litert_torch
    import torch

    from shipyard.torch_program import load_program

    module = load_program(source).module()
    module.training = False  # an exported graph is fixed; this only silences a training-mode warning
    converted = litert_torch.convert(module, tuple(torch.from_numpy(a) for a in inputs))
    converted.export(str(path))
    return path
