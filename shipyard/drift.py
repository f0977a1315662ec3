"""Drift between two packagings of the same source: what a toolchain change did to each target."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["DriftRow", "drift_rows", "toolchain_changes"]


class DriftRow(BaseModel):
    """One target of one re-exported model: what changed (each metric as `old -> new`)."""

    model: str
    target: str
    status: str  # `passed -> failed`
    max_abs_err: str
    cosine: str
    artifact_bytes: str
    regressed: bool  # passed before, not now
    error: str  # today's, cut to 160 characters


def toolchain_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str | None]]:
    """Package -> [old version, new version] for every package whose version differs."""
    return {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _delta(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return "-"
    return f"{old:.3g} -> {new:.3g}"


def drift_rows(model: str, old: dict[str, Any], new: dict[str, Any]) -> list[DriftRow]:
    """One row per target: status, error and size before and after. `old`/`new`: run reports."""
    rows = []
    for target in sorted(set(old["targets"]) | set(new["targets"])):
        before = old["targets"].get(target, {})
        after = new["targets"].get(target, {})
        m0, m1 = before.get("metrics", {}), after.get("metrics", {})
        status = f"{before.get('status', '-')} -> {after.get('status', '-')}"
        rows.append(
            DriftRow(
                model=model,
                target=target,
                status=status,
                max_abs_err=_delta(m0.get("max_abs_err"), m1.get("max_abs_err")),
                cosine=_delta(m0.get("cosine"), m1.get("cosine")),
                artifact_bytes=_delta(m0.get("artifact_bytes"), m1.get("artifact_bytes")),
                regressed=before.get("status") == "passed" and after.get("status") != "passed",
                error=(after.get("error") or "")[:160],
            )
        )
    return rows
