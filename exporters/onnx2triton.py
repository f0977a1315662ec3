"""ONNX model -> Triton model repository: <name>/config.pbtxt + <name>/1/model.onnx."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from pydantic import Field

from exporters.torch2onnx import OnnxOptions
from shipyard.onnx_external import copy_onnx
from shipyard.signature import Signature, TensorSpec

__all__ = ["TritonOptions", "batching", "build_config", "triton_dtype", "write_repository"]

# numpy dtype name -> Triton DataType enum name (model_config.proto)
TRITON_DTYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
}


class TritonOptions(OnnxOptions):
    max_queue_delay_us: int = Field(default=100, ge=0)
    instance_kind: str | None = Field(default=None, pattern="^KIND_(CPU|GPU|AUTO)$")
    instance_count: int = Field(default=1, ge=1)


def triton_dtype(numpy_name: str) -> str:
    try:
        return TRITON_DTYPES[numpy_name]
    except KeyError:
        raise ValueError(f"dtype {numpy_name} has no Triton equivalent") from None


def batching(signature: Signature) -> tuple[int, str | None]:
    """(max_batch_size, batch dim name): batch only when axis 0 is one dim reaching down to 1."""
    dim = signature.batch_dim()
    if dim is None or dim.min > 1:
        return 0, None
    return dim.max, dim.name


def _dims(spec: TensorSpec, batch_dim: str | None) -> list[int]:
    shape = spec.shape[1:] if batch_dim else spec.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def build_config(name: str, signature: Signature, options: TritonOptions):  # type: ignore[no-untyped-def]
    """The ModelConfig protobuf for the model."""
    from tritonclient.grpc import model_config_pb2 as mc

    max_batch, batch_dim = batching(signature)
    config = mc.ModelConfig(name=name, backend="onnxruntime", max_batch_size=max_batch)
    for spec in signature.inputs:
        config.input.add(
            name=spec.name, data_type=mc.DataType.Value(triton_dtype(spec.dtype)), dims=_dims(spec, batch_dim)
        )
    for spec in signature.outputs:
        config.output.add(
            name=spec.name, data_type=mc.DataType.Value(triton_dtype(spec.dtype)), dims=_dims(spec, batch_dim)
        )
    if max_batch > 0:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    if options.instance_kind:
        config.instance_group.add(
            kind=mc.ModelInstanceGroup.Kind.Value(options.instance_kind), count=options.instance_count
        )
    return config


def write_repository(
    onnx_path: Path, repo: Path, name: str, signature: Signature, options: TritonOptions
) -> list[Path]:
    """Lay out the model repository and return the files written."""
    version_dir = repo / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    model_files = copy_onnx(onnx_path, version_dir / "model.onnx")  # external data beside it
    config_path = repo / name / "config.pbtxt"
    config_path.write_text(text_format.MessageToString(build_config(name, signature, options)))
    return [config_path, *model_files]
