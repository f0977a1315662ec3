"""Compare an artifact's outputs with the source model's reference outputs."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from shipyard.report import VariantMetrics

__all__ = ["OutputMismatch", "classifier_like", "compare_outputs", "cosine_similarity", "output_scale"]


class OutputMismatch(Exception):
    """An output is missing or has the wrong shape; no error metric makes sense."""


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a64 = a.astype(np.float64).ravel()
    b64 = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a64, b64) / (na * nb))


def output_scale(reference: np.ndarray) -> float:
    """What an output's absolute error is measured against: its largest magnitude, at least 1
    (numpy.allclose's atol tied to the output: box coordinates in the hundreds get 100x room)."""
    finite = np.abs(reference[np.isfinite(reference)])
    return max(1.0, float(finite.max(initial=0.0)))


def classifier_like(reference: np.ndarray) -> bool:
    """An output whose last axis holds class scores: [rows, classes] logits, or probabilities
    over the last axis at any rank (softmax per step of a text recogniser); never one class."""
    if reference.ndim < 2 or reference.shape[-1] < 2 or not np.issubdtype(reference.dtype, np.floating):
        return False
    if reference.ndim == 2:
        return True
    sums = reference.astype(np.float64).sum(axis=-1)
    return bool(reference.min() >= 0 and reference.max() <= 1 and np.allclose(sums, 1.0, atol=1e-3))


class Agreement(NamedTuple):
    rows: int  # predictions compared (every row of the output's leading axes)
    top1: int  # rows where the artifact's top class is one of the source's top classes (ties)
    top5_rows: int  # rows of outputs with more than 5 classes
    top5: int  # of those, rows where the source's top class is among the artifact's top 5


def label_agreement(reference: np.ndarray, actual: np.ndarray) -> Agreement:
    """How often the artifact picks the source's class (and keeps it in its top 5)."""
    ref = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    got = actual.reshape(-1, actual.shape[-1]).astype(np.float64)
    best = ref.max(axis=-1, keepdims=True)
    picked = got.argmax(axis=-1)
    top1 = int((ref[np.arange(len(ref)), picked] >= best[:, 0]).sum())
    if ref.shape[-1] <= 5:
        return Agreement(rows=len(ref), top1=top1, top5_rows=0, top5=0)
    top5 = np.argpartition(-got, 5, axis=-1)[:, :5]
    kept = (ref[np.arange(len(ref))[:, None], top5] >= best).any(axis=-1)
    return Agreement(rows=len(ref), top1=top1, top5_rows=len(ref), top5=int(kept.sum()))


def _distribution(scores: np.ndarray) -> np.ndarray:
    """Rows of probabilities as they are; rows of logits through a softmax."""
    sums = scores.sum(axis=-1, keepdims=True)
    if scores.min() >= 0 and scores.max() <= 1 and np.allclose(sums, 1.0, atol=1e-3):
        return scores / sums
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def label_kl(reference: np.ndarray, actual: np.ndarray) -> float:
    """KL(source || artifact) of every row's class distribution, summed over the rows."""
    p = _distribution(reference.reshape(-1, reference.shape[-1]).astype(np.float64))
    q = _distribution(actual.reshape(-1, actual.shape[-1]).astype(np.float64))
    return float(np.sum(p * (np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(q, 1e-300)))))


def compare_outputs(
    variant: str,
    file: str,
    dims: dict[str, int],
    reference: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    rel_eps: float,
    exact_below: float | None = None,
) -> VariantMetrics:
    """Worst error over all outputs of one variant; non-finite values count as infinite error.
    `scaled_abs_err` is each output's max |a-b| over its scale (output_scale); with `exact_below`,
    an output whose scaled error is at most that equals its reference up to float rounding and its
    cosine is not asked (the cosine of two near-zero noise vectors says nothing)."""
    worst_abs, worst_rel, worst_cos, worst_l2, worst_name = 0.0, 0.0, 1.0, 0.0, ""
    worst_scaled = 0.0
    agreement = Agreement(0, 0, 0, 0)
    kl_sum = 0.0
    for name, ref in reference.items():
        if name not in actual:
            raise OutputMismatch(f"variant {variant}: output {name} missing from {file}")
        got = actual[name]
        if got.shape != ref.shape:
            raise OutputMismatch(
                f"variant {variant}: output {name} has shape {list(got.shape)} in {file}, "
                f"expected {list(ref.shape)}"
            )
        r = ref.astype(np.float64)
        g = got.astype(np.float64)
        diff = np.abs(g - r)
        if not np.all(np.isfinite(diff)):
            abs_err = rel_err = l2_err = scaled = float("inf")
            cos = -1.0
        else:
            abs_err = float(diff.max(initial=0.0))
            scaled = abs_err / output_scale(r)
            rel_err = float((diff / (np.abs(r) + rel_eps)).max(initial=0.0))
            exact = exact_below is not None and scaled <= exact_below
            cos = 1.0 if exact else cosine_similarity(g, r)
            l2_err = float(np.linalg.norm(diff) / max(float(np.linalg.norm(r)), rel_eps))
        if classifier_like(ref):
            if np.all(np.isfinite(got)):
                agreement = Agreement(
                    *(a + b for a, b in zip(agreement, label_agreement(ref, got), strict=True))
                )
                kl_sum += label_kl(ref, got)
            else:  # non-finite scores pick nothing
                agreement = agreement._replace(rows=agreement.rows + ref.size // ref.shape[-1])
                kl_sum = float("inf")
        if scaled >= worst_scaled:
            worst_name = name
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
        worst_cos, worst_l2 = min(worst_cos, cos), max(worst_l2, l2_err)
        worst_scaled = max(worst_scaled, scaled)
    return VariantMetrics(
        variant=variant,
        file=file,
        dims=dims,
        max_abs_err=worst_abs,
        max_rel_err=worst_rel,
        cosine=worst_cos,
        rel_l2_err=worst_l2,
        scaled_abs_err=worst_scaled,
        worst_output=worst_name,
        label_rows=agreement.rows,
        top1_agreed=agreement.top1,
        top5_rows=agreement.top5_rows,
        top5_agreed=agreement.top5,
        kl_sum=kl_sum,
    )
