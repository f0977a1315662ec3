"""A Hugging Face causal LM to an ExecuTorch .pte with its KV cache inside (static, XNNPACK).

transformers' own export recipe (`TorchExportableModuleForDecoderOnlyLM`) wraps the model with a
static cache held in the program as buffers; the exported `forward(input_ids, cache_position)`
takes a prompt at once (its length is a dynamic dim) or one token, and returns the logits at
every position it was given. The .pte carries the metadata methods ExecuTorch's LLM runner
reads (max sequence length, vocabulary, bos/eos ids, use_kv_cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["export_llm_pte", "llm_metadata", "quantize_llm"]

# torchao weight quantization that XNNPACK runs: int4 weights in groups of 32, activations
# quantized to int8 per token at run time (ExecuTorch's "8da4w")
LLM_SCHEMES = {"int4": "dynamic int8 activations, int4 weights in groups of 32 (torchao 8da4w, XNNPACK)"}


def quantize_llm(model: Any, precision: str) -> str:
    """Quantize the linear layers' weights in place; returns what was done, for the report."""
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    if precision not in LLM_SCHEMES:
        raise ValueError(f"no {precision} scheme for language models")
    int4 = torch.int4  # type: ignore[attr-defined]  # torch's stubs lack the sub-byte dtypes
    quantize_(
        model, Int8DynamicActivationIntxWeightConfig(weight_dtype=int4, weight_granularity=PerGroup(32))
    )
    return LLM_SCHEMES[precision]


def llm_metadata(
    max_cache_len: int, vocab_size: int, bos_id: int | None, eos_ids: list[int]
) -> dict[str, Any]:
    """The constant methods of an LLM .pte, named as ExecuTorch's runner reads them."""
    metadata: dict[str, Any] = {
        "get_max_seq_len": max_cache_len,
        "get_max_context_len": max_cache_len,
        "get_vocab_size": vocab_size,
        "get_eos_ids": eos_ids,
        "use_kv_cache": True,
        "enable_dynamic_shape": True,
    }
    if bos_id is not None:
        metadata["get_bos_id"] = bos_id
    return metadata


def export_llm_pte(model: Any, max_cache_len: int, metadata: dict[str, Any], dest: Path) -> dict[str, int]:
    """Write `dest` (.pte); returns the XNNPACK delegation counts."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

    model.generation_config.use_cache = True
    model.generation_config.cache_implementation = "static"  # the recipe refuses any other
    wrapper = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=max_cache_len)
    tokens = torch.export.Dim("tokens", min=1, max=max_cache_len - 1)
    example = torch.zeros((1, 2), dtype=torch.long)
    with torch.no_grad():
        program = wrapper.export(
            input_ids=example,
            cache_position=torch.arange(2),
            dynamic_shapes={"input_ids": {1: tokens}, "cache_position": {0: tokens}},
        )
    lowered = to_edge_transform_and_lower(
        program, partitioner=[XnnpackPartitioner()], constant_methods=metadata
    )
    counts = _delegation(lowered)
    dest.write_bytes(lowered.to_executorch().buffer)
    return counts


def _delegation(lowered: Any) -> dict[str, int]:
    graph = lowered.exported_program().graph_module.graph
    calls = [n for n in graph.nodes if n.op == "call_function" and "getitem" not in str(n.target)]
    delegated = sum(1 for n in calls if "executorch_call_delegate" in str(n.target))
    return {"delegated_subgraphs": delegated, "portable_nodes": len(calls) - delegated}
