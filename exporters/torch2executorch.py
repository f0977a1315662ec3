"""torch.export program -> ExecuTorch .pte, lowered to XNNPACK where it can be, portable ops elsewhere."""

from __future__ import annotations

from pathlib import Path

from shipyard.signature import Signature

__all__ = ["export_pte"]


def export_pte(
    source: Path, signature: Signature, path: Path
) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Write `path`; return the delegation counts and each dim's range in the lowered program.

    Lowering re-traces the program and can narrow dynamic ranges; the memory plan (and so
    the largest size the runtime accepts) follows the narrowed upper bound.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    from shipyard.torch_program import load_program, served_ranges

    edge = to_edge_transform_and_lower(load_program(source), partitioner=[XnnpackPartitioner()])
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
