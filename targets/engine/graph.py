"""Plan a run: the typed steps every requested target needs, each shared step planned once.

For a torch.export source and all six targets the graph is:

    prepare ─┬─ convert:onnx ─┬─ export:ort-web ─ reference ─ validate:ort-web
             │                ├─ export:triton ── reference ─ validate:triton
             │                └─ convert:saved-model ─ export:tfjs ─ reference ─ validate:tfjs
             ├─ convert:tflite-fp32 ─ export:litert-int4 ─ reference ─ validate:litert-int4
             ├─ export:executorch ── reference ─ validate:executorch
             └─ export:aoti ──────── reference ─ validate:aoti

`prepare` reads the signature and computes every variant's reference outputs; a `reference`
step computes the one extra variant an export needs when it serves a narrower envelope (and
does nothing otherwise). A conversion's id carries the options of its chain that differ from
the defaults, so two targets asking for different ONNX opsets get two conversions (and two of
everything built on them). An export that reads only the source (aoti) does not wait for
`prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from shipyard.errors import UnknownTarget
from shipyard.gates import Gates
from shipyard.source import SourceKind
from shipyard.spec import Spec, TargetSettings
from targets._catalog import Build, Target, all_targets
from targets._formats import Conversion, Format, all_conversions, conversion_path, source_format
from targets.engine.family import Family
from targets.engine.limits import default_step_memory_mb
from targets.engine.recipe import StepRecipe

__all__ = [
    "Plan",
    "Step",
    "StepKind",
    "export_id",
    "plan_steps",
    "reference_id",
    "validate_id",
    "warm_modules",
]

PREPARE = "prepare"
SOURCE_PROGRAM = ("torch.export.pt2_archive._package", "shipyard.torch_program", "targets.engine.steps")


def source_recipe(kind: SourceKind, function: str, cost_s: float) -> StepRecipe:
    """A step that runs the source model (prepare, reference): in the warm server and with the
    distributions its kind needs."""
    source = source_format(kind)
    return StepRecipe(function, source.family, source.toolchain, SOURCE_PROGRAM, cost_s=cost_s)


def warm_modules(family: Family) -> list[str]:
    """Every module a step of `family` declares it needs, in the order a run needs them (the
    source's program, conversions, exports, runtimes): what the family's warm server imports
    while it is idle, so a target added to the catalog warms up without touching the engine."""
    first = family is source_format(SourceKind.TORCH_EXPORT).family  # where most runs start: prepare
    builds = [b for t in all_targets() for b in t.builds.values()]
    recipes = [c.recipe for c in all_conversions()]
    recipes += [b.export for b in builds] + [b.validate for b in builds]
    modules = list(SOURCE_PROGRAM) if first else []
    modules += [m for r in recipes if r.family is family for m in r.warm]
    return list(dict.fromkeys([*modules, *SOURCE_PROGRAM]))


def export_id(target: str) -> str:
    return f"export:{target}"


def reference_id(target: str) -> str:
    return f"reference:{target}"


def validate_id(target: str) -> str:
    return f"validate:{target}"


class StepKind(StrEnum):
    PREPARE = "prepare"
    CONVERT = "convert"
    EXPORT = "export"
    REFERENCE = "reference"
    VALIDATE = "validate"


@dataclass
class Step:
    id: str
    kind: StepKind
    recipe: StepRecipe  # what the step process runs, where, and what shapes its output
    needs: list[str]  # ids of the steps whose outputs it reads
    options: dict[str, Any] = field(default_factory=dict)
    timeout_s: int = 0  # 0: the recipe's; a spec may raise it (serve)
    memory_mb: int | None = None
    targets: list[str] = field(default_factory=list)  # the targets it serves
    consumes: Format | None = None  # convert/export: the format it reads
    produces: Format | None = None  # convert: the format it makes
    target: Target | None = None  # export/reference/validate: whose
    baseline_step: str | None = None  # validate: the step producing the target's baseline
    gates: Gates | None = None  # export of a calibrated target: the gates its artifact must meet
    calibrate: bool = False  # prepare: also write calibration inputs (a calibrated target needs them)

    def __post_init__(self) -> None:
        self.timeout_s = self.timeout_s or self.recipe.timeout_s

    def serve(self, target: str, settings: TargetSettings) -> None:
        """Record that one more target needs this (shared) step; its limits are the most generous
        any of them asks for."""
        first = not self.targets
        if target not in self.targets:
            self.targets.append(target)
        if settings.timeout_s:
            self.timeout_s = max(self.timeout_s, settings.timeout_s)
        wanted = _memory_mb(settings)
        self.memory_mb = wanted if first or self.memory_mb is None else max(self.memory_mb, wanted)


@dataclass
class Plan:
    steps: dict[str, Step]  # in dependency order

    def families(self) -> list[Family]:
        return sorted({s.recipe.family for s in self.steps.values()})

    def critical_path_s(self) -> dict[str, float]:
        """For each step, the rough seconds of the longest chain from it to the end of the run."""
        longest: dict[str, float] = {}
        for step in reversed(list(self.steps.values())):
            after = [longest[s.id] for s in self.steps.values() if step.id in s.needs]
            longest[step.id] = step.recipe.cost_s + max(after, default=0.0)
        return longest


def _memory_mb(settings: TargetSettings) -> int:
    """The spec's memory cap for a target's steps, else the machine's default."""
    return settings.memory_mb or default_step_memory_mb()


def _options_label(changed: dict[str, Any]) -> str:
    """`[opset=17]` for options that differ from the defaults, '' when all are default."""
    return "[" + ",".join(f"{k}={v}" for k, v in sorted(changed.items())) + "]" if changed else ""


def _conversion_step(conversion: Conversion, options: BaseModel, chain: dict[str, Any], needs: str) -> Step:
    """`chain`: every non-default option of this conversion and those before it."""
    return Step(
        id=conversion.name + _options_label(chain),
        kind=StepKind.CONVERT,
        recipe=conversion.recipe,
        needs=[PREPARE, needs] if needs != PREPARE else [PREPARE],
        options=options.model_dump(mode="json"),
        consumes=conversion.consumes,
        produces=conversion.produces,
    )


def _target_steps(
    target: Target, build: Build, options: BaseModel, settings: TargetSettings, last: str, source: SourceKind
) -> list[Step]:
    model_class = source_format(source).model_class
    """export -> reference -> validate for one target, `last` being the step its input comes from."""
    export_needs = [PREPARE] if build.needs_signature else []
    export = Step(
        id=export_id(target.name),
        kind=StepKind.EXPORT,
        recipe=build.export,
        needs=export_needs if last == PREPARE else [*export_needs, last],
        options=options.model_dump(mode="json"),
        timeout_s=settings.timeout_s or 0,
        memory_mb=_memory_mb(settings),
        consumes=build.consumes,
        target=target,
        gates=target.gates_for(model_class).merged(settings.gates) if target.calibrated else None,
    )
    reference = Step(
        id=reference_id(target.name),
        kind=StepKind.REFERENCE,
        recipe=source_recipe(source, "targets.engine.steps:reference_outputs", cost_s=0.5),
        needs=[PREPARE, export.id],
        memory_mb=_memory_mb(settings),
        target=target,
    )
    validate = Step(
        id=validate_id(target.name),
        kind=StepKind.VALIDATE,
        recipe=build.validate,
        needs=[PREPARE, export.id, reference.id],
        options=options.model_dump(mode="json"),
        timeout_s=settings.timeout_s or 0,
        memory_mb=_memory_mb(settings),
        target=target,
    )
    for step in (export, reference, validate):
        step.targets.append(target.name)
    return [export, reference, validate]


def plan_steps(kind: SourceKind, spec: Spec, targets: list[Target]) -> Plan:
    """Every step the targets need for a source of this kind; shared conversions appear once."""
    steps: dict[str, Step] = {
        PREPARE: Step(
            id=PREPARE,
            kind=StepKind.PREPARE,
            recipe=source_recipe(kind, source_format(kind).prepare, cost_s=2.0),
            needs=[],
            memory_mb=default_step_memory_mb(),
        )
    }
    start, model_class = source_format(kind).format, source_format(kind).model_class
    for target in targets:
        build = target.build(model_class)
        if build is None:
            raise UnknownTarget(f"target {target.name} builds no {model_class.value} model")
        path = conversion_path(start, build.consumes) if start else None
        if path is None:
            raise UnknownTarget(f"target {target.name} cannot be built from a {kind.value} source")
        settings = spec.targets.get(target.name, TargetSettings())
        options = target.parse_options(settings.options)
        steps[PREPARE].serve(target.name, settings)
        last, made = PREPARE, {start: PREPARE}
        chain_options: dict[str, Any] = {}
        for conversion in path:
            own = conversion.options_from(options)
            chain_options.update(own.model_dump(exclude_defaults=True))
            step = _conversion_step(conversion, own, chain_options, last)
            steps.setdefault(step.id, step).serve(target.name, settings)
            last = made[conversion.produces] = step.id
        chain = _target_steps(target, build, options, settings, last, kind)
        if build.baseline is not None:
            chain[-1].baseline_step = made[build.baseline]
            chain[-1].needs.append(made[build.baseline])
        steps.update({s.id: s for s in chain})
        if target.calibrated:
            steps[PREPARE].calibrate = True
    return Plan(steps=steps)
