"""Ingest and reference: check the source, apply the spec to its signature, save validation data.

Loading and running the source program happens only in a step process (targets.engine.steps);
this module holds the plain functions those steps call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from shipyard.errors import ShipyardError, SourceError, SpecError, one_line
from shipyard.signature import DynamicDim, Signature, TensorSpec, default_typical
from shipyard.source import SourceKind, detect_kind
from shipyard.source_model import SourceModel
from shipyard.spec import MODEL_NAME_RE, Spec, normalize_model_name
from shipyard.variants import (
    DEFAULT_MAX_VARIANT_ELEMENTS,
    Variant,
    bound_dims,
    build_variants,
    max_output_elements,
    random_inputs,
    save_arrays,
)

__all__ = [
    "PreparedVariant",
    "apply_spec",
    "check_source",
    "choose_model_name",
    "edge_inputs",
    "load_source",
    "read_signature",
    "run_source",
    "save_variant",
    "validation_inputs",
]


class PreparedVariant(BaseModel):
    """One validation variant: its dims, inputs and the source model's outputs on them."""

    name: str
    dims: dict[str, int]
    inputs: str  # .npz, relative to the folder of the step that wrote it
    reference: str  # .npz of the source model's outputs, likewise


def _rename(tensors: list[TensorSpec], overrides: dict, kind: str) -> list[TensorSpec]:
    names = {t.name for t in tensors}
    unknown = set(overrides) - names
    if unknown:
        raise SpecError(
            f"spec field {kind}: no {kind[:-1]} named {sorted(unknown)[0]!r}; the model has {sorted(names)}"
        )
    out = [
        t.model_copy(
            update={"name": overrides[t.name].name or t.name}
            | overrides[t.name].model_dump(include={"value", "low", "high"})
        )
        if t.name in overrides
        else t
        for t in tensors
    ]
    if len({t.name for t in out}) != len(out):
        raise SpecError(f"spec field {kind}: renaming makes two {kind} share a name")
    return out


def _narrow(dim: DynamicDim, override: dict[str, int | None]) -> DynamicDim:
    lo = override.get("min") if override.get("min") is not None else dim.min
    hi = override.get("max") if override.get("max") is not None else dim.max
    assert lo is not None and hi is not None
    if dim.source == "program" and not (dim.min <= lo <= hi <= dim.max):
        raise SpecError(
            f"spec field dims.{dim.name}: range [{lo}, {hi}] is outside what the "
            f"program accepts [{dim.min}, {dim.max}]"
        )
    if lo > hi or lo < dim.min:
        raise SpecError(
            f"spec field dims.{dim.name}: range [{lo}, {hi}] is invalid; the program accepts min {dim.min}"
        )
    typical = override.get("typical")
    if typical is None:
        typical = default_typical(lo, hi)
    if not lo <= typical <= hi:
        raise SpecError(f"spec field dims.{dim.name}.typical: {typical} is outside [{lo}, {hi}]")
    source = "spec" if override.get("max") is not None else dim.source
    return DynamicDim(name=dim.name, min=lo, max=hi, typical=typical, source=source)


def apply_spec(signature: Signature, spec: Spec) -> Signature:
    """The program's signature with the spec's renames and narrowed dim ranges."""
    unknown = set(spec.dims) - set(signature.dims)
    if unknown:
        raise SpecError(
            f"spec field dims: no dynamic dim named {sorted(unknown)[0]!r}; "
            f"the model has {sorted(signature.dims) or 'none'}"
        )
    dims = {
        n: _narrow(d, spec.dims[n].model_dump()) if n in spec.dims else d for n, d in signature.dims.items()
    }
    return Signature(
        inputs=_rename(signature.inputs, spec.inputs, "inputs"),
        outputs=_rename(signature.outputs, spec.outputs, "outputs"),
        dims=dims,
    )


def check_source(source: Path, sniff: bool = False) -> SourceKind:
    """The source's kind, by content; SourceError for a missing, unreadable or unknown file.

    `sniff` reads headers and listings only (see detect_kind), for callers outside the bounded
    step processes; the prepare step checks the file thoroughly before anything loads it."""
    if not source.exists():
        raise SourceError(f"{source}: no such file")
    try:
        return detect_kind(source, thorough=not sniff)
    except OSError as exc:
        raise SourceError(f"{source}: cannot read ({exc.strerror})") from None


def choose_model_name(spec: Spec, source: Path, name: str | None) -> str:
    """--name, else the spec's name, else the file's stem (`resnet.v2.pt2` -> `resnet.v2`),
    normalised (`ResNet50` -> `resnet50`)."""
    stem = source.name.removesuffix(source.suffix) if source.suffix else source.name
    chosen = normalize_model_name(name) if name else spec.name or normalize_model_name(stem)
    if not MODEL_NAME_RE.fullmatch(chosen):
        raise SpecError(
            f"model name {name or stem!r} is not allowed: use letters, digits, '.', '_' or '-' "
            "(at most 64; names are lowercased), or set `name` in the spec"
        )
    return chosen


def load_source(source: Path) -> SourceModel:
    """The source model, loaded by its own framework without running code from it."""
    kind = detect_kind(source)
    if kind is SourceKind.ONNX:
        from shipyard.onnx_model import load_onnx

        return load_onnx(source)
    if kind is SourceKind.ONNX_ARCHIVE:
        from shipyard.onnx_model import load_onnx_archive

        return load_onnx_archive(source)
    if kind is SourceKind.KERAS:
        from shipyard.keras_model import load_keras

        return load_keras(source)
    if kind is SourceKind.SAVED_MODEL_ARCHIVE:
        from shipyard.saved_model import load_saved_model

        return load_saved_model(source)
    from shipyard.torch_program import load_torch_source

    return load_torch_source(source)


def run_source(
    model: SourceModel, signature: Signature, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The source model's outputs on `inputs` (eager PyTorch, ONNX Runtime, or TensorFlow)."""
    return model.run(signature, inputs)


def _source_signature(model: SourceModel, spec: Spec) -> Signature:
    """The model's own signature; renames are refused where the artifacts keep the model's names
    (value ranges and fixed values work for every source)."""
    renamed = [n for n, o in (*spec.inputs.items(), *spec.outputs.items()) if o.name is not None]
    if model.keeps_own_names and renamed:
        raise SpecError(
            f"spec field {renamed[0]}.name: {model.label} source keeps its own tensor names "
            "(value ranges, low/high and value, are fine)"
        )
    return model.signature()


def read_signature(
    source: Path, spec: Spec, max_elements: int = DEFAULT_MAX_VARIANT_ELEMENTS
) -> tuple[Signature, SourceModel]:
    """Load the model (never running code from it) and read its signature with the spec applied and
    every dim's max bounded so that one variant's inputs hold at most `max_elements`."""
    model = load_source(source)
    return bound_dims(apply_spec(_source_signature(model, spec), spec), max_elements), model


def save_variant(
    folder: Path,
    variant: Variant,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    max_elements: int = DEFAULT_MAX_VARIANT_ELEMENTS,
) -> PreparedVariant:
    """Write a variant's inputs and reference outputs; outputs beyond what a variant whose inputs
    hold `max_elements` may give are refused (shipyard.variants.max_output_elements)."""
    produced, most = sum(int(a.size) for a in outputs.values()), max_output_elements(max_elements)
    if produced > most:
        raise SourceError(
            f"the model's outputs on variant {variant.name} hold {produced:,} elements; at most "
            f"{most:,} are validated (SHIPYARD_MAX_OUTPUT_ELEMENTS)"
        )
    (folder / "variants").mkdir(parents=True, exist_ok=True)
    stem = f"variants/{variant.name}"
    save_arrays(folder / f"{stem}.inputs.npz", inputs)
    save_arrays(folder / f"{stem}.reference.npz", outputs)
    return PreparedVariant(
        name=variant.name, dims=variant.dims, inputs=f"{stem}.inputs.npz", reference=f"{stem}.reference.npz"
    )


def validation_inputs(
    model: SourceModel,
    signature: Signature,
    spec: Spec,
    folder: Path,
    max_elements: int = DEFAULT_MAX_VARIANT_ELEMENTS,
) -> list[PreparedVariant]:
    """Every variant's inputs and the source model's outputs on them, saved under `folder`."""
    return [
        save_variant(folder, variant, inputs, _run_variant(model, signature, variant, inputs), max_elements)
        for variant, inputs in build_variants(signature, spec, max_elements)
    ]


def _run_variant(
    model: SourceModel, signature: Signature, variant: Variant, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The source's outputs on one variant; SourceError naming the variant's sizes and the spec
    field that narrows them when the source itself cannot run there (a detector whose sizes must
    be multiples of 32, a classifier whose input has one valid size)."""
    try:
        return run_source(model, signature, inputs)
    except ShipyardError:
        raise
    except Exception as exc:  # the framework's own error: anything a model can raise
        sizes = ", ".join(f"{name}={size}" for name, size in variant.dims.items()) or "its static shapes"
        free = [d for d in signature.dims.values() if d.min != d.max]
        hint = (
            "; if it takes only some sizes, narrow them in the spec, e.g. dims: {"
            + ", ".join(f"{d.name}: {{min: {d.typical}, max: {d.typical}}}" for d in free)
            + "}"
            if free
            else ""
        )  # first: the framework's own words can be long, and the end of a message may be cut
        raise SourceError(
            f"{model.label} source failed to run on validation variant {variant.name} ({sizes}){hint}; "
            f"it said: {type(exc).__name__}: {one_line(exc, 300)}"
        ) from exc


def edge_inputs(signature: Signature, spec: Spec, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """Seeded inputs for an extra variant (e.g. at the edge of a narrower envelope)."""
    return random_inputs(signature, spec, dims, np.random.default_rng(spec.seed + 1))
