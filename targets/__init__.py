"""Target catalog and runtime harnesses. Importing this package registers every target.

`targets.pipeline` runs them: check a request, plan its steps, run and judge them.
"""

from targets import (
    _conversions,  # noqa: F401  (registers the shared conversions)
    aoti,
    executorch,
    litert_int4,
    ort_web,
    tfjs,
    triton,
)
from targets._catalog import Target, all_targets, get_target, register_target, resolve_targets
from targets._formats import Format

__all__ = [
    "Format",
    "Target",
    "all_targets",
    "aoti",
    "executorch",
    "get_target",
    "litert_int4",
    "ort_web",
    "register_target",
    "resolve_targets",
    "tfjs",
    "triton",
]
