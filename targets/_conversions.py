"""The shared conversions between formats: each a converter function and its registration.

A conversion that several targets need runs once per run (see targets._formats); adding one is a
function here and a `register_conversion` below it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from exporters.keras2savedmodel import KerasSavedModelOptions
from exporters.onnx2savedmodel import SavedModelOptions
from exporters.torch2onnx import OnnxExport, OnnxOptions
from shipyard.onnx_external import copy_onnx
from shipyard.signature import Signature
from targets._formats import Conversion, Format, register_conversion
from targets._jobs import ExportJob, ExportResult
from targets.engine.family import Family
from targets.engine.recipe import StepRecipe

__all__: list[str] = []

PROTOBUF_LIMIT = 2**31  # bytes: one protobuf message, so one single-file ONNX model


def _files_in(folder: Path) -> list[str]:
    """Every file under `folder`, relative and '/'-separated (a folder-shaped product)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _onnx_from(job: ExportJob, fmt: Format, export: Callable[..., OnnxExport]) -> ExportResult:
    """model.onnx made from the job's `fmt` input by `export(source, interface, path, opset)`."""
    opset = job.options_as(OnnxOptions).opset
    made = export(job.input(fmt), job.interface, job.out_path / "model.onnx", opset)
    return ExportResult(files=[made.path.name], product=made.path.name, notes=made.notes)


def to_onnx(job: ExportJob) -> ExportResult:
    from exporters.torch2onnx import export_onnx

    return _onnx_from(job, Format.TORCH_EXPORT, export_onnx)


def _fixed_size_candidates(signature: Signature) -> list[dict[str, int]]:
    """Dim values to fix a graph at when it cannot stay dynamic, most useful first: every dim
    typical; then batch 1 (one request at a time, as in a browser) with the others typical."""
    typical = {name: dim.typical for name, dim in signature.dims.items()}
    batch = signature.batch_dim()
    single = {**typical, batch.name: batch.min} if batch is not None else typical
    return [typical, single] if single != typical else [typical]


def to_saved_model(job: ExportJob) -> ExportResult:
    from exporters.onnx2savedmodel import ValueRange, convert_to_saved_model

    options = job.options_as(SavedModelOptions)
    # 3-D to 5-D inputs keep PyTorch's channels-first layout (onnx2tf would make them NHWC).
    keep = [t.name for t in job.interface.inputs if 3 <= len(t.shape) <= 5]
    # onnx2tf rewrites the ONNX file it is given (onnxsim, in place): give it a copy, never the input.
    copied = copy_onnx(job.input(Format.ONNX), job.work_path / "model.onnx")
    size = sum(p.stat().st_size for p in copied)
    if size >= PROTOBUF_LIMIT:  # onnxsim and onnx2tf hold the model in one protobuf
        raise ValueError(
            f"the ONNX model holds {size:,} bytes: onnx2tf converts models under 2 GiB (and a "
            "TF.js or TFLite model that large would not load on a phone or in a browser either)"
        )
    onnx_copy = copied[0]
    notes = convert_to_saved_model(
        onnx_copy,
        job.out_path,
        keep,
        options.pseudo_ops,
        job.work_path,
        sizes=[
            {t.name: list(t.concrete_shape(dims)) for t in job.interface.inputs}
            for dims in _fixed_size_candidates(job.interface)
        ],
        outputs={t.name: t.shape for t in job.interface.outputs},
        fixed_values={t.name: t.value for t in job.interface.inputs if t.value is not None},
        value_ranges={t.name: ValueRange(t.low, t.high) for t in job.interface.inputs},
    )
    files = _files_in(job.out_path)
    notes += [f"input layout kept as in the source for {keep}"] if keep else []
    return ExportResult(files=files, product=".", notes=notes)


def keras_to_saved_model(job: ExportJob) -> ExportResult:
    from exporters.keras2savedmodel import export_saved_model

    options = job.options_as(KerasSavedModelOptions)
    export_saved_model(job.input(Format.KERAS), job.out_path, options.erfc_as_erf)
    files = _files_in(job.out_path)
    notes = ["input layout as in the Keras model (channels-last)"]
    notes += ["erfc traced as 1 - erf (TF.js has no Erfc)"] if options.erfc_as_erf else []
    return ExportResult(files=files, product=".", notes=notes)


def keras_to_onnx(job: ExportJob) -> ExportResult:
    from exporters.tensorflow2onnx import export_onnx_from_keras

    return _onnx_from(job, Format.KERAS, export_onnx_from_keras)


def unpack_saved_model(job: ExportJob) -> ExportResult:
    """The archive's SavedModel, unpacked after every entry and its serving ops were checked."""
    from shipyard.saved_model import unpack_saved_model
    from shipyard.saved_model_ops import check_ops

    folder = unpack_saved_model(job.input(Format.SAVED_MODEL_ARCHIVE), job.work_path / "unpacked")
    check_ops(folder)
    shutil.copytree(folder, job.out_path, dirs_exist_ok=True)
    files = _files_in(job.out_path)
    return ExportResult(files=files, product=".")


def unpack_onnx(job: ExportJob) -> ExportResult:
    """The archive's ONNX model as model.onnx, its external data files beside it, after every
    entry and every data location was checked."""
    import onnx

    from shipyard.onnx_external import external_data_files, unpack_onnx_archive

    model_file = unpack_onnx_archive(job.input(Format.ONNX_ARCHIVE), job.work_path / "unpacked")
    data = external_data_files(onnx.load_model(str(model_file), load_external_data=False), model_file)
    written = copy_onnx(model_file, job.out_path / "model.onnx")
    files = [p.relative_to(job.out_path).as_posix() for p in written]
    size = sum(p.stat().st_size for p in written)
    notes = [f"weights in {len(data)} external data file(s) beside model.onnx, {size:,} bytes"]
    return ExportResult(files=files, product=files[0], notes=notes if data else [])


def unpack_hf_folder(job: ExportJob) -> ExportResult:
    """The uploaded model folder, unpacked with the checked unpacker and checked again (no custom
    code, no pickles, safetensors headers inside their files): what LLM exporters read."""
    from shipyard.archive import unpack_archive
    from shipyard.hf_folder import find_hf_folder, read_causal_lm

    unpack_archive(job.input(Format.HF_ARCHIVE), job.work_path / "unpacked")
    folder = find_hf_folder(job.work_path / "unpacked")
    read_causal_lm(folder)
    shutil.copytree(folder, job.out_path / "model")
    return ExportResult(files=_files_in(job.out_path), product="model")


def saved_model_to_onnx(job: ExportJob) -> ExportResult:
    from exporters.tensorflow2onnx import export_onnx_from_saved_model

    return _onnx_from(job, Format.SAVED_MODEL, export_onnx_from_saved_model)


def saved_model_to_tflite(job: ExportJob) -> ExportResult:
    from exporters.savedmodel2tflite import convert_saved_model_to_tflite

    path = convert_saved_model_to_tflite(job.input(Format.SAVED_MODEL), job.out_path / "model_fp32.tflite")
    return ExportResult(files=[path.name], product=path.name)


def to_tflite_fp32(job: ExportJob) -> ExportResult:
    """litert-torch at the typical shape (it cannot lower a symbolic batch through Linear)."""
    from exporters.torch2tflite import export_tflite

    traced = {name: dim.typical for name, dim in job.interface.dims.items()}
    rng = np.random.default_rng(0)
    sample = [rng.standard_normal(t.concrete_shape(traced)).astype(t.dtype) for t in job.interface.inputs]
    path = export_tflite(job.input(Format.TORCH_EXPORT), sample, job.out_path / "model_fp32.tflite")
    return ExportResult(files=[path.name], product=path.name, notes=[f"traced at {traced}"])


register_conversion(
    Conversion(
        consumes=Format.TORCH_EXPORT,
        produces=Format.ONNX,
        recipe=StepRecipe(
            function="targets._conversions:to_onnx",
            toolchain=("torch", "onnx", "onnxscript"),
            cost_s=3,
            warm=(
                "torch.export.pt2_archive._package",
                "torch.onnx._internal.exporter._core",
                "onnxscript.optimizer",
                "onnx.reference",
                "exporters.torch2onnx",
            ),
        ),
        options=OnnxOptions,
    )
)
register_conversion(
    Conversion(
        consumes=Format.ONNX,
        produces=Format.SAVED_MODEL,
        recipe=StepRecipe(
            function="targets._conversions:to_saved_model",
            toolchain=("onnx", "onnx2tf", "onnxsim", "onnxruntime", "tensorflow", "tf-keras"),
            cost_s=10,
            timeout_s=1200,
            family=Family.TF,
            warm=("tensorflow", "tf_keras", "onnx2tf", "onnxsim", "onnxruntime", "exporters.onnx2savedmodel"),
        ),
        options=SavedModelOptions,
    )
)
register_conversion(
    Conversion(
        consumes=Format.KERAS,
        produces=Format.SAVED_MODEL,
        recipe=StepRecipe(
            function="targets._conversions:keras_to_saved_model",
            toolchain=("keras", "tensorflow"),
            cost_s=4,
            family=Family.TF,
            warm=("tensorflow", "keras", "exporters.keras2savedmodel"),
        ),
        options=KerasSavedModelOptions,
    )
)
register_conversion(
    Conversion(
        consumes=Format.KERAS,
        produces=Format.ONNX,
        recipe=StepRecipe(
            function="targets._conversions:keras_to_onnx",
            toolchain=("keras", "tensorflow", "tf2onnx", "onnx"),
            cost_s=4,
            family=Family.TF,
            warm=("tensorflow", "keras", "tf2onnx", "exporters.tensorflow2onnx"),
        ),
        options=OnnxOptions,
    )
)
register_conversion(
    Conversion(
        consumes=Format.SAVED_MODEL_ARCHIVE,
        produces=Format.SAVED_MODEL,
        recipe=StepRecipe(
            function="targets._conversions:unpack_saved_model",
            toolchain=("tensorflow",),
            cost_s=1,
            family=Family.TF,
            warm=("tensorflow", "shipyard.saved_model"),
        ),
    )
)
register_conversion(
    Conversion(
        consumes=Format.ONNX_ARCHIVE,
        produces=Format.ONNX,
        recipe=StepRecipe(
            function="targets._conversions:unpack_onnx",
            toolchain=("onnx",),
            cost_s=1,
            warm=("onnx", "shipyard.onnx_external"),
        ),
    )
)
register_conversion(
    Conversion(
        consumes=Format.SAVED_MODEL,
        produces=Format.ONNX,
        recipe=StepRecipe(
            function="targets._conversions:saved_model_to_onnx",
            toolchain=("tensorflow", "tf2onnx", "onnx"),
            cost_s=4,
            family=Family.TF,
            warm=("tensorflow", "tf2onnx", "exporters.tensorflow2onnx"),
        ),
        options=OnnxOptions,
    )
)
register_conversion(
    Conversion(
        consumes=Format.SAVED_MODEL,
        produces=Format.TFLITE_FP32,
        recipe=StepRecipe(
            function="targets._conversions:saved_model_to_tflite",
            toolchain=("tensorflow",),
            cost_s=5,
            timeout_s=1200,
            family=Family.TF,
            warm=("tensorflow", "exporters.savedmodel2tflite"),
        ),
    )
)
register_conversion(
    Conversion(
        consumes=Format.TORCH_EXPORT,
        produces=Format.TFLITE_FP32,
        recipe=StepRecipe(
            function="targets._conversions:to_tflite_fp32",
            toolchain=("torch", "litert-torch", "tensorflow"),
            cost_s=5,
            timeout_s=1200,
            family=Family.TF,
            warm=("torch.export.pt2_archive._package", "litert_torch", "exporters.torch2tflite"),
        ),
    )
)
register_conversion(
    Conversion(
        consumes=Format.HF_ARCHIVE,
        produces=Format.HF_FOLDER,
        recipe=StepRecipe(
            function="targets._conversions:unpack_hf_folder",
            toolchain=("safetensors",),
            cost_s=1,
            warm=("shipyard.hf_folder",),
        ),
    )
)
