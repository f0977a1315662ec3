"""The per-target results table printed in the terminal and shown in the Prefect UI."""

from __future__ import annotations

from shipyard.report import RunReport, TargetReport

__all__ = ["format_table", "table_rows"]

COLUMNS = ["target", "status", "max_abs_err", "max_rel_err", "cosine", "p50_ms", "load_ms", "bytes", "error"]


def _num(value: float | int | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table_rows(report: RunReport) -> list[dict[str, str]]:
    rows = []
    for name, t in report.targets.items():
        m = t.metrics
        rows.append(
            {
                "target": name,
                "status": t.status.value,
                "max_abs_err": _num(m.max_abs_err, ".2e"),
                "max_rel_err": _num(m.max_rel_err, ".2e"),
                "cosine": _num(m.cosine, ".6f"),
                "p50_ms": _num(m.latency_ms_p50, ".3f"),
                "load_ms": _num(m.load_ms, ".1f"),
                "bytes": _num(m.artifact_bytes, ","),
                "error": _error(t),
            }
        )
    return rows


def _error(t: TargetReport) -> str:
    return (t.error or "")[:160]


def format_table(report: RunReport) -> str:
    rows = table_rows(report)
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}
    line = "  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()
    body = ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    where = f"{report.model}:{report.version}" if report.version else f"{report.model} (nothing published)"
    return "\n".join([f"{where}  source sha256 {report.source_sha256[:12]}", line, *body])
