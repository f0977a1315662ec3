"""Read a torch.export program: its signature, and its outputs on given inputs."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from shipyard.errors import SourceError
from shipyard.signature import DEFAULT_UNBOUNDED_MAX, DynamicDim, Signature, TensorSpec, default_typical

__all__ = [
    "TorchSource",
    "check_operators",
    "load_program",
    "load_torch_source",
    "program_signature",
    "run_program",
]


@contextmanager
def _no_code_execution() -> Iterator[None]:
    """Make torch.export.load refuse pickled objects instead of running them.

    torch 2.13's loader falls back to torch.load(weights_only=False) for sample inputs
    and uses pickle.loads for some constants: a crafted archive could run code. While
    loading, every torch.load is forced to weights_only=True and raw unpickling raises.
    """
    import torch
    from torch.export.pt2_archive import _package

    real_load, real_pickle = torch.load, _package.pickle

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse(*_: Any, **__: Any) -> Any:
        raise SourceError("archive holds pickled Python objects, which could run code; refused")

    torch.load = weights_only_load
    _package.pickle = SimpleNamespace(loads=refuse, load=refuse)  # type: ignore[assignment]
    real_obj_loader = torch._C._pickle_load_obj
    torch._C._pickle_load_obj = refuse
    try:
        yield
    finally:
        torch.load = real_load
        _package.pickle = real_pickle
        torch._C._pickle_load_obj = real_obj_loader


_LOAD_LOCK = threading.Lock()


def load_program(path: Path) -> Any:
    """torch.export.load that never unpickles code and refuses operators outside the allowlist;
    failures become a one-line SourceError."""
    import torch

    try:
        with _LOAD_LOCK, _no_code_execution():
            program = torch.export.load(str(path))
        check_operators(program, path)
        return program
    except (SourceError, MemoryError):  # out of memory is the machine's limit, not a bad file
        raise
    except (zipfile.BadZipFile, RuntimeError, KeyError, ValueError, EOFError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SourceError(f"{path} is not a loadable torch.export archive: {first}") from None
    except Exception as exc:  # any other failure of an untrusted file is still bad input
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SourceError(f"{path} could not be loaded ({type(exc).__name__}: {first})") from None


# Operators a program may call, besides core ATen: the quantized ops of torch.ao's PT2E flow,
# the primitives, export's own runtime assertions and the control-flow operators.
OPERATOR_NAMESPACES = ("aten", "prims", "quantized_decomposed")
EXPORT_OPERATORS = {
    "aten::_assert_async",
    "aten::_assert_scalar",
    "aten::_assert_tensor_metadata",
    "aten::_functional_assert_async",
    "aten::_functional_assert_scalar",
    "aten::_functional_sym_constrain_range",
    "aten::_functional_sym_constrain_range_for_size",
    "aten::copy_",
    "aten::lift_fresh_copy",
    "aten::sym_constrain_range",
    "aten::sym_constrain_range_for_size",
}
HIGHER_ORDER_OPERATORS = {
    "cond",
    "map_impl",
    "scan",
    "while_loop",
    "wrap_with_autocast",
    "wrap_with_set_grad_enabled",
}


def _allowed_aten(op: Any) -> bool:
    """Core ATen, or an ATen operator that decomposes into it (tagged, tabled, or composite):
    never one with effects of its own beyond tensors, such as aten.from_file reading a file."""
    import torch
    from torch._decomp import decomposition_table

    return (
        torch.Tag.core in op.tags
        or op in decomposition_table
        or op.name() in EXPORT_OPERATORS
        or torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CompositeImplicitAutograd")
    )


def _allowed(target: Any) -> bool:
    import operator

    import torch
    from torch._export.serde import serialize

    if isinstance(target, torch._ops.OpOverload):
        namespace = target.namespace
        return namespace in OPERATOR_NAMESPACES and (namespace != "aten" or _allowed_aten(target))
    if isinstance(target, torch._ops.HigherOrderOperator):
        return target.name() in HIGHER_ORDER_OPERATORS
    return target is operator.getitem or target in getattr(serialize, "_SYM_OPS", ())


def check_operators(program: Any, path: Path) -> None:
    """SourceError naming the first operator outside the allowlist, in any (sub)graph."""
    import torch

    refused: set[str] = set()
    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op == "call_function" and not _allowed(node.target):
                named = isinstance(node.target, torch._ops.OperatorBase)
                refused.add(
                    str(node.target) if named else getattr(node.target, "__name__", repr(node.target))
                )
            elif node.op in ("call_method", "call_module"):  # not produced by torch.export
                refused.add(f"{node.op} {node.target}")
    if refused:
        names = sorted(refused)
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        raise SourceError(
            f"{path} calls operators this service does not run: {', '.join(names[:3])}{more} "
            "(allowed: core ATen and what decomposes into it, prims, quantized_decomposed, control flow)"
        )


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _is_infinite(bound: Any) -> bool:
    from torch.utils._sympy.numbers import IntInfinity

    return isinstance(bound, IntInfinity) or int(bound) > 2**31


def program_signature(ep: Any) -> Signature:
    """Names, dtypes, shapes and dynamic dim ranges, as the program declares them."""
    import torch

    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    dims: dict[str, DynamicDim] = {}
    symbol_names: dict[Any, str] = {}

    def dim_of(size: Any, tensor: str, axis: int, is_input: bool) -> int | str:
        if isinstance(size, int):
            return size
        expr = size.node.expr
        if expr in symbol_names:
            return symbol_names[expr]
        if not is_input or expr not in ep.range_constraints:
            return str(expr)  # derived size of an output, e.g. 2*s0
        name = "batch" if axis == 0 and not dims else f"{tensor}_dim{axis}"
        vr = ep.range_constraints[expr]
        lo = max(1, int(vr.lower))  # size-0 tensors are not a serving shape
        unbounded = _is_infinite(vr.upper)
        hi = max(lo, DEFAULT_UNBOUNDED_MAX) if unbounded else int(vr.upper)
        dims[name] = DynamicDim(
            name=name,
            min=lo,
            max=hi,
            typical=default_typical(lo, hi),
            source="default" if unbounded else "program",
        )
        symbol_names[expr] = name
        return name

    inputs = []
    for name in ep.graph_signature.user_inputs:
        val = placeholders[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise SourceError(
                f"input {name} is not a tensor ({type(val).__name__}); only tensor inputs are supported"
            )
        shape = [dim_of(s, name, i, True) for i, s in enumerate(val.shape)]
        inputs.append(TensorSpec(name=name, dtype=_dtype_name(val.dtype), shape=shape))

    output_node = next(n for n in ep.graph.nodes if n.op == "output")
    user_count = len(ep.graph_signature.user_outputs)
    out_vals = list(output_node.args[0])[-user_count:] if user_count else []
    outputs = []
    for i, node in enumerate(out_vals):
        val = node.meta.get("val") if hasattr(node, "meta") else None
        if not isinstance(val, torch.Tensor):
            raise SourceError(f"output {i} is not a tensor; only tensor outputs are supported")
        name = f"output_{i}"
        shape = [dim_of(s, name, j, False) for j, s in enumerate(val.shape)]
        outputs.append(TensorSpec(name=name, dtype=_dtype_name(val.dtype), shape=shape))
    return Signature(inputs=inputs, outputs=outputs, dims=dims)


def run_program(ep: Any, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Eager outputs of the program, keyed by the signature's output names."""
    import torch
    from torch.utils._pytree import tree_flatten

    args = [torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in signature.inputs]
    with torch.no_grad():
        result = ep.module()(*args)
    flat, _ = tree_flatten(result)
    return {spec.name: t.detach().numpy() for spec, t in zip(signature.outputs, flat, strict=True)}


def served_ranges(ep: Any, signature: Signature) -> dict[str, tuple[int, int]]:
    """The range each signature dim has in `ep` (e.g. a program re-traced by a lowering pass)."""
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    ranges: dict[str, tuple[int, int]] = {}
    for spec, name in zip(signature.inputs, ep.graph_signature.user_inputs, strict=True):
        shape = placeholders[name].meta["val"].shape
        for axis, dim in enumerate(spec.shape):
            if not isinstance(dim, str):
                continue
            size = shape[axis]
            if isinstance(size, int):
                ranges[dim] = (size, size)
            elif size.node.expr in ep.range_constraints:
                vr = ep.range_constraints[size.node.expr]
                hi = 2**31 if _is_infinite(vr.upper) else int(vr.upper)
                ranges[dim] = (int(vr.lower), hi)
    return ranges


class TorchSource:
    """A torch.export program loaded without unpickling code."""

    label = "a torch.export"
    keeps_own_names = False  # inputs and outputs can be renamed by the spec

    def __init__(self, program: Any) -> None:
        self.program = program

    def signature(self) -> Signature:
        return program_signature(self.program)

    def run(self, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_program(self.program, signature, inputs)


def load_torch_source(path: Path) -> TorchSource:
    return TorchSource(load_program(path))
