"""The target catalog: target name -> the format it starts from, exporter, runtime, options, gates.

Entries name their exporter and runtime by import path so that reading the catalog
(`shipyard --help`, spec checks) never imports a converter.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from shipyard.errors import SpecError, UnknownTarget
from shipyard.gates import Gates
from shipyard.precision import Precision
from shipyard.source import SourceKind
from shipyard.spec import TargetSettings, first_error
from targets._formats import Format, NoOptions, conversion_path, source_format
from targets.engine.family import Family
from targets.engine.limits import max_step_memory_mb, max_step_timeout_s

__all__ = [
    "NoOptions",
    "Target",
    "all_targets",
    "get_target",
    "ladder_variant",
    "precision_ladder",
    "register_target",
    "resolve_targets",
    "variant_name",
]

DEFAULT_TIMEOUT_S = 900


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    consumes: Format  # the format its exporter starts from; shared conversions lead there
    exporter: str  # "module:function" taking an ExportJob
    runtime: str  # "module:function" taking a RuntimeJob
    gates: Gates
    options: type[BaseModel] = NoOptions
    baseline: Format | None = None  # run beside the artifact, unpublished, held to float32 gates
    timeout_s: int = DEFAULT_TIMEOUT_S
    toolchain: tuple[str, ...] = ()  # what shapes the exported bytes (beyond the conversions')
    runtime_toolchain: tuple[str, ...] = ()  # what validation runs the artifact in
    cost_s: float = 5.0  # rough export seconds, so long chains start first
    family: Family = Family.TORCH  # the warm process family its export runs in
    runtime_family: Family = Family.TORCH  # and its validation
    warm: tuple[str, ...] = ()  # modules the export needs imported ("module:function" warms up)
    runtime_warm: tuple[str, ...] = ()  # and the validation
    needs_signature: bool = True  # False: its export reads only the source, so starts before prepare ends
    precision: Precision = Precision.FP32
    ladder: str | None = None  # the fp32 target whose precision ladder this variant is on
    calibrated: bool = False  # its export gets calibration inputs and its gates (quantizers)
    unoffered: dict[Precision, str] = field(default_factory=dict)  # ladder rungs it lacks, and why

    def rung(self, precision: Precision, **changes: Any) -> Target:
        """This target's `precision` rung: a target of its own, named `<name>-<precision>`."""
        name = variant_name(self.name, precision)
        return replace(self, name=name, precision=precision, ladder=self.name, unoffered={}, **changes)

    @property
    def in_default_set(self) -> bool:
        """Built when no target is named; ladder variants are built only when asked for."""
        return self.ladder is None

    def accepts(self, kind: SourceKind) -> bool:
        """Can this target be built from a source of this kind (through the shared conversions)?"""
        start = source_format(kind)
        return start is not None and conversion_path(start, self.consumes) is not None

    def parse_options(self, options: dict[str, Any]) -> BaseModel:
        try:
            return self.options.model_validate(options)
        except ValidationError as exc:
            raise SpecError(f"spec field targets.{self.name}.options.{first_error(exc)}") from None

    def check_settings(self, settings: TargetSettings) -> None:
        """SpecError naming the field when the spec's options or gates for this target are invalid."""
        self.parse_options(settings.options)
        if settings.precisions is not None:
            if self.ladder is not None:
                raise SpecError(
                    f"spec field targets.{self.name}.precisions: {self.name} is a rung of "
                    f"{self.ladder}'s ladder; list precisions under targets.{self.ladder}"
                )
            offered = {v.precision for v in precision_ladder(self)} | set(self.unoffered)
            unknown = [p.value for p in settings.precisions if p not in offered]
            if unknown:
                raise SpecError(
                    f"spec field targets.{self.name}.precisions: {', '.join(unknown)} not on "
                    f"{self.name}'s ladder ({', '.join(p.value for p in sorted(offered))})"
                )
        self._check_step_limits(settings)
        try:
            self.gates.merged(settings.gates)
        except ValidationError as exc:
            raise SpecError(f"spec field targets.{self.name}.gates.{first_error(exc)}") from None
        except ValueError as exc:
            raise SpecError(f"spec field targets.{self.name}.gates: {exc}") from None

    def _check_step_limits(self, settings: TargetSettings) -> None:
        """A spec may raise a step's limits up to the operator's maxima, not beyond."""
        for field_name, asked, most, unit, env in (
            ("timeout_s", settings.timeout_s, max_step_timeout_s(), "s", "SHIPYARD_MAX_STEP_TIMEOUT_S"),
            ("memory_mb", settings.memory_mb, max_step_memory_mb(), "MB", "SHIPYARD_MAX_STEP_MEMORY_MB"),
        ):
            if asked is not None and asked > most:
                raise SpecError(
                    f"spec field targets.{self.name}.{field_name}: {asked:,} {unit} is above this "
                    f"service's limit of {most:,} {unit} (${env})"
                )


_TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    if target.name in _TARGETS:
        raise ValueError(f"target {target.name!r} is registered twice")
    _TARGETS[target.name] = target
    return target


def get_target(name: str) -> Target:
    try:
        return _TARGETS[name]
    except KeyError:
        known = ", ".join(sorted(_TARGETS))
        raise UnknownTarget(f"unknown target {name!r}; known targets: {known}") from None


def all_targets() -> list[Target]:
    return [_TARGETS[n] for n in sorted(_TARGETS)]


def precision_ladder(target: Target) -> list[Target]:
    """The target and the variants on its ladder (fp32 first)."""
    base = target.ladder or target.name
    return [t for t in all_targets() if t.name == base or t.ladder == base]


def ladder_variant(base: Target, precision: Precision) -> Target | str:
    """The target that builds `base` at `precision`, or why the ladder lacks that rung."""
    for variant in precision_ladder(base):
        if variant.precision is precision:
            return variant
    return base.unoffered.get(precision, f"{base.name} offers no {precision.value} variant")


def variant_name(base: str, precision: Precision) -> str:
    """`executorch` + int8 -> `executorch-int8` (the fp32 rung keeps the family's name)."""
    return base if precision is Precision.FP32 else f"{base}-{precision.value}"


def resolve_targets(names: list[str] | str | None) -> list[Target]:
    """Targets named by a list or a comma-separated string; None or empty means the default set
    (every target but the ladder variants, which are built when named or a spec asks)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        return [t for t in all_targets() if t.in_default_set]
    seen: dict[str, Target] = {}
    for name in names:
        seen.setdefault(name, get_target(name))
    return list(seen.values())
