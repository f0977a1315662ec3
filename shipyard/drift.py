"""Drift between two packagings of the same source: what a toolchain change did to each target."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

from shipyard.report import Metrics, Status, TargetReport

__all__ = ["DriftRow", "drift_rows", "toolchain_changes"]


class DriftRow(BaseModel):
    """One target of one re-exported model: what changed (each metric as `old -> new`)."""

    model: str
    target: str
    status: str  # `passed -> failed`
    max_abs_err: str
    cosine: str
    artifact_bytes: str
    token_agreement: str = "-"  # a language model's greedy steps equal to eager's
    decode_tokens_per_s: str = "-"
    regressed: bool  # passed before, not now
    error: str  # today's, cut to 160 characters


def toolchain_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str | None]]:
    """Package -> [old version, new version] for every package whose version differs."""
    return {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _delta(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return "-"
    return f"{old:.3g} -> {new:.3g}"


def _extra(metrics: Metrics, name: str) -> float | None:
    """A metric a target reported beyond the common ones (Metrics keeps them as extras)."""
    value = (metrics.model_extra or {}).get(name)
    return float(value) if isinstance(value, int | float) else None


def drift_rows(
    model: str, old: Mapping[str, TargetReport], new: Mapping[str, TargetReport]
) -> list[DriftRow]:
    """One row per target: status, error and size before and after (each a version's or run's
    target reports)."""
    rows = []
    missing = TargetReport(status=Status.SKIPPED)
    for target in sorted(set(old) | set(new)):
        before, after = old.get(target), new.get(target)
        m0, m1 = (before or missing).metrics, (after or missing).metrics
        status = f"{before.status.value if before else '-'} -> {after.status.value if after else '-'}"
        rows.append(
            DriftRow(
                model=model,
                target=target,
                status=status,
                max_abs_err=_delta(m0.max_abs_err, m1.max_abs_err),
                cosine=_delta(m0.cosine, m1.cosine),
                artifact_bytes=_delta(m0.artifact_bytes, m1.artifact_bytes),
                token_agreement=_delta(_extra(m0, "token_agreement"), _extra(m1, "token_agreement")),
                decode_tokens_per_s=_delta(
                    _extra(m0, "decode_tokens_per_s"), _extra(m1, "decode_tokens_per_s")
                ),
                regressed=before is not None
                and before.status is Status.PASSED
                and (after is None or after.status is not Status.PASSED),
                error=((after.error if after else None) or "")[:160],
            )
        )
    return rows
