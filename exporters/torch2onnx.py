"""torch.export program -> a single-file ONNX model whose dims carry the signature's names."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shipyard.signature import Signature

__all__ = ["OnnxOptions", "export_onnx"]

DEFAULT_OPSET = 18


class OnnxOptions(BaseModel):
    """Options of the torch -> ONNX export; the options of every target built on ONNX extend them."""

    model_config = ConfigDict(extra="forbid")

    opset: int = Field(default=DEFAULT_OPSET, ge=17, le=23, description="ONNX opset of the export")


def _name_dims(model: object, signature: Signature) -> None:
    """Give dynamic dims the signature's names (torch emits s0, s1, ...)."""
    renames: dict[str, str] = {}
    graph = model.graph  # type: ignore[attr-defined]
    for value, spec in zip(graph.input, signature.inputs, strict=True):
        for dim, want in zip(value.type.tensor_type.shape.dim, spec.shape, strict=True):
            if isinstance(want, str) and dim.dim_param:
                renames[dim.dim_param] = want
                dim.dim_param = want
    for value in graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def export_onnx(source: Path, signature: Signature, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write `path` (no external data) from the torch.export archive `source`."""
    import onnx
    import torch

    from shipyard.torch_program import load_program

    program = load_program(source)
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        opset_version=opset,
        input_names=signature.input_names(),
        output_names=signature.output_names(),
        external_data=False,
        optimize=True,
        verbose=False,
    )
    assert onnx_program is not None
    model = onnx_program.model_proto
    _name_dims(model, signature)
    if model.ByteSize() >= 2**31:
        raise ValueError("model is larger than 2 GB and cannot be a single-file ONNX model")
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path
