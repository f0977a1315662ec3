"""Gates: the limits an artifact's outputs must meet against the source model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shipyard.report import GateResult, Metrics

__all__ = [
    "FP16_GATES",
    "FP32_GATES",
    "INT8_GATES",
    "MAX_MEANINGFUL_REL_ERR",
    "MIN_MEANINGFUL_COSINE",
    "Gates",
    "apply_gates",
]


# The loosest a spec may make the last scale-free gate: an artifact that points 60 degrees off its
# source or is half wrong in norm is not that model, whatever its precision.
MIN_MEANINGFUL_COSINE = 0.5
MAX_MEANINGFUL_REL_ERR = 0.5


class Gates(BaseModel):
    """Limits on the comparison metrics; None turns a gate off."""

    # inf or nan would switch a gate off while it still shows in the report
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_abs_err: float | None = Field(default=None, ge=0)
    max_rel_err: float | None = Field(default=None, ge=0)
    min_cosine: float | None = Field(default=None, gt=0, le=1, description="0 or less passes noise")
    max_rel_l2_err: float | None = Field(default=None, ge=0, description="||a-b|| / ||ref||")
    min_top1_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="share of classifier-like output rows whose top class is the source's "
        "(not asked of a model without such outputs)",
    )
    max_mean_kl: float | None = Field(
        default=None,
        ge=0,
        description="mean KL divergence of the artifact's class distribution from the source's, over "
        "classifier-like output rows (a language model's next-token distributions)",
    )
    rel_eps: float = Field(default=1e-3, gt=0, le=1, description="epsilon in |a-b| / (|ref| + eps)")
    exact_below: float | None = Field(
        default=None,
        ge=0,
        le=1e-3,
        description="an output whose error is at most this, relative to max(1, its largest magnitude), "
        "is exact to float rounding and its cosine is not asked (float32 targets)",
    )

    def merged(self, overrides: dict[str, float | None]) -> Gates:
        """These gates with a spec's changes; one gate that tells signal from noise always stays."""
        gates = self.model_validate({**self.model_dump(), **overrides})
        if not gates.meaningful():
            raise ValueError(
                f"keep at least one gate that tells a right answer from noise: min_cosine >= "
                f"{MIN_MEANINGFUL_COSINE}, max_rel_l2_err <= {MAX_MEANINGFUL_REL_ERR} or max_rel_err <= "
                f"{MAX_MEANINGFUL_REL_ERR} (a limit may be loosened, not removed)"
            )
        return gates

    def meaningful(self) -> bool:
        """True when a scale-free gate is on and tight enough that random outputs fail it."""
        # max_abs_err alone is not enough: its meaning depends on the outputs' scale.
        return (
            (self.min_cosine is not None and self.min_cosine >= MIN_MEANINGFUL_COSINE)
            or (self.max_rel_l2_err is not None and self.max_rel_l2_err <= MAX_MEANINGFUL_REL_ERR)
            or (self.max_rel_err is not None and self.max_rel_err <= MAX_MEANINGFUL_REL_ERR)
        )


# Strict defaults for float32 artifacts: kernels differ, math should not.
FP32_GATES = Gates(max_abs_err=1e-4, max_rel_err=1e-2, min_cosine=0.99999, exact_below=1e-6)
# Lossy rungs of a precision ladder: gate on the direction and relative size of the error, which
# is relative to the outputs however small they are (no output is exempt from the cosine).
# Where an output is classifier-like they also keep the source's top class on 99% of the rows.
FP16_GATES = Gates(min_cosine=0.9999, max_rel_l2_err=0.02, min_top1_agreement=0.99)
INT8_GATES = Gates(min_cosine=0.99, max_rel_l2_err=0.15, min_top1_agreement=0.99)  # also TF.js uint8
# A float32 language model's logits at every position, teacher-forced. The greedy tokens must be
# eager's (the runtime's check); the logits may differ by kernel approximations: measured on the
# tiny test models in ExecuTorch XNNPACK, 1.4e-6 (llama) and 1.0e-6 (qwen3) of the logits' scale,
# 1.8e-4 for gemma, whose tanh-GELU XNNPACK approximates (the exported program before lowering
# is within 3e-6 of eager). No relative error (a logit near zero makes it meaningless) and no
# top-1 gate (a near-tie may flip: the token check excuses and counts those).
GENERATION_FP32_GATES = Gates(max_abs_err=1e-3, min_cosine=0.99999, max_mean_kl=1e-5, exact_below=1e-6)
# int4 weights: the greedy tokens may part from eager's (token_agreement and the greedy prefix are
# reported, not gated); what is held is how far the next-token distribution is from eager's, given
# eager's prefix (mean KL), and the logits' direction. Teacher-forced top-1 agreement is reported,
# not gated: where eager's own distribution is flat it flips while the distribution barely moves.
# Measured on the tiny trained test models (executorch 8da4w, onnx-genai MatMulNBits): cosine
# 0.987-0.995, mean KL 0.020-0.088, top-1 0.94-0.99, but 0.68 and 0.19 for gemmas whose predictions
# are flat (their KL the lowest). Limits about 3x beyond the worst: provisional until measured on
# models of real size.
GENERATION_INT4_GATES = Gates(min_cosine=0.95, max_mean_kl=0.25)


def apply_gates(gates: Gates, metrics: Metrics) -> list[GateResult]:
    """Check every enabled gate; a metric that was not measured fails its gate."""
    # max_abs_err is judged against each output's scale where it was measured (shipyard.compare)
    abs_err = metrics.scaled_abs_err if metrics.scaled_abs_err is not None else metrics.max_abs_err
    checks: list[tuple[str, float | None, float | None, bool]] = [
        ("max_abs_err", gates.max_abs_err, abs_err, False),
        ("max_rel_err", gates.max_rel_err, metrics.max_rel_err, False),
        ("min_cosine", gates.min_cosine, metrics.cosine, True),
        ("max_rel_l2_err", gates.max_rel_l2_err, metrics.rel_l2_err, False),
    ]
    if metrics.top1_agreement is not None:  # only where an output is classifier-like
        checks.append(("min_top1_agreement", gates.min_top1_agreement, metrics.top1_agreement, True))
    if metrics.mean_kl is not None:
        checks.append(("max_mean_kl", gates.max_mean_kl, metrics.mean_kl, False))
    results = []
    for name, limit, value, at_least in checks:
        if limit is None:
            continue
        ok = value is not None and (value >= limit if at_least else value <= limit)
        results.append(GateResult(name=name, limit=limit, value=value, passed=ok))
    return results
