"""Accuracy-aware int4: the smallest int4 recipe whose outputs still pass the gates.

In order of artifact size, smallest first:

1. per-channel int4 for every FULLY_CONNECTED / CONV_2D / EMBEDDING_LOOKUP weight;
2. blockwise scales (64, then 32 weights per scale) for FULLY_CONNECTED / EMBEDDING_LOOKUP,
   per-channel for conv (when the model has such ops);
3. (unless no candidate reaches the minimum int4 share: keeping layers only lowers it) keep
   the most sensitive layers at higher precision: each int4-eligible layer is measured
   alone in int4 (everything else float) against the float model, and the worst are kept at
   int8 (then, if int8 is not enough, float), as few as pass: k = 1, 2, 4, ... then bisected;
   ranked once by error and once by error per weight byte, the smaller passing artifact wins.

The search is bounded by a count of quantizations, not by seconds, so that a slow or busy
worker finds the same recipe. A candidate is measured on the calibration inputs against the
float .tflite (which validation proves equal to the source model), with gates tightened by
SEARCH_MARGIN so that the artifact passes the real gates on the validation inputs, not just
here. Nothing here runs the model: the caller's `measure` does, so this module is plain data
and ai-edge-quantizer recipes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from exporters.tflite2int4 import WeightStats, quantize_with_rules, recipe_rules, weight_stats
from shipyard.gates import Gates

__all__ = [
    "SEARCH_MARGIN",
    "Candidate",
    "Int4Recipe",
    "KeptLayer",
    "Layer",
    "LayerPrecision",
    "Measured",
    "SearchFailed",
    "SearchResult",
    "eligible_layers",
    "search_int4",
]

SEARCH_MARGIN = 0.8  # the search aims for 80% of each gate's allowed error
INT4_OPS = ("FULLY_CONNECTED", "CONV_2D", "EMBEDDING_LOOKUP")
BLOCKWISE_OPS = ("FULLY_CONNECTED", "EMBEDDING_LOOKUP")


class LayerPrecision(StrEnum):
    INT8 = "int8"
    FLOAT = "float"


class Layer(BaseModel):
    """One int4-eligible op of the float .tflite."""

    index: int  # operator index in the main subgraph
    op: str  # TFLite op name, e.g. CONV_2D
    scope: str  # what ai-edge-quantizer matches recipe regexes against
    name: str  # a readable name (the torch module path when the tensor names carry one)
    weight_bytes: int  # float32 bytes of its constant inputs

    @property
    def label(self) -> str:
        return f"{self.op} #{self.index} {self.name}"


class KeptLayer(BaseModel):
    layer: Layer
    precision: LayerPrecision
    alone_cosine: float  # the output's cosine with only this layer in int4
    rank: int  # 1 = the first of `ranked` to keep
    ranked: int

    def describe(self) -> str:
        return (
            f"{self.layer.label} kept at {self.precision.value}: alone in int4 it gives cosine "
            f"{self.alone_cosine:.4f} ({self.layer.weight_bytes:,} float bytes, #{self.rank} of "
            f"{self.ranked} to keep)"
        )


class Int4Recipe(BaseModel):
    """Per-channel int4 everywhere eligible, optional blockwise FC/embedding, kept layers."""

    block_size: int | None = None
    kept: list[KeptLayer] = []

    def rules(self) -> list[dict[str, Any]]:
        rules = recipe_rules(4, None)
        if self.block_size:
            rules += [recipe_rules(4, self.block_size, op=op)[0] for op in BLOCKWISE_OPS]
        for kept in self.kept:
            regex = "^" + re.escape(kept.layer.scope) + "$"
            bits = 8 if kept.precision is LayerPrecision.INT8 else None
            rules += recipe_rules(bits, None, op=kept.layer.op, regex=regex)
        return rules

    def describe(self) -> str:
        scales = f"blockwise {self.block_size} scales for FC/embedding" if self.block_size else "per-channel"
        if not self.kept:
            return f"int4 {scales}"
        counts = {p: sum(k.precision is p for k in self.kept) for p in LayerPrecision}
        kept = ", ".join(f"{n} at {p.value}" for p, n in counts.items() if n)
        return f"int4 {scales}, {len(self.kept)} layer(s) kept higher ({kept})"


class Measured(BaseModel):
    """A candidate's outputs against the float model's, on the calibration inputs."""

    cosine: float
    rel_l2_err: float
    max_abs_err: float
    max_rel_err: float


class Candidate(BaseModel):
    recipe: Int4Recipe
    file: str  # in the search's work folder
    stats: WeightStats
    bytes: int
    measured: Measured
    passed: bool  # the tightened gates, and the minimum int4 share

    def summary(self) -> str:
        return (
            f"{self.recipe.describe()}: cosine {self.measured.cosine:.4f}, rel L2 "
            f"{self.measured.rel_l2_err:.3g}, int4 share {self.stats.int4_share:.1%}, {self.bytes:,} bytes"
        )


class SearchResult(BaseModel):
    chosen: Candidate
    tried: list[Candidate]
    unavailable: list[str]  # candidates the quantizer refused, with its reason
    seconds: float


class SearchFailed(Exception):
    """No candidate passed; the message carries the best numbers found."""


Measure = Callable[[bytes], Measured]


def tightened(gates: Gates, margin: float = SEARCH_MARGIN) -> Gates:
    """The gates with `margin` of each allowed error (cosine: of its distance from 1)."""
    return gates.model_copy(
        update={
            "max_abs_err": None if gates.max_abs_err is None else gates.max_abs_err * margin,
            "max_rel_err": None if gates.max_rel_err is None else gates.max_rel_err * margin,
            "max_rel_l2_err": None if gates.max_rel_l2_err is None else gates.max_rel_l2_err * margin,
            "min_cosine": None if gates.min_cosine is None else 1 - (1 - gates.min_cosine) * margin,
        }
    )


def meets(gates: Gates, m: Measured) -> bool:
    limits = [
        (gates.min_cosine, m.cosine, True),
        (gates.max_rel_l2_err, m.rel_l2_err, False),
        (gates.max_abs_err, m.max_abs_err, False),
        (gates.max_rel_err, m.max_rel_err, False),
    ]
    return all(lim is None or (v >= lim if at_least else v <= lim) for lim, v, at_least in limits)


def _readable(scope: str) -> str:
    """`a.Vision/b.Model_model/c.Conv2d_conv;;` -> `model.conv`: the attribute path litert-torch
    writes into tensor names, or the first tensor name as it is."""
    first = scope.split(";", 1)[0]
    parts = [p.rsplit(".", 1)[-1] for p in first.split("/")]
    attrs = [p.split("_", 1)[1] for p in parts if "_" in p]
    name = ".".join(attrs) if len(attrs) == len(parts) - 1 and attrs else first
    return name if len(name) <= 100 else "..." + name[-97:]


def eligible_layers(float_path: Path) -> list[Layer]:
    """The ops whose weights int4 recipes quantize, with the scopes recipe rules match."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu

    model = tfu.read_model(str(float_path))
    graph = model.subgraphs[0]
    layers = []
    for index, op in enumerate(graph.operators):
        known = tfu.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode)
        name = str(getattr(known, "value", known))  # ops it does not know it leaves float
        if name not in INT4_OPS:
            continue
        weight_bytes = 0
        for tensor_index in op.inputs[1:]:
            if tensor_index >= 0:
                data = model.buffers[graph.tensors[tensor_index].buffer].data
                weight_bytes += 0 if data is None else len(data)
        if weight_bytes:
            scope = tfu.get_op_scope(op, graph.tensors)
            layers.append(
                Layer(index=index, op=name, scope=scope, name=_readable(scope), weight_bytes=weight_bytes)
            )
    return layers


@dataclass
class _Search:
    float_path: Path
    work: Path
    measure: Measure
    gates: Gates
    min_int4_share: float
    budget: int  # quantizations it may make; a count, not seconds, so the result is the same anywhere
    tried: list[Candidate]
    unavailable: list[str]
    spent: int = 0

    def exhausted(self) -> bool:
        return self.spent >= self.budget

    def quantize(self, rules: list[dict[str, Any]], path: Path, what: str) -> bool:
        """Quantize with `rules` into `path`; False (noted as unavailable) when the quantizer refuses."""
        self.spent += 1
        try:
            quantize_with_rules(self.float_path, path, rules)
        except ValueError as exc:  # e.g. blockwise on an FC whose input dim is not a multiple
            self.unavailable.append(f"{what}: {str(exc).splitlines()[0]}")
            return False
        return True

    def evaluate(self, recipe: Int4Recipe) -> Candidate | None:
        path = self.work / f"candidate-{self.spent}.tflite"
        if not self.quantize(recipe.rules(), path, recipe.describe()):
            return None
        stats = weight_stats(path)
        measured = self.measure(path.read_bytes())
        passed = (
            stats.int4_tensors > 0 and stats.int4_share >= self.min_int4_share and meets(self.gates, measured)
        )
        candidate = Candidate(
            recipe=recipe,
            file=path.name,
            stats=stats,
            bytes=path.stat().st_size,
            measured=measured,
            passed=passed,
        )
        self.tried.append(candidate)
        return candidate

    def sensitivities(self, layers: list[Layer]) -> list[tuple[Layer, float]]:
        """Each layer alone in int4, the rest float: most sensitive (lowest cosine) first."""
        scored = []
        for layer in layers:
            path = self.work / "alone.tflite"
            regex = "^" + re.escape(layer.scope) + "$"
            rules = recipe_rules(None, None) + recipe_rules(4, None, op=layer.op, regex=regex)
            if self.quantize(rules, path, f"{layer.label} alone in int4"):
                scored.append((layer, self.measure(path.read_bytes()).cosine))
        # ranked on a 1e-4 grid, ties by position, so that the last digits of a float XNNPACK
        # computes (which can differ between CPUs) rarely reorder layers
        return sorted(scored, key=lambda s: (round(s[1], 4), s[0].index))

    def fewest_kept(self, ranked: list[tuple[Layer, float]], precision: LayerPrecision) -> Candidate | None:
        """The passing candidate keeping the fewest of the most sensitive layers at `precision`."""

        def keep(k: int) -> Candidate | None:
            kept = [
                KeptLayer(layer=layer, precision=precision, alone_cosine=cos, rank=i + 1, ranked=len(ranked))
                for i, (layer, cos) in enumerate(ranked[:k])
            ]
            return self.evaluate(Int4Recipe(kept=kept))

        limit = len(ranked) - 1  # at least one layer stays in int4
        low, high, best, k = 0, 0, None, 1
        while best is None:
            if k > limit or self.exhausted():
                return None
            found = keep(k)
            if found is not None and found.passed:
                high, best = k, found
            elif found is not None and found.stats.int4_share < self.min_int4_share:
                return None  # keeping more layers only lowers the share further
            else:
                low, k = k, limit + 1 if k == limit else min(2 * k, limit)
        while high - low > 1 and not self.exhausted():
            mid = (low + high) // 2
            found = keep(mid)
            if found is not None and found.passed:
                high, best = mid, found
            else:
                low = mid
        return best


def search_int4(
    float_path: Path,
    work: Path,
    measure: Measure,
    gates: Gates,
    min_int4_share: float,
    budget: int,
) -> SearchResult:
    """The first passing int4 candidate in order of size (SearchFailed with the best numbers when
    none passes within `budget` quantizations)."""
    start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    search = _Search(float_path, work, measure, tightened(gates), min_int4_share, budget, [], [])
    layers = eligible_layers(float_path)
    if not layers:
        raise SearchFailed(
            "no weight can be stored as int4: the model has no int4-eligible ops (FULLY_CONNECTED, "
            "CONV_2D, EMBEDDING_LOOKUP with constant weights), so it would still be float"
        )
    bases = [Int4Recipe()]
    if any(layer.op in BLOCKWISE_OPS for layer in layers):
        bases += [Int4Recipe(block_size=64), Int4Recipe(block_size=32)]
    chosen = None
    for base in bases:
        tried = search.evaluate(base)
        if tried is not None and tried.passed:
            chosen = tried
            break
    reachable = any(c.stats.int4_share >= min_int4_share for c in search.tried)  # keeping only lowers it
    affordable = search.spent + len(layers) < budget  # the sensitivity pass quantizes every layer once
    if chosen is None and reachable and affordable:
        by_error = search.sensitivities(layers)
        # the same error from a smaller layer costs fewer bytes to keep: try that order too
        by_cost = sorted(by_error, key=lambda s: (-round(1 - s[1], 4) / s[0].weight_bytes, s[0].index))
        for precision in LayerPrecision:
            passing = [
                c for order in (by_error, by_cost) if (c := search.fewest_kept(order, precision)) is not None
            ]
            chosen = min(passing, key=lambda c: c.bytes) if passing else None
            if chosen is not None or search.exhausted():
                break
    seconds = time.monotonic() - start
    if chosen is None:
        raise SearchFailed(_failure(search, seconds, over_budget=search.exhausted() or not affordable))
    return SearchResult(chosen=chosen, tried=search.tried, unavailable=search.unavailable, seconds=seconds)


def _failure(search: _Search, seconds: float, over_budget: bool) -> str:
    why = f"stopped at its budget of {search.budget} quantizations" if over_budget else "exhausted"
    share = f" with an int4 share >= {search.min_int4_share:.0%}" if search.min_int4_share else ""
    if not search.tried:
        return f"int4 search {why} after {seconds:.1f} s without a candidate"
    eligible = [c for c in search.tried if c.stats.int4_share >= search.min_int4_share] or search.tried
    best = max(eligible, key=lambda c: c.measured.cosine)
    gates = search.gates.model_dump(exclude_none=True, exclude={"rel_eps"})
    limits = ", ".join(f"{name} {value:.4g}" for name, value in gates.items())
    return (
        f"int4 search {why} after {len(search.tried)} candidates in {seconds:.1f} s: none passes "
        f"the gates with the search margin ({limits}){share} on the calibration inputs; the best "
        f"was {best.summary()}"
    )
