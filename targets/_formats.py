"""Formats that steps exchange, and the registry of conversions between them (targets._conversions).

A target names the format its exporter starts from (`Target.consumes`); the planner finds the
conversions that lead there from the source's format. A conversion runs once per run for every
target that needs its output with the same options: one torch -> ONNX export feeds ort-web,
triton and tfjs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from shipyard.source import ModelClass, SourceKind
from targets._jobs import options_as
from targets.engine.family import Family
from targets.engine.recipe import StepRecipe

__all__ = [
    "Conversion",
    "Format",
    "NoOptions",
    "SourceFormat",
    "all_conversions",
    "conversion_path",
    "register_conversion",
    "source_format",
]


class Format(StrEnum):
    TORCH_EXPORT = "torch-export"  # a torch.export archive (.pt2)
    ONNX = "onnx"  # an .onnx file (the external data files it reads, if any, beside it)
    SAVED_MODEL = "saved-model"  # a TensorFlow SavedModel folder with a serving signature
    TFLITE_FP32 = "tflite-fp32"  # a float32 .tflite
    KERAS = "keras"  # a Keras 3 .keras file
    SAVED_MODEL_ARCHIVE = "saved-model-archive"  # a SavedModel in a .zip, .tar or .tar.gz
    ONNX_ARCHIVE = "onnx-archive"  # an .onnx and its external data files in a .zip, .tar or .tar.gz
    HF_ARCHIVE = "hf-archive"  # a Hugging Face model folder in a .zip, .tar or .tar.gz
    HF_FOLDER = "hf-folder"  # a checked Hugging Face model folder (config, safetensors, tokenizer)


@dataclass(frozen=True)
class SourceFormat:
    """How a source kind enters the graph: the format it is (None: nothing starts from it) and
    what runs it for its reference outputs (the prepare and reference steps)."""

    format: Format | None
    family: Family = Family.TORCH  # the warm server that runs the source model
    toolchain: tuple[str, ...] = ("torch",)  # distributions whose versions shape its outputs
    model_class: ModelClass = ModelClass.FIXED_SHAPE  # what a target builds from it (Target.builds)
    prepare: str = "targets.engine.steps:prepare"  # reads its signature, makes the reference outputs


_SOURCES = {
    SourceKind.TORCH_EXPORT: SourceFormat(Format.TORCH_EXPORT),
    SourceKind.ONNX: SourceFormat(Format.ONNX, toolchain=("onnx", "onnxruntime")),
    SourceKind.KERAS: SourceFormat(Format.KERAS, Family.TF, ("keras", "tensorflow")),
    SourceKind.SAVED_MODEL_ARCHIVE: SourceFormat(Format.SAVED_MODEL_ARCHIVE, Family.TF, ("tensorflow",)),
    SourceKind.ONNX_ARCHIVE: SourceFormat(Format.ONNX_ARCHIVE, toolchain=("onnx", "onnxruntime")),
    SourceKind.HF_ARCHIVE: SourceFormat(
        Format.HF_ARCHIVE,
        toolchain=("torch", "transformers", "safetensors"),
        model_class=ModelClass.CAUSAL_LM,
        prepare="targets.engine.generation_steps:prepare_generation",
    ),
}


def source_format(kind: SourceKind) -> SourceFormat:
    """Where a source of this kind starts and what runs it."""
    return _SOURCES.get(kind, SourceFormat(None))


class NoOptions(BaseModel):
    """The options of a conversion or target that has none (anything given is an error)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Conversion:
    """One converter from a format to another; its options are fields of the targets' options."""

    consumes: Format
    produces: Format
    recipe: StepRecipe  # its function takes an ExportJob
    options: type[BaseModel] = NoOptions

    @property
    def name(self) -> str:
        return f"convert:{self.produces.value}"

    def options_from(self, target_options: BaseModel) -> BaseModel:
        """This conversion's options, read from the target options' fields of the same names."""
        return options_as(target_options.model_dump(), self.options)


# A format may have several producers (a .tflite from litert-torch or from a SavedModel); a
# source reaches each format by one shortest path, so a run has one step per format.
_CONVERSIONS: list[Conversion] = []


def register_conversion(conversion: Conversion) -> Conversion:
    if any((c.consumes, c.produces) == (conversion.consumes, conversion.produces) for c in _CONVERSIONS):
        raise ValueError(f"two conversions from {conversion.consumes.value} to {conversion.produces.value}")
    _CONVERSIONS.append(conversion)
    return conversion


def all_conversions() -> list[Conversion]:
    return list(_CONVERSIONS)


def conversion_path(start: Format, wanted: Format) -> list[Conversion] | None:
    """The shortest chain of conversions from `start` to `wanted` ([] if equal, None if none)."""
    queue: deque[tuple[Format, list[Conversion]]] = deque([(start, [])])
    seen = {start}
    while queue:
        fmt, path = queue.popleft()
        if fmt == wanted:
            return path
        for conversion in _CONVERSIONS:
            if conversion.consumes == fmt and conversion.produces not in seen:
                seen.add(conversion.produces)
                queue.append((conversion.produces, [*path, conversion]))
    return None
