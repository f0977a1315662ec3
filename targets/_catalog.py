"""The target catalog: target name -> what it builds from each model class, its options, gates, rungs.

Entries name their export and validation functions by import path (StepRecipe) so that reading the
catalog (`shipyard --help`, spec checks) never imports a converter. Registering a target registers
its precision rungs too, each a target of its own named `<name>-<precision>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from shipyard.errors import SpecError, UnknownTarget
from shipyard.gates import Gates
from shipyard.precision import Precision
from shipyard.source import ModelClass, SourceKind
from shipyard.spec import TargetSettings, first_error
from targets._formats import Format, NoOptions, conversion_path, source_format
from targets.engine.limits import max_step_memory_mb, max_step_timeout_s
from targets.engine.recipe import StepRecipe

__all__ = [
    "Build",
    "NoOptions",
    "Rung",
    "Target",
    "all_targets",
    "default_targets",
    "get_target",
    "ladder_variant",
    "precision_ladder",
    "register_target",
    "resolve_targets",
    "variant_name",
]


@dataclass(frozen=True)
class Build:
    """What a target makes from one class of model: the format its export starts from (shared
    conversions lead there), the export and the validation that runs the artifact."""

    consumes: Format
    export: StepRecipe  # its function takes an ExportJob, returns an ExportResult
    validate: StepRecipe  # its function takes a RuntimeJob, returns a RuntimeResult
    baseline: Format | None = None  # run beside the artifact, unpublished, held to float32 gates
    needs_signature: bool = True  # False: the export reads only the source, so starts before prepare ends
    gates: Gates | None = None  # what its artifacts are held to, where not the target's own gates


@dataclass(frozen=True)
class Rung:
    """A precision on a target's ladder beyond its own: what that rung's target differs in."""

    summary: str
    gates: Gates
    options: type[BaseModel] | None = None  # None: the target's own
    toolchain: tuple[str, ...] = ()  # added to the export's (a quantizer)
    warm: tuple[str, ...] = ()  # added to the export's preloaded modules
    calibrated: bool = False  # its export gets calibration inputs and its gates
    report_facts: tuple[str, ...] = ()  # its export's metrics that the HTML report shows
    model_classes: tuple[ModelClass, ...] = (ModelClass.FIXED_SHAPE,)  # the builds the rung has


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    builds: Mapping[ModelClass, Build]
    gates: Gates
    options: type[BaseModel] = NoOptions
    precision: Precision = Precision.FP32
    calibrated: bool = False  # its export gets calibration inputs and its gates (quantizers)
    rungs: Mapping[Precision, Rung] = field(default_factory=dict)  # registered as targets of their own
    unoffered: Mapping[Precision, str] = field(default_factory=dict)  # ladder rungs it lacks, and why
    ladder: str | None = None  # set on a rung's target: the target whose ladder it is on
    report_facts: tuple[str, ...] = ()  # its export's metrics that the HTML report shows (quantization)

    def build(self, model_class: ModelClass = ModelClass.FIXED_SHAPE) -> Build | None:
        return self.builds.get(model_class)

    def gates_for(self, model_class: ModelClass) -> Gates:
        """The default gates its artifacts of this class are held to."""
        build = self.build(model_class)
        return build.gates if build is not None and build.gates is not None else self.gates

    @property
    def consumes(self) -> Format:
        """The format a fixed-shape model's export starts from."""
        build = self.build()
        if build is None:
            raise ValueError(f"{self.name} builds no {ModelClass.FIXED_SHAPE.value} model")
        return build.consumes

    def rung_target(self, precision: Precision) -> Target:
        """The target of this target's `precision` rung, named `<name>-<precision>`."""
        rung = self.rungs[precision]
        builds = {
            model_class: replace(build, export=build.export.extended(rung.toolchain, rung.warm), gates=None)
            for model_class, build in self.builds.items()
            if model_class in rung.model_classes
        }
        return replace(
            self,
            name=variant_name(self.name, precision),
            summary=rung.summary,
            builds=builds,
            gates=rung.gates,
            options=rung.options or self.options,
            precision=precision,
            calibrated=rung.calibrated,
            report_facts=rung.report_facts,
            rungs={},
            unoffered={},
            ladder=self.name,
        )

    @property
    def in_default_set(self) -> bool:
        """Built when no target is named; ladder variants are built only when asked for."""
        return self.ladder is None

    def accepts(self, kind: SourceKind) -> bool:
        """Can this target build a source of this kind (its class of model, through the shared
        conversions)?"""
        return self.refusal(kind) is None

    def refusal(self, kind: SourceKind) -> str | None:
        """Why this target cannot be built from a source of this kind (None: it can)."""
        source = source_format(kind)
        build = self.build(source.model_class)
        if build is None:
            return f"{self.name} builds no {source.model_class.value} model"
        if source.format is None or conversion_path(source.format, build.consumes) is None:
            return (
                f"no converter path from this {kind.value} source to {build.consumes.value}, "
                f"which {self.name} is built from"
            )
        return None

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
    """Add a target and the targets of its precision rungs to the catalog."""
    made = [target, *(target.rung_target(p) for p in target.rungs)]
    for each in made:
        if each.name in _TARGETS:
            raise ValueError(f"target {each.name!r} is registered twice")
    _TARGETS.update({each.name: each for each in made})
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


def default_targets(model_class: ModelClass = ModelClass.FIXED_SHAPE) -> list[Target]:
    """What a run of a model of this class builds when no target is named: every target that
    builds fixed-shape models (a source one cannot take lists it as skipped, with why) and every
    one that builds this class; ladder rungs are built when named or a spec asks."""
    general = ModelClass.FIXED_SHAPE
    return [t for t in all_targets() if t.in_default_set and (t.build(general) or t.build(model_class))]


def resolve_targets(
    names: list[str] | str | None, model_class: ModelClass = ModelClass.FIXED_SHAPE
) -> list[Target]:
    """Targets named by a list or a comma-separated string; None or empty means the default set
    for a model of this class."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        return default_targets(model_class)
    seen: dict[str, Target] = {}
    for name in names:
        seen.setdefault(name, get_target(name))
    return list(seen.values())
