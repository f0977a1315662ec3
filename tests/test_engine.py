"""The engine: shared steps, warm isolated step processes, the step cache, reproducible bytes."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from shipyard.report import Status, StepStatus
from targets import get_target
from targets.engine.cache import CacheEntry, StepCache, tree_digest
from targets.pipeline import Engine, PipelineResult
from tests.conftest import parse_json, register_variant, run_cli, run_targets
from tests.steps import sleepers


def _triton_with(monkeypatch: pytest.MonkeyPatch, **exporters: str) -> None:
    """Register targets that are triton but for their exporter (name -> "tests.steps:function")."""
    for name, exporter in exporters.items():
        register_variant(monkeypatch, "triton", name, export=exporter)


def test_crash_and_hang_in_forked_steps_fail_only_their_target(
    engine: Engine, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_variant(monkeypatch, "triton", "crashes", export="tests.steps:crash")
    register_variant(monkeypatch, "triton", "hangs", export="tests.steps:hang", timeout_s=3)

    result = run_targets(engine, models["multi_io"], ["triton", "crashes", "hangs"], tmp_path)

    assert result.reports["triton"].status is Status.PASSED, result.reports["triton"].error
    assert "export:crashes failed: export:crashes process died with SIGSEGV" in (
        result.reports["crashes"].error or ""
    )
    assert "export:hangs failed: export:hangs timed out after 3s" in (result.reports["hangs"].error or "")
    assert sleepers() == []  # the hung step's whole process group was killed
    steps = {s.step: s for s in result.steps}
    assert steps["validate:crashes"].status is StepStatus.SKIPPED
    assert "export:crashes failed" in (steps["validate:crashes"].error or "")
    # the step folder keeps what is needed to reproduce the failure
    folder = tmp_path / "steps" / "export-crashes"
    assert (folder / "reproduce.sh").is_file() and (folder / "job.json").is_file()


def test_one_onnx_export_feeds_three_targets(engine: Engine, models: dict[str, Path], tmp_path: Path) -> None:
    result = run_targets(engine, models["multi_io"], ["ort-web", "triton", "tfjs"], tmp_path)
    assert all(r.status is Status.PASSED for r in result.reports.values()), result.reports
    onnx_steps = [s for s in result.steps if s.step.startswith("convert:onnx")]
    assert len(onnx_steps) == 1
    assert sorted(onnx_steps[0].targets) == ["ort-web", "tfjs", "triton"]


def test_different_opsets_get_their_own_conversion(
    engine: Engine, models: dict[str, Path], tmp_path: Path
) -> None:
    spec = {"targets": {"triton": {"options": {"opset": 17}}}}
    result = run_targets(engine, models["multi_io"], ["ort-web", "triton"], tmp_path, spec)
    assert {s.step for s in result.steps if s.step.startswith("convert:")} == {
        "convert:onnx",
        "convert:onnx[opset=17]",
    }
    assert all(r.status is Status.PASSED for r in result.reports.values())


def test_two_rungs_of_one_exporter_never_share_a_cache_entry(
    engine: Engine, models: dict[str, Path], tmp_path: Path
) -> None:
    """tfjs and tfjs-fp16 run the same exporter with the same options and input; the rung is
    part of the export's cache key, so each run gets its own shards from the shared cache,
    whichever rung was cached first (with one key, both would get the same bytes)."""
    assert get_target("tfjs").build() == get_target("tfjs-fp16").build()  # same export, same options
    fp16 = run_targets(engine, models["convnet"], ["tfjs-fp16"], tmp_path / "fp16")
    fp32 = run_targets(engine, models["convnet"], ["tfjs"], tmp_path / "fp32")
    assert next(s for s in fp32.steps if s.step == "convert:saved-model").reused  # shared upstream

    def shard_bytes(result: PipelineResult, name: str) -> int:
        report = result.reports[name]
        assert report.status is Status.PASSED, report.error
        return sum(f.bytes for f in report.files if f.path.endswith(".bin"))

    assert shard_bytes(fp32, "tfjs") == pytest.approx(2 * shard_bytes(fp16, "tfjs-fp16"), rel=0.01)


def _fake_distribution(folder: Path, name: str, version: str) -> Path:
    """A dist-info that importlib.metadata finds before the real one: what the fingerprint reads."""
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def test_cache_reused_on_rerun_and_invalidated_by_a_toolchain_change(
    models: dict[str, Path], home: Path, tmp_path: Path
) -> None:
    args = ["package", str(models["multi_io"]), "--targets", "triton,ort-web", "--json"]
    first = run_cli(args, home)
    assert first.returncode == 0, first.stderr[-3000:]
    cold = parse_json(first.stdout)
    assert not any(s["reused"] for s in cold["steps"])

    again = parse_json(run_cli(args, home).stdout)
    assert again["version"] == cold["version"] == 1  # nothing changed: no new version
    assert all(s["reused"] for s in again["steps"])
    for name, target in again["targets"].items():
        assert target["files"] == cold["targets"][name]["files"]

    fake = _fake_distribution(tmp_path / "fake", "tritonclient", "99.0")
    changed = run_cli(
        args, home, extra_env={"PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    )
    assert changed.returncode == 0, changed.stderr[-3000:]
    bumped = parse_json(changed.stdout)
    assert bumped["toolchain"]["tritonclient"] == "99.0"
    reran = {s["step"] for s in bumped["steps"] if not s["reused"]}
    assert reran == {"export:triton", "validate:triton"}  # only what tritonclient touches
    assert bumped["version"] == 2  # a new toolchain is a new version


def test_same_bytes_from_two_homes_and_both_front_doors(
    convnet_all, models: dict[str, Path], home: Path
) -> None:
    """The Prefect flow (convnet_all) and a local run in another home produce byte-identical artifacts."""
    flow_home, flow_result = convnet_all
    assert home != flow_home
    local = run_cli(["package", str(models["convnet"]), "--json"], home)
    assert local.returncode == 0, local.stderr[-3000:]
    first, second = parse_json(flow_result.stdout), parse_json(local.stdout)
    assert not any(s["reused"] for s in second["steps"])  # nothing shared between the two homes
    for name, target in first["targets"].items():
        assert target["files"] == second["targets"][name]["files"], name


def test_step_folder_reproduces_a_step(engine: Engine, models: dict[str, Path], tmp_path: Path) -> None:
    """reproduce.sh runs the step again in a fresh interpreter and writes the same bytes."""
    import subprocess

    cacheless = Engine(cache=StepCache(None), log_dir=tmp_path / "logs")
    with cacheless:
        result = run_targets(cacheless, models["multi_io"], ["triton"], tmp_path / "run")
    folder = tmp_path / "run" / "steps" / "export-triton"
    before = {p.name: p.read_bytes() for p in (folder / "out").rglob("*") if p.is_file()}
    done = subprocess.run(["sh", str(folder / "reproduce.sh")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = {p.name: p.read_bytes() for p in (folder / "out").rglob("*") if p.is_file()}
    assert after == before and before
    assert json.loads((folder / "result.json").read_text())["files"] == [
        f.path for f in result.reports["triton"].files
    ]


def test_only_repeatable_failures_are_cached(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _triton_with(monkeypatch, fails="tests.steps:fails", hogs="tests.steps:hogs")
    spec = {"targets": {"hogs": {"memory_mb": 1024}}}
    with Engine(cache=StepCache(tmp_path / "cache"), log_dir=tmp_path / "logs") as fresh:
        first = run_targets(fresh, models["multi_io"], ["fails", "hogs"], tmp_path / "one", spec)
        again = run_targets(fresh, models["multi_io"], ["fails", "hogs"], tmp_path / "two", spec)
    assert "ValueError: unsupported op Foo" in (first.reports["fails"].error or "")
    assert "MemoryError" in (first.reports["hogs"].error or "")
    reused = {s.step: s.reused for s in again.steps}
    assert reused["export:fails"]  # a converter's rejection repeats: not run again
    assert not reused["export:hogs"]  # running out of memory may not: run again
    assert again.reports["fails"].error == first.reports["fails"].error


@pytest.mark.parametrize("warm", ["1", "0"], ids=["warm", "cold"])
def test_steps_are_capped_and_see_no_credentials_by_default(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm: str
) -> None:
    """Forked from a warm server or started cold: memory capped, no credentials, no core dumps."""
    monkeypatch.setenv("SHIPYARD_WARM_WORKERS", warm)
    _triton_with(monkeypatch, hogs="tests.steps:hogs", snoops="tests.steps:snoops")
    monkeypatch.setenv("SHIPYARD_STEP_MEMORY_MB", "1024")  # no memory_mb in the spec: the default
    for secret in ("AWS_SECRET_ACCESS_KEY", "SHIPYARD_WEBHOOK_SECRET", "PREFECT_API_KEY"):
        monkeypatch.setenv(secret, "must-not-reach-a-converter")
    with Engine(cache=StepCache(None), log_dir=tmp_path / "logs") as fresh:
        result = run_targets(fresh, models["multi_io"], ["hogs", "snoops"], tmp_path / "run")
    assert "MemoryError" in (result.reports["hogs"].error or "")
    assert result.reports["snoops"].status is Status.PASSED, result.reports["snoops"].error


def test_a_cache_entry_that_changed_is_not_used(models: dict[str, Path], tmp_path: Path) -> None:
    cache = StepCache(tmp_path / "cache")
    with Engine(cache=cache, log_dir=tmp_path / "logs") as fresh:
        first = run_targets(fresh, models["multi_io"], ["triton"], tmp_path / "one")
        artifact = first.artifact_dirs["triton"] / "multi_io" / "1" / "model.onnx"
        artifact.chmod(0o644)  # cached files are read-only; someone forced it
        artifact.write_bytes(artifact.read_bytes()[:-8] + b"tampered")
        again = run_targets(fresh, models["multi_io"], ["triton"], tmp_path / "two")
    reused = {s.step: s.reused for s in again.steps}
    assert not reused["export:triton"] and reused["convert:onnx"]
    assert again.reports["triton"].status is Status.PASSED
    assert again.reports["triton"].files == first.reports["triton"].files


def _finished_step(folder: Path, content: bytes) -> tuple[Path, CacheEntry]:
    out = folder / "out"
    out.mkdir(parents=True)
    (out / "model.bin").write_bytes(content)
    entry = CacheEntry(
        step="export:x", ok=True, result="{}", seconds=1.0, digest=tree_digest(out), created_at=0
    )
    return out, entry


def test_a_partial_cache_entry_is_replaced_and_a_lost_race_is_verified(tmp_path: Path) -> None:
    """A writer killed mid-store left a folder without its entry: the next store replaces it
    instead of using it for 30 days. A store that loses a race to a whole entry uses that one."""
    cache = StepCache(tmp_path / "cache")
    key = "ab" * 32
    partial = tmp_path / "cache" / key[:2] / key
    (partial / "out").mkdir(parents=True)
    (partial / "out" / "model.bin").write_bytes(b"half")
    assert cache.lookup(key) is None
    out, entry = _finished_step(tmp_path / "run1", b"whole model")
    stored = cache.store(key, out, entry)
    assert (stored / "model.bin").read_bytes() == b"whole model"
    hit = cache.lookup(key)
    assert hit is not None and hit.entry.digest == entry.digest
    late, late_entry = _finished_step(tmp_path / "run2", b"whole model")  # the same step, run twice
    assert (cache.store(key, late, late_entry) / "model.bin").read_bytes() == b"whole model"
    assert list((tmp_path / "cache" / "staging").iterdir()) == []


def test_the_cache_evicts_the_least_recently_used_entries_beyond_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_CACHE_MAX_GB", "0.0025")  # 2.5 MB; four entries of 1 MB
    cache = StepCache(tmp_path / "cache")
    keys = [f"{i:02x}" * 32 for i in range(4)]
    two_hours_ago = time.time() - 7200
    for i, key in enumerate(keys):
        out, entry = _finished_step(tmp_path / f"run{i}", os.urandom(1_000_000))
        cache.store(key, out, entry)
        os.utime(tmp_path / "cache" / key[:2] / key, (two_hours_ago + i, two_hours_ago + i))
    assert cache.lookup(keys[0]) is not None  # used now: the most recent
    assert cache.prune() == 2
    assert [cache.lookup(k) is not None for k in keys] == [True, False, False, True]


def test_the_cache_removes_entries_unused_for_its_max_age(tmp_path: Path) -> None:
    cache = StepCache(tmp_path / "cache", max_age_days=1)
    old, recent = "0a" * 32, "0b" * 32
    for key in (old, recent):
        cache.store(key, *_finished_step(tmp_path / key[:2], b"small"))
    two_days_ago = time.time() - 2 * 86400
    os.utime(tmp_path / "cache" / old[:2] / old, (two_days_ago, two_days_ago))
    assert cache.prune() == 1  # far below the size limit: only its age counts
    assert cache.lookup(old) is None and cache.lookup(recent) is not None


def test_a_cache_root_others_may_write_to_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert not StepCache(shared).enabled
    private = StepCache(tmp_path / "fresh")
    assert private.enabled and stat.S_IMODE((tmp_path / "fresh").stat().st_mode) & 0o077 == 0


def test_a_step_writing_a_file_beyond_its_limit_fails_and_says_why(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RLIMIT_FSIZE: the write fails with EFBIG inside the step (no SIGXFSZ kill), so the target's
    error names it; the other target passes."""
    _triton_with(monkeypatch, writes_big="tests.steps:writes_big")
    monkeypatch.setenv("SHIPYARD_MAX_STEP_FILE_MB", "1")
    with Engine(cache=StepCache(None), log_dir=tmp_path / "logs") as fresh:
        result = run_targets(fresh, models["multi_io"], ["writes_big", "triton"], tmp_path / "run")
    assert "File too large" in (result.reports["writes_big"].error or ""), result.reports["writes_big"].error
    assert result.reports["triton"].status is Status.PASSED, result.reports["triton"].error


def test_a_step_that_writes_to_its_input_fails(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnx2tf once rewrote the shared ONNX file in place; such a step must not pass silently."""
    register_variant(monkeypatch, "triton", "scribbles", export="tests.steps:scribbles")
    with Engine(cache=StepCache(tmp_path / "cache"), log_dir=tmp_path / "logs") as fresh:
        result = run_targets(fresh, models["multi_io"], ["scribbles"], tmp_path / "run")
        again = run_targets(fresh, models["multi_io"], ["triton"], tmp_path / "again")
    assert "export:scribbles modified its input convert:onnx" in (result.reports["scribbles"].error or "")
    onnx = next(s for s in again.steps if s.step == "convert:onnx")
    assert not onnx.reused  # the damaged cache entry was noticed and made again
    assert again.reports["triton"].status is Status.PASSED
