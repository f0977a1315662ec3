"""A Hugging Face causal LM to an ONNX Runtime GenAI model folder, with onnxruntime-genai's builder.

The builder writes `model.onnx` (its weights in `model.onnx.data`), `genai_config.json` and the
tokenizer files: the folder `onnxruntime_genai.Model` loads. `int4` quantizes the MatMul weights
to MatMulNBits blocks; `accuracy_level` is the precision its activations are computed in
(1 float32 ... 4 int8, the builder's CPU default, which is known to change greedy tokens).
It reads the folder with transformers, never trusting remote code (its `hf_remote` stays off).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["build_genai_model"]


def build_genai_model(
    folder: Path, out: Path, precision: str, work: Path, accuracy_level: int = 1, block_size: int = 32
) -> None:
    """Write the GenAI model folder for `precision` ("fp32" or "int4") into `out`."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder: nothing to download, never try
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    extra = ["hf_token=false", "hf_remote=false"]
    if precision == "int4":
        extra += [f"accuracy_level={accuracy_level}", f"block_size={block_size}"]
    cache = str(work / "builder-cache")
    options = parse_extra_options(None, str(folder), str(out), precision, "cpu", cache, extra)
    create_model(None, str(folder), str(out), precision, "cpu", cache, **options)
