"""Every published version gets a self-contained HTML report beside its manifest."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from tests.conftest import parse_json, run_cli


class _Page(HTMLParser):
    """What a reader of the page sees: target rows, chart marks, external references."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self.points = self.bars = self.profiles = 0
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-target"):
            self.rows.append(str(found["data-target"]))
        self.points += tag == "circle" and found.get("class") == "point"
        self.bars += tag == "rect" and found.get("class") == "bar"
        self.profiles += tag == "polyline" and found.get("class") == "profile"
        self.external += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def test_a_published_version_has_an_html_report_with_rows_charts_and_failures(
    models: dict[str, Path], home: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"  # triton held to an impossible gate: a failure with its reason
    spec.write_text("targets:\n  triton:\n    gates: {max_abs_err: 0.0, min_cosine: 1.0}\n")
    args = [
        "package",
        str(models["convnet"]),
        "--targets",
        "ort-web,triton,ort-web-int8",
        "--spec",
        str(spec),
    ]
    done = run_cli([*args, "--json"], home)
    report = parse_json(done.stdout)
    assert report["version"] == 1 and report["targets"]["triton"]["status"] == "failed"
    (node, browser) = report["targets"]["ort-web"]["runtimes"]  # batch profiling, in the JSON too
    assert [b["batch"] for b in node["batches"]] == [1, 4, 16] and browser["runtime"].startswith("Chromium")
    assert all(b["items_per_s"] > 0 and b["latency_ms_p50"] > 0 for b in node["batches"])
    stored = home / "registry" / "models" / "convnet" / "reports" / "1.html"
    assert report["html_report"] == stored.as_uri() and stored.is_file()

    page = _page(stored)
    assert page.rows == ["ort-web", "triton", "ort-web-int8"]
    assert page.points == 2 and page.bars == 2  # the passed targets, in both charts
    assert page.external == []  # self-contained
    runtimes = [r for r in page.text if r.startswith(("onnxruntime", "Chromium"))]
    assert "onnxruntime-web wasm" in runtimes and "onnxruntime CPU" in runtimes  # per runtime
    assert any(r.startswith("Chromium onnxruntime-web wasm") for r in runtimes)
    # batch profiling: the conv net's batch 1..16 measured at min, typical and max, per runtime
    assert page.profiles == 4  # the passed ort-web and ort-web-int8, each in Node and in Chromium
    assert any(t.startswith("1: ") and " · 4: " in t and " · 16: " in t and "/s)" in t for t in page.text)
    text = " ".join(page.text)
    assert "gate max_abs_err failed" in text and "reproduce.sh" in text and "validate-triton" in text
    assert "int8" in text and "size_vs_fp32" in text

    shown = run_cli(["show", "convnet:1"], home)
    assert f"report: {stored.as_uri()}" in shown.stdout
    written = tmp_path / "copy.html"
    assert run_cli(["report", "convnet:1", "-o", str(written)], home).returncode == 0
    assert written.read_bytes() == stored.read_bytes()


def test_the_next_version_s_report_compares_with_the_one_before(
    models: dict[str, Path], home: Path, tmp_path: Path
) -> None:
    source = str(models["convnet"])
    first = run_cli(["package", source, "--targets", "ort-web", "-q"], home)
    assert first.returncode == 0 and "report: file:///" in first.stdout  # the result says where
    spec = tmp_path / "spec.yaml"
    spec.write_text("seed: 7\n")  # another identity: version 2
    assert (
        run_cli(["package", source, "--targets", "ort-web", "--spec", str(spec), "-q"], home).returncode == 0
    )
    second = home / "registry" / "models" / "convnet" / "reports" / "2.html"
    text = " ".join(_page(second).text)
    assert "Compared with version 1." in text and "(was 1.0" in text
    assert run_cli(["rm", "convnet:1"], home).returncode == 0
    assert not (home / "registry" / "models" / "convnet" / "reports" / "1.html").exists()
