"""torch.export program -> ExecuTorch .pte, lowered to XNNPACK where it can be, portable ops elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shipyard.precision import Int8Options
from shipyard.signature import Signature

__all__ = ["export_pte", "quantized_program"]


def quantized_program(
    source: Path, signature: Signature, options: Int8Options, batches: list[dict[str, np.ndarray]]
) -> Any:
    """The program with int8 weights (PT2E + XNNPACKQuantizer), re-exported with
    the signature's dynamic dims so the lowered .pte keeps them."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from shipyard.torch_program import load_program

    config = get_symmetric_quantization_config(
        is_per_channel=options.per_channel, is_dynamic=options.scheme == "dynamic"
    )
    prepared = prepare_pt2e(load_program(source).module(), XNNPACKQuantizer().set_global(config))
    names = signature.input_names()
    for batch in batches:  # a dynamic scheme observes nothing, but must be run once to convert
        prepared(*[torch.from_numpy(batch[n]) for n in names])
    converted = convert_pt2e(prepared)
    # traced at a size of at least 2 in every dynamic dim: a size-1 example specializes the dim
    at = {name: min(max(d.typical, 2), d.max) for name, d in signature.dims.items()}
    dims = {
        name: torch.export.Dim(name, min=d.min, max=d.max) for name, d in signature.dims.items() if d.max >= 2
    }
    shapes = tuple(
        {axis: dims[d] for axis, d in enumerate(t.shape) if isinstance(d, str) and d in dims} or None
        for t in signature.inputs
    )
    example = tuple(
        torch.zeros(t.concrete_shape(at), dtype=getattr(torch, t.dtype)) for t in signature.inputs
    )
    return torch.export.export(converted, example, dynamic_shapes=shapes if dims else None)


def export_pte(
    source: Path, signature: Signature, path: Path, program: Any = None
) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Write `path` from the program at `source` (or the given `program`); return the delegation
    counts and each dim's range in the lowered program.

    Lowering re-traces the program and can narrow dynamic ranges; the memory plan (and so
    the largest size the runtime accepts) follows the narrowed upper bound.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    from shipyard.torch_program import load_program, served_ranges

    program = program if program is not None else load_program(source)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    info = get_delegation_info(edge.exported_program().graph_module)
    program = edge.to_executorch()
    with path.open("wb") as fh:
        program.write_to_file(fh)
    counts = {
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "portable_nodes": info.num_non_delegated_nodes,
    }
    return counts, served_ranges(edge.exported_program(), signature)
