"""float32 .tflite -> int4-weight .tflite with ai-edge-quantizer, and proof read from the flatbuffer."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = [
    "INT4_RECIPES",
    "WeightStats",
    "quantize_int4",
    "quantize_with_rules",
    "recipe_rules",
    "weight_stats",
]

# Recipe helpers of ai_edge_quantizer.recipe that give int4 weights with float activations.
INT4_RECIPES = (
    "dynamic_wi4_afp32",  # per-channel int4 weights, activations quantized on the fly (XNNPACK)
    "dynamic_wi4b32_afp32",  # blockwise, 32 weights per scale
    "dynamic_wi4b64_afp32",  # blockwise, 64 weights per scale
    "weight_only_wi4_afp32",  # per-channel int4 weights dequantized to float at load
)


class WeightStats(BaseModel):
    """Constant (weight) tensors of a .tflite, by storage type."""

    int4_tensors: int
    int4_bytes: int  # with the fp16 scales of blockwise int4 weights
    int8_tensors: int = 0
    int8_bytes: int = 0
    weight_bytes: int  # every buffer-backed tensor, all types
    float_tensors: int
    float_bytes: int

    @property
    def int4_share(self) -> float:
        return self.int4_bytes / self.weight_bytes if self.weight_bytes else 0.0


def weight_stats(path: Path) -> WeightStats:
    """Read tensor types straight from the flatbuffer: what the file really stores."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(path.read_bytes()))
    counts = dict.fromkeys(WeightStats.model_fields, 0)
    for subgraph in model.subgraphs:
        int4_names = {_name(t) for t in subgraph.tensors if fbu.type_to_name(t.type) == "INT4"}
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if data is None or len(data) == 0:
                continue  # activations and graph inputs carry no buffer
            counts["weight_bytes"] += len(data)
            kind = fbu.type_to_name(tensor.type)
            if kind == "FLOAT16" and _name(tensor).removesuffix("_scales") in int4_names:
                kind = "INT4"  # a blockwise weight's scales: part of storing it in int4
                counts["int4_tensors"] -= 1
            bucket = {"INT4": "int4", "INT8": "int8", "FLOAT32": "float", "FLOAT16": "float"}.get(kind)
            if bucket:
                counts[f"{bucket}_tensors"] += 1
                counts[f"{bucket}_bytes"] += len(data)
    return WeightStats(**counts)


def _name(tensor: object) -> str:
    name = getattr(tensor, "name", b"")
    return name.decode() if isinstance(name, bytes) else str(name)


def recipe_rules(
    bits: int | None, block_size: int | None, op: str = "*", regex: str = ".*"
) -> list[dict[str, Any]]:
    """One ai-edge-quantizer recipe rule: symmetric integer weights of `bits` (per channel, or
    blockwise), activations quantized on the fly; `bits=None` keeps the matched ops float."""
    if bits is None:
        config: dict[str, Any] = {"compute_precision": "FLOAT"}
        algorithm = "no_quantize"
    else:
        granularity = f"BLOCKWISE_{block_size}" if block_size else "CHANNELWISE"
        weights = {"num_bits": bits, "symmetric": True, "granularity": granularity, "dtype": "INT"}
        config = {"weight_tensor_config": weights, "compute_precision": "INTEGER"}
        algorithm = "min_max_uniform_quantize"
    config |= {"explicit_dequantize": False, "skip_checks": False, "min_weight_elements": 0}
    return [{"regex": regex, "operation": op, "algorithm_key": algorithm, "op_config": config}]


def quantize_with_rules(float_path: Path, out_path: Path, rules: list[dict[str, Any]]) -> Path:
    """Quantize with a recipe given as rules (the last rule matching an op wins)."""
    from ai_edge_quantizer import quantizer

    with _quiet():
        result = quantizer.Quantizer(str(float_path), rules).quantize(
            enable_progress_bar=False, enable_progress_report=False
        )
    out_path.write_bytes(bytes(result.quantized_model))
    return out_path


def quantize_int4(float_path: Path, out_path: Path, recipe_name: str) -> Path:
    from ai_edge_quantizer import recipe

    if recipe_name not in INT4_RECIPES:
        raise ValueError(f"unknown int4 recipe {recipe_name!r}; choose one of {', '.join(INT4_RECIPES)}")
    return quantize_with_rules(float_path, out_path, getattr(recipe, recipe_name)())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ai-edge-quantizer prints a size summary on stdout per call; a search makes hundreds."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
