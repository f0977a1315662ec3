"""float32 ONNX -> int8 (onnxruntime's quantization tools) or fp16 ONNX, inputs and outputs kept.

Measured with onnxruntime 1.32 and onnxruntime-web 1.30 (wasm) on a conv net and an MLP: every
form below loads and runs in both. Static QDQ runs at about float speed; dynamic quantization's
ConvInteger is 10-30x slower than float on conv nets (fine for MatMul-heavy models). An fp16
graph runs in both, but the CPU and wasm kernels compute it in float32 behind inserted casts:
fp16 halves the download, and GPU/WebGPU providers compute in half precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shipyard.precision import Int8Options

__all__ = ["quantize_int8", "to_fp16"]


def quantize_int8(
    onnx_path: Path, out_path: Path, options: Int8Options, batches: list[dict[str, np.ndarray]], work: Path
) -> Path:
    """Write the int8 model at `out_path` (deterministic: the same inputs give the same bytes)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    from shipyard.onnx_external import copy_onnx, data_locations

    work.mkdir(parents=True, exist_ok=True)
    external = bool(data_locations(onnx_path))  # weights kept outside stay outside (past 2 GB)
    if options.scheme == "dynamic":
        # it writes `<input>-inferred.onnx` beside its input: give it a copy in the scratch folder
        onnx_path = copy_onnx(onnx_path, work / "input.onnx")[0]
        quantize_dynamic(
            onnx_path,
            out_path,
            weight_type=QuantType.QInt8,
            per_channel=options.per_channel,
            use_external_data_format=external,
        )
        return out_path
    prepared = work / "preprocessed.onnx"
    quant_pre_process(
        str(onnx_path),
        str(prepared),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        external_data_location=f"{prepared.name}.data",
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(
        prepared,
        out_path,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=options.per_channel,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        use_external_data_format=external,
    )
    return out_path


def to_fp16(onnx_path: Path, out_path: Path) -> Path:
    """Every float32 weight and op in fp16; the graph's inputs and outputs stay float32 (weights
    kept in external data files stay outside, in `<out>.data`)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    from shipyard.onnx_external import data_locations

    external = bool(data_locations(onnx_path))
    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    # it appends the input casts after the nodes that read them: onnx.checker wants them first
    OnnxModel(model).topological_sort(is_deterministic=True)
    onnx.save(model, str(out_path), save_as_external_data=external, location=f"{out_path.name}.data")
    return out_path
