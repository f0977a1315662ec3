"""What every loaded source model offers the reference steps, whatever framework it comes from."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from shipyard.signature import Signature

__all__ = ["SourceModel"]


class SourceModel(Protocol):
    """A source loaded without running code from it (torch.export, ONNX, Keras, SavedModel)."""

    label: str  # "an ONNX", for messages
    keeps_own_names: bool  # its artifacts keep its tensor names: the spec cannot rename them

    def signature(self) -> Signature: ...

    def run(self, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Its outputs on `inputs` in its own framework (the reference every artifact must match)."""
        ...
