"""torch.export program -> a single-file ONNX model whose dims carry the signature's names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shipyard.errors import one_line
from shipyard.signature import Signature

__all__ = ["OnnxExport", "OnnxOptions", "export_onnx"]

DEFAULT_OPSET = 18


class OnnxOptions(BaseModel):
    """Options of the torch -> ONNX export; the options of every target built on ONNX extend them."""

    model_config = ConfigDict(extra="forbid")

    opset: int = Field(default=DEFAULT_OPSET, ge=17, le=23, description="ONNX opset of the export")


class OnnxExport(BaseModel):
    path: Path
    notes: list[str] = []


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


def export_onnx(source: Path, signature: Signature, path: Path, opset: int = DEFAULT_OPSET) -> OnnxExport:
    """Write `path` (no external data) from the torch.export archive `source`: with torch.onnx's
    dynamo exporter, else (it cannot decompose some graphs: Swin's, T5's) with its TorchScript
    exporter on the program's module at the typical sizes, every dim fixed (its trace bakes the
    sizes the program computes); the targets built on it then serve those sizes and say so."""
    import onnx
    import torch

    from shipyard.torch_program import load_program

    program = load_program(source)
    notes = []
    try:
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
    except Exception as exc:  # torch.onnx's ConversionError and whatever its passes raise
        model = _torchscript_export(program, signature, opset, path.with_suffix(".torchscript.onnx"), exc)
        notes.append(
            f"torch.onnx's TorchScript exporter at the typical sizes, dims fixed (its dynamo exporter: "
            f"{one_line(exc, 120)})"
        )
    _name_dims(model, signature)
    if model.ByteSize() >= 2**31:
        raise ValueError("model is larger than 2 GB and cannot be a single-file ONNX model")
    onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return OnnxExport(path=path, notes=notes)


def _torchscript_export(
    program: Any, signature: Signature, opset: int, scratch: Path, first: Exception
) -> Any:
    """The ONNX model torch.onnx's TorchScript exporter writes at the typical sizes; RuntimeError
    naming both exporters' failures."""
    import numpy as np
    import onnx
    import torch

    from shipyard.spec import Spec
    from shipyard.variants import random_inputs

    typical = {name: dim.typical for name, dim in signature.dims.items()}
    inputs = random_inputs(signature, Spec(), typical, np.random.default_rng(0))
    try:
        torch.onnx.export(
            program.module(),
            tuple(torch.from_numpy(inputs[t.name]) for t in signature.inputs),
            str(scratch),
            dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,  # a program's module cannot switch modes
            opset_version=opset,
            input_names=signature.input_names(),
            output_names=signature.output_names(),
        )
    except Exception as exc:
        raise RuntimeError(
            f"torch.onnx (dynamo): {one_line(first, 200)}; and its TorchScript exporter: {one_line(exc, 200)}"
        ) from exc
    model = onnx.load(str(scratch))
    scratch.unlink()
    return model
