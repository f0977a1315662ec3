"""Comparison metrics and gates on known arrays."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.compare import OutputMismatch, compare_outputs, cosine_similarity
from shipyard.gates import FP32_GATES, Gates, apply_gates
from shipyard.report import Metrics, VariantMetrics


def test_metrics_on_known_difference() -> None:
    ref = {"y": np.array([1.0, -2.0, 0.0], dtype=np.float32)}
    got = {"y": np.array([1.0, -2.5, 0.001], dtype=np.float32)}
    m = compare_outputs("v", "f", {}, ref, got, rel_eps=1e-3)
    assert m.max_abs_err == pytest.approx(0.5)
    assert m.max_rel_err == pytest.approx(0.001 / 1e-3, rel=1e-3)  # the near-zero element dominates
    assert m.cosine == pytest.approx(cosine_similarity(got["y"], ref["y"]))
    assert m.worst_output == "y"


def test_nan_output_fails_every_gate() -> None:
    ref = {"y": np.ones(4, dtype=np.float32)}
    got = {"y": np.array([1, np.nan, 1, 1], dtype=np.float32)}
    m = compare_outputs("v", "f", {}, ref, got, rel_eps=1e-3)
    metrics = Metrics(max_abs_err=m.max_abs_err, max_rel_err=m.max_rel_err, cosine=m.cosine)
    assert not any(g.passed for g in apply_gates(FP32_GATES, metrics))


def test_shape_mismatch_and_missing_output() -> None:
    ref = {"y": np.ones((2, 3), dtype=np.float32)}
    with pytest.raises(OutputMismatch, match=r"shape \[3, 2\]"):
        compare_outputs("v", "f", {}, ref, {"y": np.ones((3, 2), dtype=np.float32)}, 1e-3)
    with pytest.raises(OutputMismatch, match="missing"):
        compare_outputs("v", "f", {}, ref, {}, 1e-3)


def test_gates_pass_fail_and_overrides() -> None:
    metrics = Metrics(max_abs_err=2e-4, max_rel_err=1e-3, cosine=0.999999)
    results = {g.name: g for g in apply_gates(FP32_GATES, metrics)}
    assert not results["max_abs_err"].passed and results["min_cosine"].passed
    assert results["max_abs_err"].describe() == "gate max_abs_err failed: 0.0002, needs <= 0.0001"
    relaxed = FP32_GATES.merged({"max_abs_err": 1e-3, "max_rel_err": None})
    assert {g.name for g in apply_gates(relaxed, metrics)} == {"max_abs_err", "min_cosine"}
    assert all(g.passed for g in apply_gates(relaxed, metrics))
    unmeasured = apply_gates(Gates(min_cosine=0.9), Metrics())
    assert [g.passed for g in unmeasured] == [False]


def test_the_edge_of_a_narrowed_envelope_keeps_the_other_dims_typical() -> None:
    from shipyard.signature import DimRange, DynamicDim, Signature, TensorSpec
    from targets.engine.judge import edge_dims

    tensor = TensorSpec(name="x", dtype="float32", shape=["batch", "seq"])
    dims = {
        "batch": DynamicDim(name="batch", min=1, max=8, typical=3),
        "seq": DynamicDim(name="seq", min=2, max=64, typical=11),
    }
    signature = Signature(inputs=[tensor], outputs=[tensor], dims=dims)
    assert edge_dims(signature, {"batch": DimRange(min=1, max=5)}) == {"batch": 5, "seq": 11}
    assert edge_dims(signature, {"seq": DimRange(min=2, max=8)}) == {"batch": 3, "seq": 8}
    assert edge_dims(signature, {}) is None


def test_every_catalog_gate_is_meaningful_and_a_spec_cannot_neutralise_them() -> None:
    from targets import all_targets

    assert all(target.gates.meaningful() for target in all_targets())
    for neutralising in (
        {"min_cosine": -1.0, "max_abs_err": None, "max_rel_err": None},
        {"min_cosine": 0.2, "max_rel_err": 10.0},
        {"min_cosine": None, "max_rel_err": None, "max_abs_err": 1e30},
        {"max_abs_err": float("inf")},
        {"max_rel_err": float("nan")},
    ):
        with pytest.raises(ValueError):
            FP32_GATES.merged(neutralising)
    assert FP32_GATES.merged({"min_cosine": 0.5, "max_abs_err": None}).min_cosine == 0.5


def _measured(m: VariantMetrics) -> Metrics:
    return Metrics(
        max_abs_err=m.max_abs_err, max_rel_err=m.max_rel_err, cosine=m.cosine, scaled_abs_err=m.scaled_abs_err
    )


def test_float_gates_judge_error_by_each_outputs_scale() -> None:
    """Two exact artifacts the old rules failed: box coordinates in the hundreds off by 1.2e-4
    (relative 2e-7), and outputs near zero whose noise-level error gave cosine 0.998."""
    rng = np.random.default_rng(0)
    boxes = (rng.uniform(0, 640, size=(100, 4))).astype(np.float32)
    noise = (rng.standard_normal(50) * 1e-7).astype(np.float32)
    ref = {"boxes": boxes, "scores": noise}
    jitter = (rng.standard_normal(50) * 2e-8).astype(np.float32)
    got = {"boxes": boxes + np.float32(1.2e-4), "scores": noise + jitter}
    m = compare_outputs("v", "f", {}, ref, got, rel_eps=1e-3, exact_below=FP32_GATES.exact_below)
    assert m.max_abs_err == pytest.approx(1.2e-4, rel=0.1)  # the raw metric is still reported
    assert m.scaled_abs_err is not None and m.scaled_abs_err < 1e-6
    assert cosine_similarity(got["scores"], ref["scores"]) < 0.99999 and m.cosine == 1.0
    assert all(g.passed for g in apply_gates(FP32_GATES, _measured(m)))

    wrong = {"boxes": boxes + np.float32(0.5), "scores": noise}  # half a pixel off: a real error
    m = compare_outputs("v", "f", {}, ref, wrong, rel_eps=1e-3, exact_below=FP32_GATES.exact_below)
    failed = {g.name for g in apply_gates(FP32_GATES, _measured(m)) if not g.passed}
    assert "max_abs_err" in failed and m.worst_output == "boxes"
    small = {"scores": np.full(50, 1e-3, dtype=np.float32)}  # a small output really wrong: cosine asked
    m = compare_outputs("v", "f", {}, small, {"scores": -small["scores"]}, 1e-3, FP32_GATES.exact_below)
    assert m.cosine == pytest.approx(-1.0)
    # lossy rungs ask every output's cosine, however small: int4 noise on a 1e-25 output is an error
    tiny = {"y": np.full(8, 1e-25, dtype=np.float32)}
    lossy = compare_outputs("v", "f", {}, tiny, {"y": tiny["y"] * np.arange(8, dtype=np.float32)}, 1e-3)
    assert lossy.cosine < 0.9


def test_top1_and_top5_agreement_count_rows_of_classifier_like_outputs() -> None:
    from shipyard.compare import classifier_like, label_agreement

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((10, 8)).astype(np.float32)
    flipped = logits.copy()
    top = logits[:3].argmax(axis=-1)
    flipped[np.arange(3), top] = -10.0  # three rows lose their top class (still in no top 5)
    agreement = label_agreement(logits, flipped)
    assert (agreement.rows, agreement.top1, agreement.top5_rows, agreement.top5) == (10, 7, 10, 7)
    tied = np.zeros((2, 3), dtype=np.float32)  # every class is top: any pick agrees
    assert label_agreement(tied, rng.standard_normal((2, 3))).top1 == 2
    softmax = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    assert classifier_like(logits) and classifier_like(softmax.reshape(2, 5, 8))
    assert not classifier_like(logits.reshape(2, 5, 8))  # a feature map, not scores
    assert not classifier_like(logits[:, :1])


def test_the_agreement_gate_judges_classifiers_and_ignores_other_models() -> None:
    metrics = Metrics(max_abs_err=0.1, max_rel_err=0.1, cosine=0.999, rel_l2_err=0.05, top1_agreement=0.9)
    gates = Gates(min_cosine=0.99, min_top1_agreement=0.95)
    (failed,) = [g for g in apply_gates(gates, metrics) if not g.passed]
    assert failed.describe() == "gate min_top1_agreement failed: 0.9, needs >= 0.95"
    no_classes = metrics.model_copy(update={"top1_agreement": None})
    assert all(g.passed for g in apply_gates(gates, no_classes))
    assert "min_top1_agreement" not in {g.name for g in apply_gates(gates, no_classes)}
