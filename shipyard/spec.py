"""The user spec: optional overrides of names and dim ranges, samples, per-target settings.

Example (YAML or JSON):

    name: convnet                  # registry model name; default: the source file's stem
    inputs:
      x: {name: image, low: 0.0, high: 1.0}   # keyed by the program's input name
      sample_rate: {value: 16000}             # an input that only ever takes one value
    outputs:
      output_0: {name: logits}
    dims:
      batch: {min: 1, max: 16, typical: 4}    # narrow a dynamic dim's range
    samples: samples.npz           # validation inputs, keys = input names
    seed: 0
    targets:
      ort-web:
        gates: {max_abs_err: 1.0e-4, min_cosine: 0.99999}
        options: {opset: 18}
        timeout_s: 900
        memory_mb: 16000              # memory cap of each step process (default: a share of the machine)
      executorch:
        precisions: [fp32, int8]      # also build executorch-int8 (each rung is its own target)
      executorch-int8:
        options: {scheme: dynamic}    # a rung takes options and gates under its own name
      litert-int4:
        options: {min_int4_share: 0.5}  # or {recipe: dynamic_wi4_afp32} to fix the recipe (no search)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shipyard.errors import SpecError
from shipyard.precision import Precision

__all__ = [
    "MODEL_NAME_RE",
    "DimOverride",
    "GenerationSpec",
    "Spec",
    "SpecFields",
    "TargetSettings",
    "TensorOverride",
    "first_error",
    "load_spec",
    "normalize_model_name",
    "parse_spec",
    "parse_spec_text",
]

MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TENSOR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class TensorOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="a new name for the tensor in every artifact")
    low: float | None = Field(default=None, description="lowest value of seeded random validation data")
    high: float | None = Field(
        default=None, description="highest value of seeded random validation data (integers: included)"
    )
    value: float | None = Field(
        default=None, description="the one value this input takes (e.g. a sample rate), instead of a range"
    )

    @field_validator("name")
    @classmethod
    def _tensor_name(cls, value: str | None) -> str | None:
        if value is not None and not TENSOR_NAME_RE.fullmatch(value):
            raise ValueError("must be a C-style identifier (letters, digits, _), at most 64 chars")
        return value

    @model_validator(mode="after")
    def _one_kind_of_data(self) -> TensorOverride:
        if self.value is not None and (self.low is not None or self.high is not None):
            raise ValueError("give either value or low/high, not both")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self


class DimOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: int | None = Field(default=None, ge=0, description="smallest size (never below the program's)")
    max: int | None = Field(default=None, ge=1, description="largest size (never beyond the program's)")
    typical: int | None = Field(default=None, ge=0, description="a common size (default: geometric mean)")


class TargetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    options: dict[str, Any] = {}
    gates: dict[str, float | None] = {}
    precisions: list[Precision] | None = Field(
        default=None,
        min_length=1,
        description="the rungs of this target's precision ladder to build (default: fp32 only)",
    )
    timeout_s: int | None = Field(default=None, gt=0, description="seconds per step before it is killed")
    memory_mb: int | None = Field(
        default=None, ge=512, description="memory cap (MB) per step process; default: a share of the machine"
    )


class GenerationSpec(BaseModel):
    """How a causal LM is proven: the prompts every target generates from, greedily."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str | list[int]] = Field(
        default=[],
        max_length=16,
        description="text (tokenized by the model folder's tokenizer) or token ids; default: seeded "
        "random ids from the vocabulary",
    )
    max_new_tokens: int = Field(default=32, ge=1, le=1024, description="greedy tokens generated per prompt")
    max_cache_len: int | None = Field(
        default=None,
        ge=8,
        le=32768,
        description="the KV cache's length in the artifacts, which one validation generation fills "
        "(default: the smaller of the model's context length and 256)",
    )


class SpecFields(BaseModel):
    """What a spec says about the model itself (Spec adds samples and per-target settings)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="registry model name (default: the file's stem)")
    inputs: dict[str, TensorOverride] = Field(
        default={}, description="by the program's input name: a new name, a range of validation data"
    )
    outputs: dict[str, TensorOverride] = Field(
        default={}, description="by output name (output_0, output_1, ...): a new name"
    )
    dims: dict[str, DimOverride] = Field(
        default={}, description="by dim name (batch, <input>_dim<axis>): narrow its range"
    )
    seed: int = Field(default=0, description="seed of the random validation data")
    generation: GenerationSpec = Field(
        default=GenerationSpec(), description="a causal LM's validation prompts and KV cache length"
    )

    @field_validator("name")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_NAME_RE.fullmatch(value):
            raise ValueError(
                "must be lowercase letters, digits, '.', '_' or '-', starting with a letter "
                "or digit, at most 64 chars"
            )
        return value


class Spec(SpecFields):
    samples: str | None = None  # an .npz of validation inputs, keys = input names
    targets: dict[str, TargetSettings] = {}


def normalize_model_name(text: str) -> str:
    """A registry model name as the CLI takes it: lowercased, spaces as '-' (`ResNet 50.v2` ->
    `resnet-50.v2`). Anything else outside [a-z0-9._-] stays, for MODEL_NAME_RE to refuse."""
    return re.sub(" +", "-", text.lower())


def first_error(exc: ValidationError) -> str:
    """`field.path: message` of a pydantic error, the way every spec error names its field."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "spec"
    return f"{where}: {err['msg']}"


def parse_spec(data: Any, base_dir: Path | None = None) -> Spec:
    """Validate a spec given as a dict (or None for the empty spec)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError("spec: must be a mapping at the top level")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"spec field {first_error(exc)}") from None
    if spec.samples and base_dir is not None and not Path(spec.samples).is_absolute():
        spec.samples = str((base_dir / spec.samples).resolve())
    return spec


def load_spec(path: Path | None) -> Spec:
    """Read a YAML or JSON spec file; relative paths in it are relative to the file."""
    if path is None:
        return Spec()
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
    return parse_spec(parse_spec_text(text, str(path)), path.resolve().parent)


def parse_spec_text(text: str, where: str = "spec") -> Any:
    import yaml

    try:
        return json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        line = str(exc).splitlines()[0]
        raise SpecError(f"{where} is not valid YAML/JSON: {line}") from None
