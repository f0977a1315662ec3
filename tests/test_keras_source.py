"""A Keras 3 model as the source: tfjs and litert-int4 through its SavedModel, ort-web and triton
through tf2onnx, the torch-only targets skipped with a reason; serialized code never runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.report import Status
from targets.pipeline import Engine, PipelineResult
from tests.conftest import run_cli, run_targets
from tests.models import save_keras_cnn, save_keras_lambda, save_keras_mlp, save_keras_sequential
from tests.test_bad_input import assert_refused

BUILT = {"litert-int4", "tfjs", "ort-web", "triton"}


@pytest.fixture(scope="module")
def cnn(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    folder = tmp_path_factory.mktemp("keras")
    spec = {"dims": {"batch": {"max": 8}}}
    return run_targets(engine, save_keras_cnn(folder / "cnn.keras"), [], folder / "run", spec)


def test_a_keras_cnn_builds_four_targets_and_skips_the_torch_ones(cnn: PipelineResult) -> None:
    states = {n: r.status for n, r in cnn.reports.items()}
    assert {n for n, s in states.items() if s is Status.PASSED} == BUILT, {
        n: r.error for n, r in cnn.reports.items()
    }
    for name in ("executorch", "aoti"):
        assert states[name] is Status.SKIPPED
        assert "no converter path from this keras source" in (cnn.reports[name].error or "")


def test_the_keras_interface_and_channels_last_layout_are_kept(cnn: PipelineResult) -> None:
    assert cnn.signature.inputs[0].name == "image"
    assert cnn.signature.inputs[0].shape == ["batch", 32, 32, 3]  # channels-last, as in Keras
    assert cnn.signature.outputs[0].name == "logits"
    batches = {v.dims["batch"] for v in cnn.reports["ort-web"].variants}
    assert min(batches) == 1 and max(batches) == 8
    for name in ("ort-web", "triton", "tfjs"):
        assert (cnn.reports[name].metrics.max_abs_err or 1.0) < 1e-4
    assert "erfc traced as 1 - erf (TF.js has no Erfc)" in cnn.reports["tfjs"].notes
    assert any("channels-last" in n for n in cnn.reports["tfjs"].notes)
    steps = {s.step for s in cnn.steps}
    assert {"convert:saved-model", "convert:saved-model[erfc_as_erf=True]", "convert:onnx"} <= steps


def test_a_keras_mlp_passes_the_onnx_and_web_targets(engine: Engine, tmp_path: Path) -> None:
    source = save_keras_mlp(tmp_path / "mlp.keras")
    result = run_targets(engine, source, ["ort-web", "tfjs", "litert-int4"], tmp_path / "run")
    failed = {n: r.error for n, r in result.reports.items() if r.status is not Status.PASSED}
    assert failed == {}
    assert result.signature.inputs[0].shape == ["batch", 24]


def test_a_keras_sequential_model_converts_through_tf2onnx(engine: Engine, tmp_path: Path) -> None:
    """tf2onnx's from_keras failed on a Sequential's own tensors (KeyError: 'keras_tensor_9')."""
    source = save_keras_sequential(tmp_path / "sequential.keras")
    result = run_targets(engine, source, ["ort-web", "triton"], tmp_path / "run")
    failed = {n: r.error for n, r in result.reports.items() if r.status is not Status.PASSED}
    assert failed == {}
    assert result.reports["ort-web"].metrics.top1_agreement == 1.0  # a 5-class softmax


def test_a_lambda_layer_is_refused_without_running_its_code(home: Path, tmp_path: Path) -> None:
    source = save_keras_lambda(tmp_path / "lambda.keras")
    marker = tmp_path / "the-lambda-ran"
    result = run_cli(["package", str(source)], home, extra_env={"LAMBDA_MARKER": str(marker)})
    assert_refused(result, home, "not a loadable Keras model", "Lambda")
    assert not marker.exists()
