"""triton: a Triton model repository (ONNX Runtime backend), checked config-against-graph and run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporters.onnx2triton import TritonOptions, batching, triton_dtype
from shipyard.errors import ValidationMismatch
from shipyard.gates import FP32_GATES
from shipyard.precision import Int8Options
from shipyard.signature import DimRange, pinned
from shipyard.source import ModelClass
from targets._catalog import Build, Target, register_target
from targets._formats import Format
from targets._harness import Predict, run_in_process
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult
from targets._onnx_ladder import ladder_onnx, onnx_rungs
from targets.engine.recipe import StepRecipe

__all__ = ["TritonInt8Options", "check_config", "export", "run_artifact"]


class TritonInt8Options(TritonOptions, Int8Options):
    pass


def export(job: ExportJob) -> ExportResult:
    """The model repository, its model.onnx at the job's precision (fp32, int8, fp16)."""
    from exporters.onnx2triton import write_repository

    options = job.options_as(TritonOptions)
    made = ladder_onnx(job)
    interface = pinned(job.interface, made.envelope)  # the config declares what the .onnx declares
    written = write_repository(made.path, job.out_path, job.model_name, interface, options)
    max_batch, batch_dim = batching(interface)
    envelope, notes = dict(made.envelope), list(made.notes)
    if batch_dim:
        envelope[batch_dim] = DimRange(min=1, max=max_batch)
        notes.append(f"max_batch_size {max_batch} with dynamic batching on dim {batch_dim}")
    elif (batch := job.interface.batch_dim()) is not None and batch.name in made.envelope:
        notes.append(f"max_batch_size 0: the .onnx fixes dim {batch.name} at {made.envelope[batch.name].min}")
    else:
        notes.append("max_batch_size 0: no dim at axis 0 of every tensor reaches down to 1")
    return ExportResult(
        files=[p.relative_to(job.out_path).as_posix() for p in written],
        envelope=envelope,
        notes=notes,
        metrics=made.metrics,
    )


def _graph_io(model_file: Path) -> dict[str, tuple[str, list[int | str]]]:
    """Each graph input's and output's dtype and declared dims (a name where dynamic)."""
    import onnx

    from shipyard.onnx_model import onnx_dtype_name

    io = {}
    graph = onnx.load_model(str(model_file), load_external_data=False).graph
    for value in [*graph.input, *graph.output]:
        t = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        try:
            dtype = onnx_dtype_name(t.elem_type)
        except KeyError:
            dtype = f"onnx-type-{t.elem_type}"
        io[value.name] = (dtype, shape)
    return io


def check_config(model_dir: Path) -> Any:
    """Parse config.pbtxt and check it against the ONNX graph; return the ModelConfig."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())
    problems = []
    if config.name != model_dir.name:
        problems.append(f"config name {config.name!r} differs from folder {model_dir.name!r}")
    if config.backend != "onnxruntime" and config.platform != "onnxruntime_onnx":
        problems.append(f"backend {config.backend or config.platform!r} is not onnxruntime")
    model_file = model_dir / "1" / (config.default_model_filename or "model.onnx")
    if not model_file.is_file():
        raise ValidationMismatch(f"{model_file.relative_to(model_dir.parent)} is missing")
    graph = _graph_io(model_file)
    batched = config.max_batch_size > 0
    declared = list(config.input) + list(config.output)
    if {t.name for t in declared} != set(graph):
        problems.append(
            f"config tensors {sorted(t.name for t in declared)} differ from graph {sorted(graph)}"
        )
    for tensor in declared:
        if tensor.name not in graph:
            continue
        dtype, shape = graph[tensor.name]
        if mc.DataType.Name(tensor.data_type) != triton_dtype(dtype):
            problems.append(f"{tensor.name}: config {mc.DataType.Name(tensor.data_type)}, graph {dtype}")
        if batched and (not shape or isinstance(shape[0], int)):
            problems.append(f"{tensor.name}: max_batch_size > 0 but graph axis 0 is fixed")
        want = [-1 if isinstance(d, str) else d for d in (shape[1:] if batched else shape)]
        if list(tensor.dims) != want:
            problems.append(f"{tensor.name}: config dims {list(tensor.dims)}, graph {want}")
    if problems:
        raise ValidationMismatch("config.pbtxt does not match model.onnx: " + "; ".join(problems))
    return config


def run_artifact(job: RuntimeJob) -> RuntimeResult:
    import onnxruntime as ort

    model_dir = Path(job.artifact_dir) / job.model_name
    config = check_config(model_dir)
    names = job.signature.input_names()

    def load() -> Predict:
        model = str(model_dir / "1" / "model.onnx")
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return lambda inputs: session.run(None, dict(zip(names, inputs, strict=True)))

    run = run_in_process(job, f"{job.model_name}/1/model.onnx", "onnxruntime CPU", load)
    batch_dim = batching(job.signature)[1]
    sizes = sorted({v.dims[batch_dim] for v in job.variants if batch_dim in v.dims})
    notes = [f"config.pbtxt matches the graph (max_batch_size {config.max_batch_size})"]
    if sizes:
        notes.append(f"ran at batch sizes {sizes} (config allows 1..{config.max_batch_size})")
    return RuntimeResult(runs=[run], notes=notes)


register_target(
    Target(
        name="triton",
        summary="Triton model repository, ONNX Runtime backend (config checked, run in onnxruntime)",
        builds={
            ModelClass.FIXED_SHAPE: Build(
                consumes=Format.ONNX,
                export=StepRecipe(
                    "targets.triton:export",
                    toolchain=("tritonclient", "protobuf"),
                    warm=("tritonclient.grpc.model_config_pb2", "exporters.onnx2triton"),
                    cost_s=1,
                ),
                validate=StepRecipe(
                    "targets.triton:run_artifact",
                    toolchain=("onnxruntime", "tritonclient"),
                    warm=("onnxruntime", "tritonclient.grpc.model_config_pb2"),
                    cost_s=2,
                ),
            )
        },
        gates=FP32_GATES,
        options=TritonOptions,
        rungs=onnx_rungs("triton", TritonInt8Options),
    )
)
