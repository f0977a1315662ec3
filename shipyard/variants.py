"""Validation inputs: user samples, then seeded random data at each dim's min, typical and max."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from shipyard.errors import SpecError
from shipyard.signature import Signature, TensorSpec
from shipyard.spec import Spec

__all__ = ["Variant", "build_variants", "load_arrays", "random_inputs", "save_arrays"]


class Variant(BaseModel):
    """One set of inputs: a name and the value of every dynamic dim."""

    name: str
    dims: dict[str, int]


def _random(
    rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...], low: float | None, high: float | None
) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        lo = 0 if low is None else int(low)
        hi = 10 if high is None else int(high)
        return rng.integers(lo, hi, size=shape, dtype=dtype)
    if low is not None and high is not None:
        return rng.uniform(low, high, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


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


def build_variants(signature: Signature, spec: Spec) -> list[tuple[Variant, dict[str, np.ndarray]]]:
    """Every variant with its inputs, in a stable order."""
    out: list[tuple[Variant, dict[str, np.ndarray]]] = []
    if spec.samples:
        samples = load_arrays(Path(spec.samples))
        out.append((_sample_variant(signature, samples), {n: samples[n] for n in signature.input_names()}))
    rng = np.random.default_rng(spec.seed)
    for variant in _shape_variants(signature):
        out.append((variant, random_inputs(signature, spec, variant.dims, rng)))
    return out


def random_inputs(
    signature: Signature, spec: Spec, dims: dict[str, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Seeded random data for every input at the given dim values (ranges from the spec)."""
    ranges = {name: (o.low, o.high) for name, o in spec.inputs.items()}
    inputs = {}
    for t in signature.inputs:
        low, high = ranges.get(t.name, (None, None))
        inputs[t.name] = _random(rng, t, t.concrete_shape(dims), low, high)
    return inputs


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read an .npz (one array per name) without allowing pickled objects."""
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
