"""Typed flow parameters, so the Prefect UI renders a form people can fill in.

`targets` is a multi-select of the catalog's names (an enum in the parameter schema); the spec is
`SpecForm`: the spec file's fields with descriptions and defaults, and under `targets` one entry
per target whose `options` are that target's own options model. Both are built from the catalog,
so a new target appears in the form by itself. A form validates what it can (types, ranges, known
option names, naming the field that is wrong); the flow then runs the same checks as the CLI.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from shipyard.gates import Gates
from shipyard.spec import SpecFields
from targets import Target, all_targets, precision_ladder

__all__ = ["SpecForm", "TargetName", "spec_dict", "target_names"]


def _enum_member(name: str) -> str:
    return name.upper().replace("-", "_")


if TYPE_CHECKING:
    TargetName = StrEnum
    TargetsForm = BaseModel
else:
    TargetName = StrEnum("TargetName", [(_enum_member(t.name), t.name) for t in all_targets()])
    TargetName.__doc__ = "A target of the catalog (`shipyard targets`)."


class GatesForm(Gates):
    """Gate limits; leave a field out to keep the target's default, set it to null to turn it off."""


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def _precisions_field(target: Target) -> dict[str, Any]:
    """A `precisions` field for a target with a ladder to climb, offering its rungs."""
    offered = sorted({t.precision.value for t in precision_ladder(target)} | set(target.unoffered))
    if target.ladder is not None or len(offered) < 2:
        return {}
    rungs: Any = list[Literal[tuple(offered)]]  # type: ignore[misc]
    help_text = "rungs of its precision ladder to build (default: fp32)"
    return {"precisions": (rungs | None, Field(default=None, min_length=1, description=help_text))}


def _settings_form(target: Target) -> type[BaseModel]:
    options_help = target.options.__doc__ or f"{target.name} options"
    return create_model(
        f"{_camel(target.name)}Settings",
        __config__=ConfigDict(extra="forbid"),
        __doc__=target.summary,
        options=(target.options | None, Field(default=None, description=options_help.strip())),
        gates=(GatesForm | None, Field(default=None, description="limits on the comparison metrics")),
        **_precisions_field(target),
        timeout_s=(int | None, Field(default=None, gt=0, description="seconds per step before it is killed")),
        memory_mb=(
            int | None,
            Field(default=None, ge=512, description="memory cap (MB) per step process (default: a share)"),
        ),
    )


if not TYPE_CHECKING:
    TargetsForm = create_model(
        "TargetsSettings",
        __config__=ConfigDict(extra="forbid", populate_by_name=True),
        __doc__="Settings per target (every field optional).",
        **{
            _enum_member(t.name).lower(): (
                _settings_form(t) | None,
                Field(default=None, alias=t.name, description=t.summary),
            )
            for t in all_targets()
        },
    )


class SpecForm(SpecFields):
    """A packaging spec, every field optional: what a spec file holds, but `samples` (a flow
    parameter of its own)."""

    targets: TargetsForm | None = Field(default=None, description="options, gates and limits per target")


def spec_dict(spec: SpecForm | dict[str, Any] | None) -> dict[str, Any]:
    """The spec as the user gave it (a spec file's mapping): nothing the form defaulted is added."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return spec
    dumped: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dumped


def target_names(targets: list[TargetName] | list[str] | None) -> list[str] | None:
    return [str(t) for t in targets] if targets else None
