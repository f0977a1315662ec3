"""The web targets proven in headless Chromium (Debian's package, installed by `make test`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from shipyard.report import Status, TargetReport
from targets._browser import chromium_binary
from targets.pipeline import Engine, PipelineResult
from tests.conftest import parse_json, register_variant, run_cli, run_targets


@pytest.fixture(scope="module")
def chromium() -> str:
    found = chromium_binary()
    assert found, "Chromium is not installed: `make test` installs Debian's chromium (apt-get)"
    return found


@pytest.fixture(scope="module")
def web(
    chromium: str, engine: Engine, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> PipelineResult:
    return run_targets(engine, models["convnet"], ["tfjs", "ort-web"], tmp_path_factory.mktemp("web"))


def _browser_runs(report: TargetReport) -> dict[str, float]:
    """Worst cosine per runtime that ran in Chromium."""
    worst: dict[str, float] = {}
    for v in report.variants:
        if v.runtime.startswith("Chromium"):
            worst[v.runtime] = min(worst.get(v.runtime, 1.0), v.cosine)
    return worst


def test_chromium_runs_tfjs_on_webgl_and_wasm_within_the_gates(web: PipelineResult) -> None:
    tfjs = web.reports["tfjs"]
    assert tfjs.status is Status.PASSED, tfjs.error
    runs = _browser_runs(tfjs)
    backends = sorted(r.split(" tfjs ", 1)[1].split(" ")[0] for r in runs)
    assert backends == ["wasm", "webgl"]  # the backend the page reported it ran on
    assert all(c >= 0.99999 for c in runs.values()), runs
    assert any("float32 textures: true" in r for r in runs)  # SwiftShader's WebGL renders float32
    assert any(n.startswith("ran in Chromium") for n in tfjs.notes)
    # both browser backends ran every validation variant
    variants = {v.variant for v in tfjs.variants}
    assert all({v.variant for v in tfjs.variants if v.runtime == r} == variants for r in runs)


def test_chromium_runs_ort_web_on_wasm_within_the_gates(web: PipelineResult) -> None:
    ort = web.reports["ort-web"]
    assert ort.status is Status.PASSED, ort.error
    runs = _browser_runs(ort)
    assert len(runs) == 1 and "onnxruntime-web wasm" in next(iter(runs))
    assert all(c >= 0.99999 for c in runs.values())


def test_a_tampered_tfjs_weight_shard_fails_in_the_browser(
    chromium: str, engine: Engine, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_variant(monkeypatch, "tfjs", "tfjs-tampered", export="tests.steps:tampered_tfjs")
    report = run_targets(engine, models["convnet"], ["tfjs-tampered"], tmp_path).reports["tfjs-tampered"]
    assert report.status is Status.FAILED and "gate max_abs_err failed" in (report.error or "")
    browser = {v.runtime: v.max_abs_err for v in report.variants if v.runtime.startswith("Chromium")}
    assert len(browser) == 2 and all(err > 1e-3 for err in browser.values()), browser


def test_the_html_report_renders_in_chromium(
    chromium: str, models: dict[str, Path], home: Path, tmp_path: Path
) -> None:
    done = run_cli(["package", str(models["convnet"]), "--targets", "ort-web,triton", "-q"], home)
    assert done.returncode == 0
    page = home / "registry" / "models" / "convnet" / "reports" / "1.html"
    shot = tmp_path / "report.png"
    common = [chromium, "--headless", "--no-sandbox", "--window-size=1200,1000"]
    subprocess.run(
        [*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert 'data-target="ort-web"' in dom and 'data-target="triton"' in dom
    assert dom.count('class="point"') == 2 and dom.count('class="bar"') == 2


def test_a_browser_run_alone_off_fails_the_target(tmp_path: Path) -> None:
    """Browser runs count toward the gates on their own: Node right, Chromium wrong -> failed,
    naming the Chromium runtime; and per runtime timings with the batch profile."""
    import numpy as np

    from shipyard.gates import FP32_GATES
    from shipyard.variants import save_arrays
    from targets._jobs import ArtifactRun, RuntimeResult
    from targets.engine.judge import LocatedVariant, judge

    reference = np.linspace(-1, 1, 40, dtype=np.float32).reshape(4, 10)
    save_arrays(tmp_path / "ref.npz", {"logits": reference})
    save_arrays(tmp_path / "node.npz", {"logits": reference})
    save_arrays(tmp_path / "browser.npz", {"logits": reference * 1.01})
    variant = LocatedVariant(
        name="typical", dims={"batch": 4}, inputs="-", reference=str(tmp_path / "ref.npz")
    )
    runs = [
        ArtifactRun(
            file="model.json", runtime="tfjs wasm", outputs={"typical": "node.npz"}, load_ms=1, times_ms=[2.0]
        ),
        ArtifactRun(
            file="model.json",
            runtime="Chromium tfjs webgl",
            outputs={"typical": "browser.npz"},
            load_ms=1,
            times_ms=[4.0],
        ),
    ]
    report = judge(
        TargetReport(status=Status.FAILED),
        {"typical": variant},
        RuntimeResult(runs=runs),
        tmp_path,
        FP32_GATES,
        "batch",
    )
    assert report.status is Status.FAILED and "gate max_abs_err failed" in (report.error or "")
    assert "Chromium tfjs webgl" in (report.error or "")  # the worst run is named
    assert [(t.runtime, t.batches[0].batch, t.batches[0].items_per_s) for t in report.runtimes] == [
        ("tfjs wasm", 4, 2000.0),
        ("Chromium tfjs webgl", 4, 1000.0),
    ]


def test_browser_off_reaches_the_validation_steps(chromium: str, home: Path, models: dict[str, Path]) -> None:
    """SHIPYARD_BROWSER=off is passed to the step processes: the fingerprint says "off" and no
    validation launches Chromium."""
    result = run_cli(
        ["package", str(models["convnet"]), "--targets", "ort-web", "--json"],
        home,
        extra_env={"SHIPYARD_BROWSER": "off"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = parse_json(result.stdout)
    ort = report["targets"]["ort-web"]
    assert ort["status"] == "passed", ort.get("error")
    assert report["toolchain"]["chromium"] == "off"
    assert ort["variants"] and not [v for v in ort["variants"] if v["runtime"].startswith("Chromium")]
    assert any("proven in Node only" in n for n in ort["notes"])


def _chromium_groups(started: float, seen: dict[int, tuple[int, int]], stop: threading.Event) -> None:
    """Record, for each Chromium process started since `started`, its process group and that of
    the process that started the browser (the step's Node harness)."""
    import psutil

    while not stop.is_set():
        for proc in psutil.process_iter(["name", "create_time"]):
            # chrome_crashpad_handler daemonizes by design and exits with the browser
            if proc.info["name"] != "chromium" or proc.info["create_time"] < started:
                continue
            with contextlib.suppress(psutil.Error, OSError, StopIteration):
                starter = next(p for p in proc.parents() if "chrom" not in p.name())
                seen.setdefault(proc.pid, (os.getpgid(proc.pid), os.getpgid(starter.pid)))
        stop.wait(0.2)


def test_a_killed_browser_validation_leaves_no_chromium(
    chromium: str, engine: Engine, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validate step times out while Chromium runs: Chromium is in the step's process group
    (puppeteer would start it in one of its own), so killing the group ends it too."""
    register_variant(
        monkeypatch, "ort-web", "ort-web-hangs", validate="tests.steps:hangs_in_chromium", timeout_s=25
    )
    started, seen, stop = time.time() - 1, {}, threading.Event()
    watcher = threading.Thread(target=_chromium_groups, args=(started, seen, stop), daemon=True)
    watcher.start()
    try:
        report = run_targets(engine, models["multi_io"], ["ort-web-hangs"], tmp_path).reports["ort-web-hangs"]
    finally:
        stop.set()
        watcher.join()
    assert report.status is Status.FAILED, report.error
    assert "validate:ort-web-hangs timed out" in (report.error or ""), report.error
    assert seen, "no Chromium was seen running"
    assert all(own == node for own, node in seen.values()), seen  # in the step's group
    deadline = time.monotonic() + 10
    while (left := [pid for pid in seen if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
