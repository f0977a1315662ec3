"""Target catalog and runtime harnesses. Importing this package registers every target.

`targets.pipeline` runs them: check a request, plan its steps, run and judge them. A target
module needs only the names below (see CONTRIBUTING.md: adding a target).
"""

from targets import (
    _conversions,  # noqa: F401  (registers the shared conversions)
    aoti,
    executorch,
    litert_int4,
    onnx_genai,
    ort_web,
    tfjs,
    triton,
)
from targets._catalog import (
    Build,
    NoOptions,
    Rung,
    Target,
    all_targets,
    default_targets,
    get_target,
    precision_ladder,
    register_target,
    resolve_targets,
)
from targets._formats import Conversion, Format, all_conversions, conversion_path
from targets._harness import Predict, run_in_process
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets.engine.family import Family
from targets.engine.recipe import StepRecipe

__all__ = [
    "Build",
    "Conversion",
    "ExportJob",
    "ExportResult",
    "Family",
    "Format",
    "NoOptions",
    "Predict",
    "Rung",
    "RuntimeJob",
    "RuntimeResult",
    "StepRecipe",
    "Target",
    "all_conversions",
    "all_targets",
    "aoti",
    "conversion_path",
    "default_targets",
    "executorch",
    "get_target",
    "litert_int4",
    "onnx_genai",
    "ort_web",
    "precision_ladder",
    "register_target",
    "resolve_targets",
    "run_in_process",
    "tfjs",
    "triton",
]
