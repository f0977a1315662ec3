"""Adding a target is one module (CONTRIBUTING.md): registered from a test-only module, with a
float32 and an int8 rung, it packages a model, warm, with no edit anywhere else."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from shipyard.precision import Precision
from shipyard.report import Status
from targets import _catalog, get_target, precision_ladder
from targets.engine.forkserver import preload
from targets.pipeline import Engine
from tests.conftest import run_targets


@pytest.fixture
def throwaway(monkeypatch: pytest.MonkeyPatch) -> None:
    """Import tests.throwaway_target (it registers itself) into a catalog that ends with the test."""
    monkeypatch.setattr(_catalog, "_TARGETS", dict(_catalog._TARGETS))
    monkeypatch.delitem(sys.modules, "tests.throwaway_target", raising=False)
    importlib.import_module("tests.throwaway_target")


def test_a_target_from_one_module_is_in_the_catalog_with_its_rung(throwaway: None) -> None:
    ladder = precision_ladder(get_target("throwaway"))
    assert [(t.name, t.precision) for t in ladder] == [
        ("throwaway", Precision.FP32),
        ("throwaway-int8", Precision.INT8),
    ]
    int8 = get_target("throwaway-int8")
    assert int8.ladder == "throwaway" and not int8.in_default_set
    build = int8.build()
    assert build is not None and "onnxruntime.quantization" in build.export.warm  # the rung's own
    assert "tests.throwaway_warm" in preload("torch")  # its family's server preloads it, derived


def test_a_target_from_one_module_packages_a_model_warm(
    throwaway: None, engine: Engine, models: dict[str, Path], tmp_path: Path
) -> None:
    result = run_targets(engine, models["multi_io"], ["throwaway", "throwaway-int8"], tmp_path)
    fp32, int8 = result.reports["throwaway"], result.reports["throwaway-int8"]
    for report in (fp32, int8):
        assert report.status is Status.PASSED, report.error
        facts = report.metrics.model_dump()
        assert facts["forked_warm"] == 1 and facts["validated_warm"] == 1  # both steps forked warm
    assert (fp32.precision, int8.precision) == (Precision.FP32, Precision.INT8)
    assert fp32.metrics.max_abs_err is not None and fp32.metrics.max_abs_err < 1e-5
    assert {g.name for g in int8.gates} >= {"min_cosine", "max_rel_l2_err"}  # held to the rung's gates
    size = {name: sum(f.bytes for f in report.files) for name, report in result.reports.items()}
    assert size["throwaway-int8"] < size["throwaway"]  # the rung built its own artifact
    assert any(s.step == "convert:onnx" for s in result.steps)  # the shared conversion fed it
