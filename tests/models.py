"""Small models the tests export, each saved with torch.export.save."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from examples.make_examples import ConvNet


class MultiIO(nn.Module):
    """Two inputs sharing a dynamic batch, two outputs of different shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(12, 16)
        self.head_a = nn.Linear(16, 4)
        self.head_b = nn.Linear(16, 2)

    def forward(self, features: torch.Tensor, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.tanh(self.encode(torch.cat([features, extra], dim=1)))
        return self.head_a(hidden), torch.sigmoid(self.head_b(hidden)) * 2.0


def save_convnet(path: Path, max_batch: int = 16) -> Path:
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    program = torch.export.export(
        ConvNet().eval(), (torch.randn(2, 3, 32, 32),), dynamic_shapes={"image": {0: batch}}
    )
    torch.export.save(program, str(path))
    return path


def save_multi_io(path: Path) -> Path:
    torch.manual_seed(1)
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(
        MultiIO().eval(),
        (torch.randn(3, 8), torch.randn(3, 4)),
        dynamic_shapes={"features": {0: batch}, "extra": {0: batch}},
    )
    torch.export.save(program, str(path))
    return path
