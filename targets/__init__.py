"""Target catalog and runtime harnesses. Importing this package registers every target."""

from targets import aoti, executorch, ort_web, triton
from targets._catalog import Target, all_targets, get_target, register_target, resolve_targets

__all__ = [
    "Target",
    "all_targets",
    "aoti",
    "executorch",
    "get_target",
    "ort_web",
    "register_target",
    "resolve_targets",
    "triton",
]
