"""The gate can fail: an artifact whose weights were tampered with is judged failed, not published."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from registry import open_registry
from shipyard.prepare import prepare_run
from shipyard.report import Status
from shipyard.spec import Spec
from targets import get_target
from targets._package import export_target, judge_target, settings_for, target_dir


def _scale_largest_initializer(model_path: Path, factor: float) -> None:
    model = onnx.load_model(str(model_path))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(biggest) * factor
    biggest.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), biggest.name))
    onnx.save_model(model, str(model_path))


def test_tampered_onnx_fails_gate_and_is_not_published(models: dict[str, Path], tmp_path: Path) -> None:
    from flows.package import publish

    run = prepare_run(models["convnet"], Spec(), tmp_path / "run")
    target = get_target("triton")
    settings = settings_for(run, target)
    exported, error, _ = export_target(run, target, settings)
    assert exported is not None, error

    honest = judge_target(run, target, settings, exported)
    assert honest.status is Status.PASSED, honest.error

    onnx_file = target_dir(run, target) / "artifact" / "convnet/1/model.onnx"
    _scale_largest_initializer(onnx_file, 1.05)
    report = judge_target(run, target, settings, exported)
    assert report.status is Status.FAILED
    assert "gate max_abs_err failed" in report.error
    failed_gate = next(g for g in report.gates if g.name == "max_abs_err")
    assert failed_gate.value is not None and failed_gate.value > failed_gate.limit

    registry_url = (tmp_path / "registry").as_uri()
    version = publish.fn(run, {"triton": report}, {"torch": "x"}, registry_url, None)
    assert version is None
    assert open_registry(registry_url).models() == []
