"""How to run one kind of step: what a step process calls, where it forks from, what shapes its output.

A conversion declares one recipe, a target two for each model class it builds (its export and its
validation), the engine one for each of its own steps; the planner copies a recipe into every
step, the fork servers preload what the recipes name (graph.warm_modules).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from targets.engine.family import Family

__all__ = ["DEFAULT_TIMEOUT_S", "StepRecipe"]

DEFAULT_TIMEOUT_S = 900


@dataclass(frozen=True)
class StepRecipe:
    function: str  # "module:function" the step process calls with its job
    family: Family = Family.TORCH  # the warm server it forks from
    toolchain: tuple[str, ...] = ()  # distributions whose versions shape its output (in its cache key)
    warm: tuple[str, ...] = ()  # modules its server imports while idle ("module:function" also runs it)
    timeout_s: int = DEFAULT_TIMEOUT_S  # a spec may raise it up to the operator's maximum
    cost_s: float = 1.0  # rough seconds, so long chains start first

    def extended(self, toolchain: tuple[str, ...] = (), warm: tuple[str, ...] = ()) -> StepRecipe:
        """This recipe needing more distributions or preloaded modules (a precision rung's quantizer)."""
        return replace(
            self,
            toolchain=tuple(dict.fromkeys((*self.toolchain, *toolchain))),
            warm=tuple(dict.fromkeys((*self.warm, *warm))),
        )
