"""Validation inputs: user samples, then seeded random data at each dim's min, typical and max.

What a source declares is untrusted: a program may accept a batch of 200,000 images, and a
samples file may hold a compressed gigabyte of zeros. One variant's inputs hold at most
`max_variant_elements()` elements: a dim whose max would exceed that is validated up to the
largest size that fits (its `declared_max` keeps what was declared, and the report says so);
inputs that do not fit even at their smallest, or samples that hold more, are refused.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from shipyard.errors import SourceError, SpecError
from shipyard.settings import Settings, settings
from shipyard.signature import Signature, TensorSpec, default_typical
from shipyard.spec import Spec, TensorOverride

__all__ = [
    "CALIBRATION_BATCHES",
    "DEFAULT_MAX_VARIANT_ELEMENTS",
    "Variant",
    "bound_dims",
    "build_variants",
    "check_samples",
    "generated_calibration",
    "input_elements",
    "load_arrays",
    "max_output_elements",
    "max_variant_elements",
    "random_inputs",
    "save_arrays",
]

# 16.8 M input elements (64 MB of float32) per variant
DEFAULT_MAX_VARIANT_ELEMENTS: int = Settings.model_fields["max_variant_elements"].default
OUTPUT_ROOM = 8


def max_variant_elements() -> int:
    """$SHIPYARD_MAX_VARIANT_ELEMENTS, else 16,777,216."""
    return settings().max_variant_elements


def max_output_elements(max_inputs: int) -> int:
    """What one variant's outputs may hold: $SHIPYARD_MAX_OUTPUT_ELEMENTS, else OUTPUT_ROOM times
    what its inputs may hold (detectors and decoders give more than they take; a program whose
    outputs expand ten-thousandfold would write gigabytes per variant and per runtime)."""
    explicit = settings().max_output_elements
    return OUTPUT_ROOM * max_inputs if explicit is None else explicit


def input_elements(signature: Signature, dims: dict[str, int]) -> int:
    """How many elements the inputs hold at these dim values."""
    return sum(math.prod(t.concrete_shape(dims)) for t in signature.inputs)


def _largest_fitting(signature: Signature, at: dict[str, int], name: str, budget: int) -> int:
    """The largest value of dim `name` (others as in `at`) whose inputs fit the budget, or its min."""
    lo, hi = signature.dims[name].min, at[name]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if input_elements(signature, {**at, name: mid}) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def bound_dims(signature: Signature, budget: int) -> Signature:
    """The signature with dim maxima lowered, largest first, until one variant's inputs fit `budget`."""
    at = {name: d.max for name, d in signature.dims.items()}
    smallest = input_elements(signature, {name: d.min for name, d in signature.dims.items()})
    if smallest > budget:
        raise SourceError(
            f"the model's inputs hold {smallest:,} elements even at their smallest sizes; "
            f"at most {budget:,} are validated (SHIPYARD_MAX_VARIANT_ELEMENTS)"
        )
    for name in sorted(at, key=lambda n: (-at[n], n)):
        if input_elements(signature, at) <= budget:
            break
        at[name] = _largest_fitting(signature, at, name, budget)
    dims = {}
    for name, dim in signature.dims.items():
        if at[name] == dim.max:
            dims[name] = dim
            continue
        typical = dim.typical if dim.typical <= at[name] else default_typical(dim.min, at[name])
        dims[name] = dim.model_copy(
            update={"max": at[name], "typical": typical, "source": "capped", "declared_max": dim.max}
        )
    return signature.model_copy(update={"dims": dims})


class Variant(BaseModel):
    """One set of inputs: a name and the value of every dynamic dim."""

    name: str
    dims: dict[str, int]


def seeded_values(
    rng: np.random.Generator,
    dtype: np.dtype,
    shape: tuple[int, ...] | list[int],
    low: float | None = None,
    high: float | None = None,
    integer_high: int = 9,
) -> np.ndarray:
    """Seeded random data of `dtype` in [low, high] (integers: high included, a vocabulary of 256
    is 0..255; `integer_high` where the spec gives none); floats without both bounds are
    standard normal, bools 0/1."""
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        lo = 0 if low is None else math.ceil(low)
        hi = integer_high if high is None else math.floor(high)
        return rng.integers(lo, max(lo, hi), size=shape, dtype=dtype, endpoint=True)
    if low is not None and high is not None:
        return rng.uniform(low, high, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


def _random(
    rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...], data: TensorOverride
) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if data.value is not None:
        return np.full(shape, data.value, dtype=dtype)
    return seeded_values(rng, dtype, shape, data.low, data.high)


def _shape_variants(signature: Signature) -> list[Variant]:
    if not signature.dims:
        return [Variant(name="static", dims={})]
    picks: dict[str, dict[str, int]] = {}
    for which in ("min", "typical", "max"):
        dims = {name: getattr(d, which) for name, d in signature.dims.items()}
        if dims not in picks.values():
            picks[which] = dims
    return [Variant(name=name, dims=dims) for name, dims in picks.items()]


def _sample_variant(signature: Signature, samples: dict[str, np.ndarray]) -> Variant:
    """Check user samples against the signature and read off their dim values."""
    missing = set(signature.input_names()) - set(samples)
    if missing:
        raise SpecError(f"samples: missing input(s) {sorted(missing)}")
    dims: dict[str, int] = {}
    for spec in signature.inputs:
        arr = samples[spec.name]
        if arr.dtype != np.dtype(spec.dtype) or arr.ndim != len(spec.shape):
            raise SpecError(
                f"samples: input {spec.name} is {arr.dtype}{list(arr.shape)}, "
                f"expected {spec.dtype}{spec.shape}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape, strict=True)):
            if isinstance(want, int):
                ok = want == got
            else:
                d = signature.dims[want]
                ok = d.min <= got <= d.max and dims.setdefault(want, got) == got
            if not ok:
                raise SpecError(
                    f"samples: input {spec.name} axis {axis} has size {got}, "
                    f"outside what the model accepts ({want})"
                )
    return Variant(name="samples", dims=dims)


def build_variants(
    signature: Signature, spec: Spec, max_elements: int = DEFAULT_MAX_VARIANT_ELEMENTS
) -> list[tuple[Variant, dict[str, np.ndarray]]]:
    """Every variant with its inputs, in a stable order."""
    out: list[tuple[Variant, dict[str, np.ndarray]]] = []
    if spec.samples:
        samples = load_arrays(Path(spec.samples), max_elements)
        out.append((_sample_variant(signature, samples), {n: samples[n] for n in signature.input_names()}))
    rng = np.random.default_rng(spec.seed)
    for variant in _shape_variants(signature):
        out.append((variant, random_inputs(signature, spec, variant.dims, rng)))
    return out


CALIBRATION_BATCHES = 4  # generated batches at the typical dims when the spec gives no samples


def generated_calibration(signature: Signature, spec: Spec) -> list[dict[str, np.ndarray]]:
    """Seeded random batches at the typical dims, from a stream of their own (never the
    validation inputs the gates judge): what quantizers calibrate on without samples."""
    rng = np.random.default_rng([spec.seed, 0xCA1B])
    typical = {name: d.typical for name, d in signature.dims.items()}
    return [random_inputs(signature, spec, typical, rng) for _ in range(CALIBRATION_BATCHES)]


def random_inputs(
    signature: Signature, spec: Spec, dims: dict[str, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Seeded random data for every input at the given dim values (ranges from the spec)."""
    data = {o.name or name: o for name, o in spec.inputs.items()}  # by the name in the signature
    return {
        t.name: _random(rng, t, t.concrete_shape(dims), data.get(t.name, TensorOverride()))
        for t in signature.inputs
    }


def check_samples(path: Path, max_elements: int) -> None:
    """Refuse anything but an .npz of plain arrays holding at most `max_elements` in all, reading
    only each array's header (nothing is decompressed beyond it, no object is unpickled)."""
    if not zipfile.is_zipfile(path):
        with path.open("rb") as fh:
            what = "holds one bare array" if fh.read(6) == b"\x93NUMPY" else "is not an .npz"
        raise SpecError(f"samples: {path.name} {what}; save an .npz with one array per input name")
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    reader = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = reader(fh)
                if dtype.hasobject:
                    raise SpecError(f"samples: {member} holds Python objects, which are refused")
                total += math.prod(shape)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as exc:
        raise SpecError(f"samples: cannot read {path.name}: {exc}") from None
    if total > max_elements:
        raise SpecError(
            f"samples: {path.name} holds {total:,} elements; at most {max_elements:,} are accepted"
        )


def load_arrays(path: Path, max_elements: int | None = None) -> dict[str, np.ndarray]:
    """Read an .npz (one array per name) without allowing pickled objects; with `max_elements`,
    only after check_samples."""
    if max_elements is not None:
        check_samples(path, max_elements)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SpecError(f"samples: cannot read {path.name}: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise SpecError(
            f"samples: {path.name} holds one bare array; save an .npz with one array per input name"
        )
    with loaded as data:
        return {k: data[k] for k in data.files}


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, allow_pickle=False, **arrays)
