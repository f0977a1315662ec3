"""Write the demo's example model: a small conv net with a dynamic batch, saved by torch.export.

Usage: python examples/make_examples.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


class ConvNet(nn.Module):
    """Two conv blocks and a classifier: 3x32x32 images -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(image), 1))


def write_convnet(path: Path) -> Path:
    torch.manual_seed(0)
    model = ConvNet().eval()
    batch = torch.export.Dim("batch", min=1, max=32)
    program = torch.export.export(model, (torch.randn(4, 3, 32, 32),), dynamic_shapes={"image": {0: batch}})
    torch.export.save(program, str(path))
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples")
    out.mkdir(parents=True, exist_ok=True)
    print(write_convnet(out / "convnet.pt2"))
