"""Ingest and reference: check the source and spec, read the signature, compute reference outputs."""

from __future__ import annotations

import uuid
from pathlib import Path

from pydantic import BaseModel

from shipyard.errors import SourceError, SpecError
from shipyard.signature import DynamicDim, Signature, TensorSpec, default_typical
from shipyard.source import SUPPORTED_KINDS, SourceKind, detect_kind, sha256_file
from shipyard.spec import MODEL_NAME_RE, Spec
from shipyard.variants import Variant, build_variants, random_inputs, save_arrays

__all__ = [
    "PreparedRun",
    "PreparedVariant",
    "apply_spec",
    "choose_model_name",
    "extra_variant",
    "inspect_source",
    "prepare_run",
]


class PreparedVariant(BaseModel):
    name: str
    dims: dict[str, int]
    inputs: str  # .npz path
    reference: str  # .npz path of the source model's outputs


class PreparedRun(BaseModel):
    run_id: str
    model_name: str
    source: str
    source_kind: SourceKind
    source_sha256: str
    source_bytes: int
    spec: Spec
    signature: Signature
    variants: list[PreparedVariant]
    workdir: str

    @classmethod
    def load(cls, workdir: Path) -> PreparedRun:
        return cls.model_validate_json((workdir / "run.json").read_text())

    def save(self) -> None:
        (Path(self.workdir) / "run.json").write_text(self.model_dump_json(indent=2))


def _rename(tensors: list[TensorSpec], overrides: dict, kind: str) -> list[TensorSpec]:
    names = {t.name for t in tensors}
    unknown = set(overrides) - names
    if unknown:
        raise SpecError(
            f"spec field {kind}: no {kind[:-1]} named {sorted(unknown)[0]!r}; the model has {sorted(names)}"
        )
    out = [
        t.model_copy(update={"name": overrides[t.name].name or t.name}) if t.name in overrides else t
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


def _check_source(source: Path) -> SourceKind:
    if not source.exists():
        raise SourceError(f"{source}: no such file")
    try:
        kind = detect_kind(source)
    except OSError as exc:
        raise SourceError(f"{source}: cannot read ({exc.strerror})") from None
    if kind not in SUPPORTED_KINDS:
        raise SourceError(
            f"{source} is a {kind.value} model; this version packages torch.export archives (.pt2) only"
        )
    return kind


def choose_model_name(spec: Spec, source: Path, name: str | None) -> str:
    chosen = name or spec.name or source.name.split(".")[0].lower().replace(" ", "-")
    if not MODEL_NAME_RE.match(chosen):
        raise SpecError(
            f"model name {chosen!r} is not allowed: use lowercase letters, digits, "
            "'.', '_' or '-' (at most 64), or set `name` in the spec"
        )
    return chosen


def inspect_source(source: Path, spec: Spec) -> tuple[SourceKind, Signature, object]:
    """Check the source and read its signature with the spec applied (loads the program)."""
    from shipyard.torch_program import load_program, program_signature

    kind = _check_source(source)
    program = load_program(source)
    return kind, apply_spec(program_signature(program), spec), program


def prepare_run(
    source: Path, spec: Spec, workdir: Path, name: str | None = None, run_id: str | None = None
) -> PreparedRun:
    """Everything every target needs: signature, validation inputs and reference outputs."""
    from shipyard.torch_program import run_program

    source = source.resolve()
    model_name = choose_model_name(spec, source, name)
    kind, signature, program = inspect_source(source, spec)
    (workdir / "variants").mkdir(parents=True, exist_ok=True)
    variants = []
    for variant, inputs in build_variants(signature, spec):
        variants.append(_save_variant(workdir, variant, inputs, run_program(program, signature, inputs)))
    run = PreparedRun(
        run_id=run_id or uuid.uuid4().hex[:12],
        model_name=model_name,
        source=str(source),
        source_kind=kind,
        source_sha256=sha256_file(source),
        source_bytes=source.stat().st_size,
        spec=spec,
        signature=signature,
        variants=variants,
        workdir=str(workdir),
    )
    run.save()
    return run


def extra_variant(run: PreparedRun, name: str, dims: dict[str, int], folder: Path) -> PreparedVariant:
    """A further validation variant (e.g. at the edge of a narrower envelope), saved in `folder`."""
    import numpy as np

    from shipyard.torch_program import load_program, run_program

    inputs = random_inputs(run.signature, run.spec, dims, np.random.default_rng(run.spec.seed + 1))
    outputs = run_program(load_program(Path(run.source)), run.signature, inputs)
    return _save_variant(folder, Variant(name=name, dims=dims), inputs, outputs)


def _save_variant(workdir: Path, variant: Variant, inputs: dict, outputs: dict) -> PreparedVariant:
    base = workdir / "variants" / variant.name
    base.parent.mkdir(parents=True, exist_ok=True)
    save_arrays(base.with_suffix(".inputs.npz"), inputs)
    save_arrays(base.with_suffix(".reference.npz"), outputs)
    return PreparedVariant(
        name=variant.name,
        dims=variant.dims,
        inputs=str(base.with_suffix(".inputs.npz")),
        reference=str(base.with_suffix(".reference.npz")),
    )
