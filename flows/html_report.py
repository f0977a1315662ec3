"""A published version as one self-contained HTML page: every target's result, and two charts.

No external assets: styles are inline, charts are inline SVG, so the page opens from the
registry, a Prefect artifact link or a mail attachment alike. Rendered from the manifest (and
the run's report, when kept, for the steps' reproduce commands), so `shipyard report` can write
it again for any version.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from registry import VersionManifest
from shipyard.drift import DriftRow
from shipyard.errors import UnknownTarget
from shipyard.report import BatchTiming, RuntimeTiming, Status, TargetReport

__all__ = ["render_drift_report", "render_version_report"]

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1d2430;max-width:1200px}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .5em}
table{border-collapse:collapse;width:100%;margin:.4em 0}
th,td{border-bottom:1px solid #dde2ea;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f5f8;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.passed{color:#1a7f37;font-weight:600}.failed{color:#c4302b;font-weight:600}.skipped{color:#8a8f98}
.muted{color:#6b7280}.charts{display:flex;flex-wrap:wrap;gap:2em}code,pre{font-size:12px}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;white-space:pre-wrap}
"""


def _num(value: float | int | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _envelope(report: TargetReport) -> str:
    if not report.envelope:
        return "declared range"
    return ", ".join(
        f"{d} {r.min}-{r.max}" if r.min != r.max else f"{d}={r.min}" for d, r in report.envelope.items()
    )


def _facts(name: str, report: TargetReport) -> str:
    """The metrics its target declares worth showing (a rung's size and quantization facts)."""
    from targets import get_target

    try:
        declared = get_target(name).report_facts
    except UnknownTarget:  # a version packaged for a target this release no longer has
        return ""
    extra = report.metrics.model_dump(exclude_none=True)
    return ", ".join(f"{k} {extra[k]}" for k in declared if k in extra)


def _row(name: str, report: TargetReport, before: TargetReport | None) -> str:
    m = report.metrics
    size = sum(f.bytes for f in report.files) or m.artifact_bytes
    drift = ""
    if before is not None and before.metrics.cosine is not None and m.cosine is not None:
        drift = f" <span class=muted>(was {before.metrics.cosine:.6f})</span>"
    cells = [
        f"<td>{escape(name)}</td>",
        f"<td>{escape(report.precision.value if report.precision else '-')}</td>",
        f"<td class={report.status.value}>{report.status.value}</td>",
        f"<td class=num>{_num(m.cosine, '.6f')}{drift}</td>",
        f"<td class=num>{_num(m.max_abs_err, '.2e')}</td>",
        f"<td class=num>{_num(m.rel_l2_err, '.2e')}</td>",
        f"<td class=num>{_num(size / 1024 if size else None, ',.1f')}</td>",
        f"<td class=num>{_num(m.load_ms, '.1f')}</td>",
        f"<td class=num>{_num(m.latency_ms_p50, '.3f')}</td>",
        f"<td>{escape(_envelope(report))}</td>",
        f"<td>{escape(_facts(name, report))}</td>",
    ]
    return f"<tr data-target='{escape(name)}'>" + "".join(cells) + "</tr>"


def _scatter(points: dict[str, tuple[float, float]]) -> str:
    """Size (x, log) against 1 - cosine (y, log): lower left is small and accurate."""
    if not points:
        return ""
    width, height, pad = 520, 320, 48
    xs = [math.log10(max(x, 1)) for x, _ in points.values()]
    ys = [math.log10(max(y, 1e-9)) for _, y in points.values()]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    y0, y1 = min(ys) - 0.5, max(ys) + 0.5

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            pad + (x - x0) / (x1 - x0) * (width - 2 * pad),
            height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad),
        )

    marks = []
    for (name, _), x, y in zip(points.items(), xs, ys, strict=True):
        cx, cy = at(x, y)
        marks.append(
            f"<circle class=point cx={cx:.1f} cy={cy:.1f} r=5 fill='#2f6fde'>"
            f"<title>{escape(name)}</title></circle>"
            f"<text x={cx + 7:.1f} y={cy + 4:.1f} font-size=11>{escape(name)}</text>"
        )
    return (
        f"<svg class=chart id=size-accuracy width={width} height={height} role=img "
        f"aria-label='artifact size against accuracy'>"
        f"<line x1={pad} y1={height - pad} x2={width - pad} y2={height - pad} stroke='#888'/>"
        f"<line x1={pad} y1={pad} x2={pad} y2={height - pad} stroke='#888'/>"
        f"<text x={width / 2:.0f} y={height - 10} text-anchor=middle font-size=12>artifact bytes (log)</text>"
        f"<text x=14 y={height / 2:.0f} font-size=12 transform='rotate(-90 14 {height / 2:.0f})' "
        f"text-anchor=middle>1 - cosine (log)</text>" + "".join(marks) + "</svg>"
    )


def _bars(values: dict[str, float], unit: str, chart_id: str, label: str) -> str:
    if not values:
        return ""
    width, row, pad = 520, 24, 130
    top = max(values.values()) or 1.0
    bars = []
    for i, (name, value) in enumerate(values.items()):
        length = value / top * (width - pad - 70)
        y = 10 + i * row
        bars.append(
            f"<text x={pad - 6} y={y + 15} text-anchor=end font-size=12>{escape(name)}</text>"
            f"<rect class=bar x={pad} y={y + 3} width={max(length, 1):.1f} height={row - 8} fill='#3a9a5b'>"
            f"<title>{escape(name)}: {value:.3f} {unit}</title></rect>"
            f"<text x={pad + length + 6:.1f} y={y + 15} font-size=11>{value:.3f} {unit}</text>"
        )
    height = 20 + row * len(values)
    return (
        f"<svg class=chart id={chart_id} width={width} height={height} role=img aria-label='{label}'>"
        + "".join(bars)
        + "</svg>"
    )


def _per_batch(timing: RuntimeTiming) -> str:
    """`1: 0.4 ms (2,500/s) · 4: ...`; each size's other dims too when they changed with it."""

    def size(b: BatchTiming) -> str:
        others = ", ".join(f"{k}={v}" for k, v in b.other_dims.items())
        return f"{b.batch}" if timing.batch_only() or not others else f"{b.batch} ({others})"

    return " · ".join(
        f"{size(b)}: {b.latency_ms_p50:.3f} ms ({b.items_per_s:,.0f}/s)" for b in timing.batches
    )


def _runtimes(manifest: VersionManifest) -> str:
    """Load time and p50 latency of every target in every runtime it ran in, and per batch size."""
    rows = "".join(
        f"<tr class=runtime><td>{escape(name)}</td><td>{escape(r.runtime)}</td><td>{escape(r.file)}</td>"
        f"<td class=num>{r.load_ms:.1f}</td><td class=num>{_num(r.latency_ms_p50, '.3f')}</td>"
        f"<td>{escape(_per_batch(r))}</td></tr>"
        for name, t in manifest.targets.items()
        for r in t.runtimes
    )
    if not rows:
        return ""
    header = (
        "<th>target</th><th>runtime</th><th>file</th><th>load ms</th><th>p50 ms</th>"
        "<th>per batch size: p50 (items/s)</th>"
    )
    table = f"<table id=runtimes><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"
    return f"<h2>Runtimes</h2>{table}"


def _batch_chart(manifest: VersionManifest) -> str:
    """p50 latency against batch size, one line per passed target and runtime."""
    lines = {
        f"{name} · {r.runtime}": [(b.batch, b.latency_ms_p50) for b in r.batches]
        for name, t in manifest.targets.items()
        if t.status is Status.PASSED
        for r in t.runtimes
        if len({b.batch for b in r.batches}) > 1 and r.batch_only()  # else the batch is not all that moved
    }
    if not lines:
        return ""
    width, height, pad = 520, 320, 48
    xs = [x for points in lines.values() for x, _ in points]
    x0, x1 = min(xs), max(xs)
    y1 = max(y for points in lines.values() for _, y in points) * 1.1 or 1.0

    def at(x: float, y: float) -> str:
        px = pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)
        return f"{px:.1f},{height - pad - y / y1 * (height - 2 * pad):.1f}"

    polylines = "".join(
        f"<polyline class=profile fill=none stroke='#8a4fd1' stroke-width=1.5 "
        f"points='{' '.join(at(x, y) for x, y in points)}'><title>{escape(label)}</title></polyline>"
        for label, points in lines.items()
    )
    return (
        f"<svg class=chart id=batch-latency width={width} height={height} role=img "
        f"aria-label='p50 latency per batch size'>"
        f"<line x1={pad} y1={height - pad} x2={width - pad} y2={height - pad} stroke='#888'/>"
        f"<line x1={pad} y1={pad} x2={pad} y2={height - pad} stroke='#888'/>"
        f"<text x={width / 2:.0f} y={height - 10} text-anchor=middle font-size=12>batch size "
        f"({x0}-{x1})</text><text x=14 y={height / 2:.0f} font-size=12 "
        f"transform='rotate(-90 14 {height / 2:.0f})' text-anchor=middle>p50 ms (0-{y1:.3g})</text>"
        + polylines
        + "</svg>"
    )


def _failures(manifest: VersionManifest, run: dict[str, Any] | None) -> str:
    failed = {n: t for n, t in manifest.targets.items() if t.status is not Status.PASSED}
    if not failed:
        return "<p>Every target passed.</p>"
    steps = (run or {}).get("steps", [])
    workdir = (run or {}).get("workdir")
    parts = []
    for name, report in failed.items():
        gates = "".join(f"<li>{escape(g.describe())}</li>" for g in report.gates if not g.passed)
        mine = [st for st in steps if name in st.get("targets", []) and st.get("folder")]
        # the steps that failed; a gate failure: the validation whose outputs the gates judged
        chosen = [st for st in mine if st.get("status") == "failed"] or [
            st for st in mine if st.get("step") == f"validate:{name}"
        ]
        repro = [f"sh {workdir}/{st['folder']}/reproduce.sh" for st in chosen] if workdir else []
        parts.append(
            f"<h3>{escape(name)} <span class={report.status.value}>{report.status.value}</span></h3>"
            f"<pre>{escape(report.error or '')}</pre>"
            + (f"<ul>{gates}</ul>" if gates else "")
            + (f"<p>Reproduce:</p><pre>{escape(chr(10).join(repro))}</pre>" if repro else "")
        )
    return "".join(parts)


def render_version_report(
    manifest: VersionManifest, previous: VersionManifest | None = None, run: dict[str, Any] | None = None
) -> str:
    """The version's page; `previous` adds what changed, `run` (its run report) the repro commands."""
    title = f"{manifest.model}:{manifest.version}"
    before = previous.targets if previous else {}
    rows = "".join(_row(n, t, before.get(n)) for n, t in manifest.targets.items())
    passed = {n: t for n, t in manifest.targets.items() if t.status is Status.PASSED}
    points = {
        n: (float(sum(f.bytes for f in t.files)), 1 - t.metrics.cosine)
        for n, t in passed.items()
        if t.metrics.cosine is not None and t.files
    }
    latency = {n: t.metrics.latency_ms_p50 for n, t in passed.items() if t.metrics.latency_ms_p50 is not None}
    toolchain = "".join(
        f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in manifest.toolchain.items()
    )
    compared = f" Compared with version {previous.version}." if previous else ""
    header = (
        "<th>target</th><th>precision</th><th>status</th><th>cosine</th><th>max abs err</th>"
        "<th>rel L2</th><th>KB</th><th>load ms (worst)</th><th>p50 ms (worst)</th><th>serves</th>"
        "<th>quantization</th>"
    )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Shipyard report {escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{escape(title)}</h1>
<p class=muted>created {escape(manifest.created_at)} · source {escape(manifest.source.filename)}
({escape(manifest.source.kind)}, {manifest.source.bytes:,} bytes, sha256 {escape(manifest.source.sha256)}) ·
run {escape(manifest.run.run_id)} · {len(passed)} of {len(manifest.targets)} targets passed.{compared}</p>
<h2>Targets</h2>
<table id=targets><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>
<h2>Size, accuracy and latency</h2>
<div class=charts>{_scatter(points)}{_bars(latency, "ms", "latency", "p50 latency per target")}
{_batch_chart(manifest)}</div>
{_runtimes(manifest)}
<h2>Failures</h2>
{_failures(manifest, run)}
<h2>Toolchain</h2>
<details><summary>{len(manifest.toolchain)} packages</summary><table>{toolchain}</table></details>
</body></html>
"""


def _cells(row: dict[str, Any], columns: list[str]) -> str:
    return "".join(f"<td>{escape(str(row.get(c, '')))}</td>" for c in columns)


def _toolchain_changes(changes: dict[str, list[str | None]]) -> str:
    return ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items()) or "none"


def render_drift_report(
    title: str, models: list[dict[str, Any]], drift: list[DriftRow], failures: list[dict[str, str]]
) -> str:
    """The nightly re-export as one page: per model the versions and toolchain changes, per
    target what changed (regressions first), and the models whose re-export failed."""
    changes = "".join(
        f"<tr class=model><td>{escape(m['model'])}</td><td>{m['old_version']} -> {m['new_version']}</td>"
        f"<td>{escape(_toolchain_changes(m['toolchain_changes']))}</td>"
        f"<td class=num>{len(m['steps_run'])}</td><td class=num>{m['steps_reused']}</td></tr>"
        for m in models
    )
    columns = [
        "model",
        "target",
        "status",
        "cosine",
        "max_abs_err",
        "artifact_bytes",
        "token_agreement",
        "decode_tokens_per_s",
        "error",
    ]
    ordered = sorted(drift, key=lambda r: (not r.regressed, r.model, r.target))
    rows = "".join(
        f"<tr class='{'drift regressed' if r.regressed else 'drift'}' "
        f"data-target='{escape(r.target)}'>" + _cells(r.model_dump(), columns) + "</tr>"
        for r in ordered
    )
    head = "".join(f"<th>{c}</th>" for c in columns)
    failed = "".join(f"<li>{escape(f['model'])}: {escape(f['error'])}</li>" for f in failures)
    regressed = sum(r.regressed for r in drift)
    counts = f"{len(models)} model(s) re-exported, {regressed} target(s) regressed, {len(failures)} failed."
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Shipyard nightly {escape(title)}</title>
<style>{STYLE}tr.regressed td{{background:#fdecea}}</style></head><body>
<h1>Nightly re-export {escape(title)}</h1>
<p class=muted>{counts}</p>
<h2>Models</h2>
<table id=models><thead><tr><th>model</th><th>version</th><th>toolchain changes</th><th>steps run</th>
<th>steps reused</th></tr></thead><tbody>{changes}</tbody></table>
<h2>Targets</h2>
<table id=drift><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
{f"<h2>Failed re-exports</h2><ul>{failed}</ul>" if failed else ""}
</body></html>
"""
