"""Planning: which steps a request needs, which are shared, and what limits they get."""

from __future__ import annotations

import pytest

from shipyard.source import SourceKind
from shipyard.spec import parse_spec
from targets import default_targets, get_target
from targets.engine.graph import plan_steps


def _plan(targets: list[str], spec: dict | None = None):  # type: ignore[no-untyped-def]
    return plan_steps(SourceKind.TORCH_EXPORT, parse_spec(spec), [get_target(t) for t in targets])


def test_all_six_targets_share_their_conversions() -> None:
    steps = _plan([t.name for t in default_targets()]).steps
    assert sorted(s for s in steps if s.startswith("convert:")) == [
        "convert:onnx",
        "convert:saved-model",
        "convert:tflite-fp32",
    ]
    assert sorted(steps["convert:onnx"].targets) == ["ort-web", "tfjs", "triton"]
    assert steps["validate:litert-int4"].baseline_step == "convert:tflite-fp32"
    assert steps["export:aoti"].needs == []  # compiles the saved program: starts before prepare ends
    assert steps["reference:aoti"].recipe.toolchain == ("torch",)  # it runs the source program


def test_options_of_a_chain_name_every_step_built_on_them() -> None:
    steps = _plan(["tfjs", "ort-web"], {"targets": {"tfjs": {"options": {"opset": 17}}}}).steps
    assert {"convert:onnx", "convert:onnx[opset=17]", "convert:saved-model[opset=17]"} <= set(steps)
    assert steps["convert:saved-model[opset=17]"].needs == ["prepare", "convert:onnx[opset=17]"]


def test_every_step_is_capped_and_a_shared_step_takes_the_largest_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHIPYARD_STEP_MEMORY_MB", "5000")  # the default when the spec says nothing
    one = _plan(["tfjs", "ort-web"], {"targets": {"tfjs": {"memory_mb": 4000}}}).steps
    assert one["convert:onnx"].memory_mb == 5000  # ort-web's default is larger than tfjs's 4000
    assert one["export:tfjs"].memory_mb == 4000 and one["export:ort-web"].memory_mb == 5000
    assert all(step.memory_mb for step in one.values())
    both = {"targets": {"tfjs": {"memory_mb": 4000}, "ort-web": {"memory_mb": 6000, "timeout_s": 2000}}}
    steps = _plan(["tfjs", "ort-web"], both).steps
    assert steps["convert:onnx"].memory_mb == 6000 and steps["convert:onnx"].timeout_s == 2000


def test_steps_after_a_failed_step_are_skipped_not_run() -> None:
    """An export fails: its reference step is skipped, and so is the validation that needs both."""
    from shipyard.report import StepStatus
    from targets.engine.scheduler import StepOutcome, run_plan

    plan = _plan(["aoti"], {})
    ran: list[str] = []

    def execute(step, inputs):  # type: ignore[no-untyped-def]
        ran.append(step.id)
        status = StepStatus.FAILED if step.id == "export:aoti" else StepStatus.PASSED
        return StepOutcome(step=step, status=status, seconds=0.0, error="it broke")

    outcomes = run_plan(plan, execute, max_parallel=2)
    assert sorted(ran) == ["export:aoti", "prepare"]
    assert outcomes["reference:aoti"].status is StepStatus.SKIPPED
    assert outcomes["validate:aoti"].status is StepStatus.SKIPPED
    assert "export:aoti failed: it broke" in (outcomes["validate:aoti"].error or "")


def test_a_targets_warm_modules_reach_its_familys_server_from_the_catalog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new target declares what its export and validation import; the warm servers preload it
    without an edit to the engine, each in its own family's server."""
    import dataclasses

    from shipyard.source import ModelClass
    from targets import _catalog
    from targets.engine.family import Family
    from targets.engine.forkserver import preload

    ort_web = get_target("ort-web")
    build = ort_web.build()
    assert build is not None
    build = dataclasses.replace(
        build,
        export=dataclasses.replace(build.export, family=Family.TF, warm=("json.decoder",)),
        validate=dataclasses.replace(build.validate, family=Family.TORCH, warm=("csv",)),
    )
    new = dataclasses.replace(ort_web, name="ort-web-new", builds={ModelClass.FIXED_SHAPE: build})
    assert "json.decoder" not in preload("tf")
    monkeypatch.setitem(_catalog._TARGETS, new.name, new)
    assert "json.decoder" in preload("tf") and "json.decoder" not in preload("torch")
    assert "csv" in preload("torch") and "csv" not in preload("tf")
    assert preload("torch")[:3] == ["numpy", "pydantic", "targets"]
