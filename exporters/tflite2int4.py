"""float32 .tflite -> int4-weight .tflite with ai-edge-quantizer, and proof read from the flatbuffer."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

__all__ = ["INT4_RECIPES", "WeightStats", "quantize_int4", "weight_stats"]

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
    int4_bytes: int
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
    counts = {"int4_tensors": 0, "int4_bytes": 0, "weight_bytes": 0, "float_tensors": 0, "float_bytes": 0}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if data is None or len(data) == 0:
                continue  # activations and graph inputs carry no buffer
            size = len(data)
            counts["weight_bytes"] += size
            kind = fbu.type_to_name(tensor.type)
            if kind == "INT4":
                counts["int4_tensors"] += 1
                counts["int4_bytes"] += size
            elif kind in ("FLOAT32", "FLOAT16"):
                counts["float_tensors"] += 1
                counts["float_bytes"] += size
    return WeightStats(**counts)


def quantize_int4(float_path: Path, out_path: Path, recipe_name: str) -> Path:
    from ai_edge_quantizer import quantizer, recipe

    if recipe_name not in INT4_RECIPES:
        raise ValueError(f"unknown int4 recipe {recipe_name!r}; choose one of {', '.join(INT4_RECIPES)}")
    result = quantizer.Quantizer(str(float_path), getattr(recipe, recipe_name)()).quantize()
    out_path.write_bytes(bytes(result.quantized_model))
    return out_path
