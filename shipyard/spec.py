"""The user spec: optional overrides of names and dim ranges, samples, per-target settings.

Example (YAML or JSON):

    name: convnet                  # registry model name; default: the source file's stem
    inputs:
      x: {name: image, low: 0.0, high: 1.0}   # keyed by the program's input name
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
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.errors import SpecError

__all__ = [
    "MODEL_NAME_RE",
    "DimOverride",
    "Spec",
    "TargetSettings",
    "first_error",
    "load_spec",
    "parse_spec",
    "parse_spec_text",
]

MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TENSOR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class TensorOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    low: float | None = None  # range of seeded random validation data
    high: float | None = None

    @field_validator("name")
    @classmethod
    def _tensor_name(cls, value: str | None) -> str | None:
        if value is not None and not TENSOR_NAME_RE.fullmatch(value):
            raise ValueError("must be a C-style identifier (letters, digits, _), at most 64 chars")
        return value


class DimOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=1)
    typical: int | None = Field(default=None, ge=0)


class TargetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    options: dict[str, Any] = {}
    gates: dict[str, float | None] = {}
    timeout_s: int | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(
        default=None, ge=512, description="memory cap (MB) per step process; default: a share of the machine"
    )


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    inputs: dict[str, TensorOverride] = {}
    outputs: dict[str, TensorOverride] = {}
    dims: dict[str, DimOverride] = {}
    samples: str | None = None
    seed: int = 0
    targets: dict[str, TargetSettings] = {}

    @field_validator("name")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_NAME_RE.fullmatch(value):
            raise ValueError(
                "must be lowercase letters, digits, '.', '_' or '-', starting with a letter "
                "or digit, at most 64 chars"
            )
        return value


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
