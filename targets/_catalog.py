"""The target catalog: target name -> exporter, runtime harness, options and default gates.

Entries name their exporter and runtime by import path so that reading the catalog
(`shipyard --help`, spec checks) never imports a converter.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from shipyard.errors import SpecError, UnknownTarget
from shipyard.gates import Gates
from shipyard.source import SourceKind

__all__ = [
    "NoOptions",
    "Target",
    "all_targets",
    "check_target_settings",
    "get_target",
    "register_target",
    "resolve_targets",
]

DEFAULT_TIMEOUT_S = 900


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    exporter: str  # "module:function" taking an ExportJob
    runtime: str  # "module:function" taking a RuntimeJob
    gates: Gates
    options: type[BaseModel] = NoOptions
    source_kinds: frozenset[SourceKind] = frozenset({SourceKind.TORCH_EXPORT})
    timeout_s: int = DEFAULT_TIMEOUT_S
    toolchain: tuple[str, ...] = field(default=())  # distributions whose versions matter

    def load_exporter(self) -> Callable[..., Any]:
        return _load(self.exporter)

    def load_runtime(self) -> Callable[..., Any]:
        return _load(self.runtime)

    def parse_options(self, options: dict[str, Any]) -> BaseModel:
        try:
            return self.options.model_validate(options)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise SpecError(f"spec field targets.{self.name}.options.{where}: {err['msg']}") from None


def _load(ref: str) -> Callable[..., Any]:
    module, _, attr = ref.partition(":")
    loaded: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return loaded


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


def resolve_targets(names: list[str] | str | None) -> list[Target]:
    """Targets named by a list or a comma-separated string; None or empty means all."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        return all_targets()
    seen: dict[str, Target] = {}
    for name in names:
        seen.setdefault(name, get_target(name))
    return list(seen.values())


def check_target_settings(settings: dict[str, Any]) -> None:
    """Fail early, naming the field, on settings for unknown targets or invalid options/gates."""
    for name, entry in settings.items():
        target = get_target(name)
        target.parse_options(entry.options)
        try:
            target.gates.merged(entry.gates)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise SpecError(f"spec field targets.{name}.gates.{where}: {err['msg']}") from None
