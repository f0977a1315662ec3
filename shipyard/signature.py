"""The model's interface: tensor names, dtypes, shapes and dynamic dim ranges."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DimRange",
    "DynamicDim",
    "Envelope",
    "Signature",
    "TensorSpec",
    "declared_shape",
    "default_typical",
    "unranged_dim",
]

DEFAULT_UNBOUNDED_MAX = 32


class DimRange(BaseModel):
    """The sizes a dynamic dim takes, both ends included."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int = Field(ge=0)
    max: int = Field(ge=0)

    def __contains__(self, size: object) -> bool:
        return isinstance(size, int) and self.min <= size <= self.max


Envelope = dict[str, DimRange]  # dim name -> the range an artifact serves


class DynamicDim(BaseModel):
    """One symbolic dimension shared by every axis that carries its name."""

    model_config = ConfigDict(extra="forbid")

    name: str
    min: int = Field(ge=0)
    max: int = Field(ge=1)
    typical: int
    source: str = "program"  # where max came from: program | spec | default | capped
    declared_max: int | None = None  # capped: the max the program or spec declared

    @model_validator(mode="after")
    def _ordered(self) -> DynamicDim:
        if not self.min <= self.typical <= self.max:
            raise ValueError(
                f"dim {self.name}: need min <= typical <= max, got {self.min} <= {self.typical} <= {self.max}"
            )
        return self

    @property
    def range(self) -> DimRange:
        return DimRange(min=self.min, max=self.max)


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: str  # numpy dtype name: float32, int64, bool, ...
    shape: list[int | str]  # a str names a DynamicDim
    value: float | None = None  # the one value the spec gives this input (a sample rate)
    low: float | None = None  # the spec's value range for this input, where it gives one
    high: float | None = None

    def concrete_shape(self, dim_values: dict[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else dim_values[d] for d in self.shape)


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dims: dict[str, DynamicDim] = {}

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def batch_dim(self) -> DynamicDim | None:
        """The dim at axis 0 of every input and output, if there is one."""
        tensors = [*self.inputs, *self.outputs]
        firsts = {t.shape[0] if t.shape else None for t in tensors}
        if len(firsts) == 1:
            (first,) = firsts
            if isinstance(first, str):
                return self.dims[first]
        return None


def default_typical(lo: int, hi: int) -> int:
    """A mid-range value: the geometric mean of the bounds, rounded."""
    return max(lo, min(hi, round(math.sqrt(max(lo, 1) * hi))))


def unranged_dim(dims: dict[str, DynamicDim], name: str) -> str:
    """Declare dim `name` once with the default range, for sources whose dynamic dims carry no
    range (ONNX, Keras, SavedModel); the spec may narrow it."""
    if name not in dims:
        hi = DEFAULT_UNBOUNDED_MAX
        dims[name] = DynamicDim(name=name, min=1, max=hi, typical=default_typical(1, hi), source="default")
    return name


def declared_shape(sizes: list[int | None], tensor: str, dims: dict[str, DynamicDim]) -> list[int | str]:
    """A shape whose unknown sizes become dynamic dims: `batch` on axis 0, else `<tensor>_dim<axis>`."""
    return [
        int(size) if size is not None else unranged_dim(dims, "batch" if axis == 0 else f"{tensor}_dim{axis}")
        for axis, size in enumerate(sizes)
    ]


def fixed_envelope(declared: dict[str, list[int | None]], signature: Signature) -> Envelope:
    """The signature's dynamic dims that an artifact's inputs declare at one size (`declared`:
    input name -> sizes, None where dynamic), as the envelope it serves."""
    envelope: Envelope = {}
    for tensor in signature.inputs:
        for want, got in zip(tensor.shape, declared.get(tensor.name, []), strict=False):
            if isinstance(want, str) and got is not None:
                envelope[want] = DimRange(min=got, max=got)
    return envelope


def pinned(signature: Signature, envelope: Envelope) -> Signature:
    """The signature with every dim the envelope holds at one size written as that size."""
    sizes = {name: r.min for name, r in envelope.items() if r.min == r.max}

    def pin(tensor: TensorSpec) -> TensorSpec:
        return tensor.model_copy(
            update={"shape": [sizes.get(d, d) if isinstance(d, str) else d for d in tensor.shape]}
        )

    return Signature(
        inputs=[pin(t) for t in signature.inputs],
        outputs=[pin(t) for t in signature.outputs],
        dims={n: d for n, d in signature.dims.items() if n not in sizes},
    )
