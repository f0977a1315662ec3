"""litert-int4: .tflite with int4 weights (litert-torch, ai-edge-quantizer), run in LiteRT."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shipyard.compare import compare_outputs
from shipyard.gates import Gates
from shipyard.precision import Precision
from shipyard.saved_model import signature_name
from shipyard.signature import DimRange, Signature
from shipyard.source import ModelClass
from targets._catalog import Build, Target, register_target
from targets._formats import Format
from targets._harness import Predict, run_in_process
from targets._jobs import ArtifactRole, ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets.engine.family import Family
from targets.engine.recipe import StepRecipe

if TYPE_CHECKING:
    from exporters.int4_search import Measured

RECIPE_FILE = "int4_recipe.json"  # the ai-edge-quantizer recipe that made the artifact, to reuse
__all__ = ["INT4_GATES", "LiteRtInt4Options", "export", "run_artifact"]

# Int4 is lossy: gate on direction and relative size of the error, not on absolute error.
INT4_GATES = Gates(min_cosine=0.98, max_rel_l2_err=0.2)
RUNTIME = "LiteRT XNNPACK"


class LiteRtInt4Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: (
        Literal["dynamic_wi4_afp32", "dynamic_wi4b32_afp32", "dynamic_wi4b64_afp32", "weight_only_wi4_afp32"]
        | None
    ) = Field(
        default=None,
        description="fix this ai-edge-quantizer int4 recipe (no search); default: search for the "
        "first recipe, in order of size, that passes the gates",
    )
    min_int4_share: float = Field(
        default=0.0, ge=0, le=1, description="least share of weight bytes that must be int4"
    )
    search_budget: int = Field(
        default=400,
        ge=1,
        description="quantizations the int4 search may make (a count, so any host finds the same)",
    )


def _signature_runner(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter.get_signature_runner()


def _fed(array: np.ndarray, dtype: np.dtype[Any], name: str) -> np.ndarray:
    """An input as the artifact declares it (litert-torch narrows int64 token ids to int32);
    refused when a value would not survive the cast."""
    if array.dtype == dtype:
        return array
    cast = array.astype(dtype)
    if not np.array_equal(cast.astype(array.dtype), array):
        raise ValueError(f"input {name}: its values do not fit the {dtype} the artifact takes")
    return cast


class UnmatchedSignature(Exception):
    """The .tflite's signature keys cannot be matched to the model's inputs or outputs."""


def _keys(found: list[str], names: list[str]) -> list[str]:
    """The runner's keys in the order of `names`: by name (a .tflite from a SavedModel keeps them),
    else by position (litert-torch numbers them args_0.. and output_0..). Anything else is a
    .tflite whose signature cannot be matched to the model's, said as such."""
    if set(found) == set(names):
        return names
    stored = [signature_name(n) for n in names]  # a .tflite from a SavedModel: TensorFlow's names
    if set(found) == set(stored) and len(set(stored)) == len(names):
        return stored
    numbered = {k: k.rsplit("_", 1)[-1] for k in found}
    if len(found) != len(names) or not all(n.isdigit() for n in numbered.values()):
        raise UnmatchedSignature(
            f"the .tflite signature has {sorted(found)}, which match neither the model's names "
            f"{names} nor numbered positions"
        )
    return sorted(found, key=lambda k: int(numbered[k]))


def _predict(runner: Any, signature: Signature) -> Predict:
    details = runner.get_input_details()
    declared = {name: np.dtype(d["dtype"]) for name, d in details.items()}
    input_keys = _keys(list(details), signature.input_names())

    def predict(inputs: list[np.ndarray]) -> list[Any]:
        feeds = dict(zip(input_keys, inputs, strict=True))
        out = runner(**{k: _fed(a, declared.get(k, a.dtype), k) for k, a in feeds.items()})
        return [out[k] for k in _keys(list(out), signature.output_names())]

    return predict


def _changed_dtypes(path: Path, signature: Signature) -> dict[str, str]:
    """Inputs and outputs whose dtype in the .tflite differs from the source model's."""
    runner = _signature_runner(path)
    changed = {}
    details = [
        (runner.get_input_details(), signature.inputs),
        (runner.get_output_details(), signature.outputs),
    ]
    for found, tensors in details:
        keys = _keys(list(found), [t.name for t in tensors])
        for key, tensor in zip(keys, tensors, strict=False):
            if np.dtype(found[key]["dtype"]) != np.dtype(tensor.dtype):
                changed[tensor.name] = np.dtype(found[key]["dtype"]).name
    return changed


def _probe_resize(path: Path, signature: Signature, dims: dict[str, int]) -> bool:
    """Can the interpreter resize the inputs to these dims and run?"""
    zeros = [np.zeros(t.concrete_shape(dims), dtype=t.dtype) for t in signature.inputs]
    try:
        _predict(_signature_runner(path), signature)(zeros)
    except (RuntimeError, ValueError):
        return False
    return True


def _served_envelope(path: Path, signature: Signature) -> tuple[dict[str, DimRange], str | None]:
    """The interpreter resizes inputs, or the model serves only the shape it was traced at."""
    if not signature.dims:
        return {}, None
    low = {n: d.min for n, d in signature.dims.items()}
    high = {n: d.max for n, d in signature.dims.items()}
    if _probe_resize(path, signature, low) and _probe_resize(path, signature, high):
        return {}, "inputs are resized in the interpreter"
    traced = {n: d.typical for n, d in signature.dims.items()}
    envelope = {n: DimRange(min=v, max=v) for n, v in traced.items()}
    return envelope, f"inputs are fixed at the traced shape {traced}: the interpreter cannot resize them"


def _calibration_measure(float_path: Path, job: ExportJob) -> tuple[Callable[[bytes], Measured], str]:
    """Outputs of a candidate .tflite against the float one's, on the calibration batches that
    the float .tflite can run (it may be fixed at its traced shape), and what they were."""
    from ai_edge_litert.interpreter import Interpreter

    from exporters.int4_search import Measured

    def run(model: bytes, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        predict = _predict(Interpreter(model_content=model).get_signature_runner(), job.interface)
        outputs = predict([batch[n] for n in job.interface.input_names()])
        return dict(zip(job.interface.output_names(), outputs, strict=True))

    reference = float_path.read_bytes()

    def fitting(
        batches: list[dict[str, np.ndarray]],
    ) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        runnable = []
        for batch in batches:
            with contextlib.suppress(RuntimeError, ValueError):
                runnable.append((batch, run(reference, batch)))
        return runnable

    assert job.calibration is not None
    described = job.calibration.describe()
    runnable = fitting(job.calibration_batches())
    if not runnable and job.calibration.generated:
        runnable = fitting(job.calibration_batches(generated=True))
        described = (
            "the spec's samples do not fit the .tflite's traced input shapes, so the search measured "
            f"on {len(runnable)} batches of generated inputs (a weak proxy for real data)"
        )
    if not runnable:
        raise ValueError(
            "the int4 search has no input to measure on: no calibration batch fits the float "
            ".tflite's input shapes (litert-torch fixes them at the traced, typical dims); give "
            "samples at those dims, or fix a recipe in the spec (no search)"
        )
    rel_eps = job.target_gates.rel_eps

    def measure(model: bytes) -> Measured:
        found = [compare_outputs("calibration", "", {}, ref, run(model, b), rel_eps) for b, ref in runnable]
        return Measured(
            cosine=min(m.cosine for m in found),
            rel_l2_err=max(m.rel_l2_err for m in found),
            max_abs_err=max(m.max_abs_err for m in found),
            max_rel_err=max(m.max_rel_err for m in found),
        )

    return measure, described


def _write_recipe(job: ExportJob, rules: list[dict[str, Any]]) -> None:
    (job.out_path / RECIPE_FILE).write_text(json.dumps(rules, indent=1, sort_keys=True) + "\n")


class _Quantized(BaseModel):
    path: Path
    notes: list[str]
    metrics: dict[str, float | int | str] = {}


def _fixed_recipe(float_path: Path, job: ExportJob, options: LiteRtInt4Options) -> _Quantized:
    from ai_edge_quantizer import recipe

    from exporters.tflite2int4 import quantize_int4

    assert options.recipe is not None
    path = quantize_int4(float_path, job.out_path / "model_int4.tflite", options.recipe)
    _write_recipe(job, getattr(recipe, options.recipe)())
    return _Quantized(path=path, notes=[f"recipe {options.recipe}, fixed by the spec (no search)"])


def _searched_recipe(float_path: Path, job: ExportJob, options: LiteRtInt4Options) -> _Quantized:
    from exporters.int4_search import Int4Recipe, SearchFailed, search_int4

    measure, measured_on = _calibration_measure(float_path, job)
    try:
        found = search_int4(
            float_path,
            job.work_path / "search",
            measure,
            job.target_gates,
            options.min_int4_share,
            options.search_budget,
        )
    except SearchFailed as exc:
        raise ValueError(f"{exc} ({measured_on})") from None
    path = job.out_path / "model_int4.tflite"
    shutil.copyfile(job.work_path / "search" / found.chosen.file, path)
    _write_recipe(job, found.chosen.recipe.rules())
    first = found.tried[0]
    notes = [
        f"int4 recipe found by search: {found.chosen.recipe.describe()} ({len(found.tried)} "
        f"candidate(s) in {found.seconds:.1f} s; on the calibration inputs cosine "
        f"{found.chosen.measured.cosine:.4f}, rel L2 {found.chosen.measured.rel_l2_err:.3g})",
        *(k.describe() for k in found.chosen.recipe.kept),
        f"search inputs: {measured_on}",
    ]
    if found.chosen is not first and first.recipe == Int4Recipe():
        notes.append(f"per-channel int4 everywhere missed the gates: {first.summary()}")
    notes += [f"not tried: {u}" for u in found.unavailable]
    metrics: dict[str, float | int | str] = {
        "search_s": round(found.seconds, 3),
        "search_candidates": len(found.tried),
        "kept_layers": len(found.chosen.recipe.kept),
    }
    return _Quantized(path=path, notes=notes, metrics=metrics)


def export(job: ExportJob) -> ExportResult:
    from exporters.tflite2int4 import weight_stats

    options = job.options_as(LiteRtInt4Options)
    float_path = job.input(Format.TFLITE_FP32)
    quantize = _fixed_recipe if options.recipe else _searched_recipe
    quantized = quantize(float_path, job, options)
    int4_path, notes = quantized.path, quantized.notes
    stats = weight_stats(int4_path)
    if stats.int4_tensors == 0:
        raise ValueError(
            "no weight was stored as int4: the model has no int4-eligible ops (FULLY_CONNECTED, "
            "CONV_2D, EMBEDDING_LOOKUP), so it would still be float; not publishing it as int4"
        )
    if stats.int4_share < options.min_int4_share:
        raise ValueError(
            f"int4 holds {stats.int4_share:.1%} of weight bytes, below the spec's min_int4_share "
            f"{options.min_int4_share:.1%} ({'; '.join(notes)})"
        )
    fp32_bytes = float_path.stat().st_size
    metrics: dict[str, float | int | str] = {
        "int4_tensors": stats.int4_tensors,
        "int4_weight_share": round(stats.int4_share, 4),
        "int8_weight_share": round(stats.int8_bytes / stats.weight_bytes, 4) if stats.weight_bytes else 0,
        "fp32_tflite_bytes": fp32_bytes,
        "size_vs_fp32": round(int4_path.stat().st_size / fp32_bytes, 4),
        **quantized.metrics,
    }
    notes.append(
        f"{stats.int4_tensors} int4 weight tensor(s) hold {stats.int4_share:.1%} of weight bytes, "
        f"{stats.int8_tensors} int8 tensor(s) {metrics['int8_weight_share']:.1%}; {stats.float_tensors} "
        f"float tensor(s) ({stats.float_bytes:,} bytes) stay float; file is "
        f"{metrics['size_vs_fp32']:.2f}x the fp32 .tflite"
    )
    envelope, note = _served_envelope(int4_path, job.interface)
    notes += [note] if note else []
    interface = _changed_dtypes(int4_path, job.interface)
    notes += [
        f"{name} is {dtype} in the artifact (fed and read as such)" for name, dtype in interface.items()
    ]
    return ExportResult(
        files=["model_int4.tflite", RECIPE_FILE],
        envelope=envelope,
        notes=notes,
        metrics=metrics,
        interface=interface,
    )


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    """Run the int4 model, and the fp32 .tflite it came from as a baseline.

    The baseline is held to float32 gates: ops that stay float must not drift, so any
    error beyond them is the quantization's alone.
    """
    int4_path = job.artifact("model_int4.tflite")
    runs = [
        run_in_process(
            job, "model_int4.tflite", RUNTIME, lambda: _predict(_signature_runner(int4_path), job.signature)
        )
    ]
    if job.baseline:
        baseline = Path(job.baseline)
        fp32 = run_in_process(
            job,
            "model_fp32.tflite",
            RUNTIME,
            lambda: _predict(_signature_runner(baseline), job.signature),
            ArtifactRole.BASELINE,
        )
        runs.append(fp32)
    return RuntimeResult(runs=runs)


register_target(
    Target(
        name="litert-int4",
        summary="LiteRT .tflite with int4 weights (accuracy-aware recipe search), run in LiteRT",
        builds={
            ModelClass.FIXED_SHAPE: Build(
                consumes=Format.TFLITE_FP32,
                export=StepRecipe(
                    "targets.litert_int4:export",
                    family=Family.TF,
                    toolchain=("ai-edge-quantizer", "ai-edge-litert"),
                    warm=(
                        "ai_edge_quantizer.quantizer",
                        "ai_edge_litert.interpreter",
                        "exporters.int4_search",
                    ),
                    timeout_s=1200,
                    cost_s=3,
                ),
                validate=StepRecipe(
                    "targets.litert_int4:run_artifact",
                    family=Family.TF,
                    toolchain=("ai-edge-litert",),
                    warm=("ai_edge_litert.interpreter",),
                    timeout_s=1200,
                    cost_s=2,
                ),
                baseline=Format.TFLITE_FP32,
            )
        },
        gates=INT4_GATES,
        options=LiteRtInt4Options,
        precision=Precision.INT4,
        calibrated=True,
        report_facts=("size_vs_fp32", "int4_weight_share", "int8_weight_share", "kept_layers", "search_s"),
    )
)
