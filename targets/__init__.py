"""Target catalog and runtime harnesses. Importing this package registers every target."""

from targets import aoti, executorch, litert_int4, ort_web, tfjs, triton
from targets._catalog import Target, all_targets, get_target, register_target, resolve_targets

__all__ = [
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
