"""torch.export program -> AOTInductor package (.pt2) compiled for this CPU."""

from __future__ import annotations

from pathlib import Path

__all__ = ["export_aoti_package"]


def export_aoti_package(source: Path, path: Path) -> Path:
    import torch

    from shipyard.torch_program import load_program

    written = torch._inductor.aoti_compile_and_package(load_program(source), package_path=str(path))
    return Path(written)
