"""The gate can fail: an artifact whose weights were tampered with is judged failed, not published."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows._packaging import publish_version
from registry import RunInfo, open_registry
from shipyard.report import Status
from targets.pipeline import Engine
from tests.conftest import register_variant, run_targets


def test_tampered_onnx_fails_gate_and_is_not_published(
    engine: Engine, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_variant(monkeypatch, "triton", "triton-tampered", export="tests.steps:tampered_triton")

    result = run_targets(engine, models["convnet"], ["triton", "triton-tampered"], tmp_path / "run")
    honest, report = result.reports["triton"], result.reports["triton-tampered"]
    assert honest.status is Status.PASSED, honest.error
    assert report.status is Status.FAILED
    assert "gate max_abs_err failed" in (report.error or "")
    failed_gate = next(g for g in report.gates if g.name == "max_abs_err")
    assert failed_gate.value is not None and failed_gate.limit is not None
    assert failed_gate.value > failed_gate.limit

    only_tampered = result.model_copy(update={"reports": {"triton-tampered": report}})
    registry_url = (tmp_path / "registry").as_uri()
    assert publish_version(only_tampered, registry_url, RunInfo(run_id="t", shipyard_version="0")) is None
    assert open_registry(registry_url).models() == []
