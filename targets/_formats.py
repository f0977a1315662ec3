"""Formats that steps exchange, and the shared conversions between them.

A target names the format its exporter starts from (`Target.consumes`); the planner finds the
conversions that lead there from the source's format. A conversion runs once per run for every
target that needs its output with the same options: one torch -> ONNX export feeds ort-web,
triton and tfjs.
"""

from __future__ import annotations

import shutil
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, ConfigDict

from exporters.onnx2savedmodel import SavedModelOptions
from exporters.torch2onnx import OnnxOptions
from shipyard.signature import Signature
from shipyard.source import SourceKind
from targets._jobs import ExportJob, ExportResult

__all__ = [
    "Conversion",
    "Family",
    "Format",
    "NoOptions",
    "conversion_path",
    "get_conversion",
    "register_conversion",
    "source_format",
]


class Family(StrEnum):
    """The warm process family a step runs in: which toolchain its server has imported."""

    TORCH = "torch"  # torch, ONNX, ONNX Runtime, ExecuTorch, AOTInductor
    TF = "tf"  # TensorFlow, onnx2tf, tensorflowjs, LiteRT (and torch for litert-torch)


class Format(StrEnum):
    TORCH_EXPORT = "torch-export"  # a torch.export archive (.pt2)
    ONNX = "onnx"  # one self-contained .onnx file
    SAVED_MODEL = "saved-model"  # a TensorFlow SavedModel folder with a serving signature
    TFLITE_FP32 = "tflite-fp32"  # a float32 .tflite


_SOURCE_FORMATS = {SourceKind.TORCH_EXPORT: Format.TORCH_EXPORT, SourceKind.ONNX: Format.ONNX}


def source_format(kind: SourceKind) -> Format | None:
    """The format a source of this kind is, if any conversion starts from it."""
    return _SOURCE_FORMATS.get(kind)


class NoOptions(BaseModel):
    """The options of a conversion or target that has none (anything given is an error)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Conversion:
    """One converter from a format to another; its options are fields of the targets' options."""

    consumes: Format
    produces: Format
    converter: str  # "module:function" taking an ExportJob
    options: type[BaseModel] = NoOptions
    toolchain: tuple[str, ...] = ()  # distributions whose versions shape its output
    cost_s: float = 5.0  # rough seconds, so long chains start first
    timeout_s: int = 900
    family: Family = Family.TORCH
    warm: tuple[str, ...] = ()  # modules it needs imported, loaded in the warm server first

    @property
    def name(self) -> str:
        return f"convert:{self.produces.value}"

    def options_from(self, target_options: BaseModel) -> BaseModel:
        """This conversion's options, read from the target options' fields of the same names."""
        shared = target_options.model_dump(include=set(self.options.model_fields))
        return self.options.model_validate(shared)


_CONVERSIONS: dict[Format, Conversion] = {}


def register_conversion(conversion: Conversion) -> Conversion:
    if conversion.produces in _CONVERSIONS:
        raise ValueError(f"two conversions produce {conversion.produces.value}")
    _CONVERSIONS[conversion.produces] = conversion
    return conversion


def get_conversion(produces: Format) -> Conversion:
    return _CONVERSIONS[produces]


def conversion_path(start: Format, wanted: Format) -> list[Conversion] | None:
    """The shortest chain of conversions from `start` to `wanted` ([] if equal, None if none)."""
    queue: deque[tuple[Format, list[Conversion]]] = deque([(start, [])])
    seen = {start}
    while queue:
        fmt, path = queue.popleft()
        if fmt == wanted:
            return path
        for conversion in _CONVERSIONS.values():
            if conversion.consumes == fmt and conversion.produces not in seen:
                seen.add(conversion.produces)
                queue.append((conversion.produces, [*path, conversion]))
    return None


# The conversions -----------------------------------------------------------------------
def to_onnx(job: ExportJob) -> ExportResult:
    from exporters.torch2onnx import export_onnx

    options = OnnxOptions.model_validate(job.options)
    path = export_onnx(
        job.input(Format.TORCH_EXPORT), job.interface, job.out_path / "model.onnx", options.opset
    )
    return ExportResult(files=[path.name], product=path.name)


def _fixed_size_candidates(signature: Signature) -> list[dict[str, int]]:
    """Dim values to fix a graph at when it cannot stay dynamic, most useful first: every dim
    typical; then batch 1 (one request at a time, as in a browser) with the others typical."""
    typical = {name: dim.typical for name, dim in signature.dims.items()}
    batch = signature.batch_dim()
    single = {**typical, batch.name: batch.min} if batch is not None else typical
    return [typical, single] if single != typical else [typical]


def to_saved_model(job: ExportJob) -> ExportResult:
    from exporters.onnx2savedmodel import convert_to_saved_model

    options = SavedModelOptions.model_validate(job.options)
    # 3-D to 5-D inputs keep PyTorch's channels-first layout (onnx2tf would make them NHWC).
    keep = [t.name for t in job.interface.inputs if 3 <= len(t.shape) <= 5]
    # onnx2tf rewrites the ONNX file it is given (onnxsim, in place): give it a copy, never the input.
    onnx_copy = job.work_path / "model.onnx"
    shutil.copyfile(job.input(Format.ONNX), onnx_copy)
    notes = convert_to_saved_model(
        onnx_copy,
        job.out_path,
        keep,
        options.pseudo_ops,
        job.work_path,
        sizes=[
            {t.name: list(t.concrete_shape(dims)) for t in job.interface.inputs}
            for dims in _fixed_size_candidates(job.interface)
        ],
        outputs={t.name: t.shape for t in job.interface.outputs},
    )
    files = sorted(p.relative_to(job.out_path).as_posix() for p in job.out_path.rglob("*") if p.is_file())
    notes += [f"input layout kept as in the source for {keep}"] if keep else []
    return ExportResult(files=files, product=".", notes=notes)


def to_tflite_fp32(job: ExportJob) -> ExportResult:
    """litert-torch at the typical shape (it cannot lower a symbolic batch through Linear)."""
    from exporters.torch2tflite import export_tflite

    traced = {name: dim.typical for name, dim in job.interface.dims.items()}
    rng = np.random.default_rng(0)
    sample = [rng.standard_normal(t.concrete_shape(traced)).astype(t.dtype) for t in job.interface.inputs]
    path = export_tflite(job.input(Format.TORCH_EXPORT), sample, job.out_path / "model_fp32.tflite")
    return ExportResult(files=[path.name], product=path.name, notes=[f"traced at {traced}"])


register_conversion(
    Conversion(
        consumes=Format.TORCH_EXPORT,
        produces=Format.ONNX,
        converter="targets._formats:to_onnx",
        options=OnnxOptions,
        toolchain=("torch", "onnx", "onnxscript"),
        cost_s=3,
        warm=(
            "torch.export.pt2_archive._package",
            "torch.onnx._internal.exporter._core",
            "onnxscript.optimizer",
            "onnx.reference",
            "exporters.torch2onnx",
        ),
    )
)
register_conversion(
    Conversion(
        consumes=Format.ONNX,
        produces=Format.SAVED_MODEL,
        converter="targets._formats:to_saved_model",
        options=SavedModelOptions,
        toolchain=("onnx", "onnx2tf", "onnxsim", "onnxruntime", "tensorflow", "tf-keras"),
        cost_s=10,
        timeout_s=1200,
        family=Family.TF,
        warm=("tensorflow", "tf_keras", "onnx2tf", "onnxsim", "onnxruntime", "exporters.onnx2savedmodel"),
    )
)
register_conversion(
    Conversion(
        consumes=Format.TORCH_EXPORT,
        produces=Format.TFLITE_FP32,
        converter="targets._formats:to_tflite_fp32",
        toolchain=("torch", "litert-torch", "tensorflow"),
        cost_s=5,
        timeout_s=1200,
        family=Family.TF,
        warm=("torch.export.pt2_archive._package", "litert_torch", "exporters.torch2tflite"),
    )
)
