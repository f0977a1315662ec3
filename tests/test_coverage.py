"""A fast subset of bench/coverage.py: library-built models through the targets they must pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.report import Status
from targets.pipeline import Engine, PipelineResult
from tests.conftest import run_targets
from tests.zoo import save


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zoo")
    return {name: save(name, folder / f"{name}.pt2") for name in ("bert", "gelu_mlp", "mobilenet_v3")}


@pytest.fixture(scope="module")
def bert(engine: Engine, zoo: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    """The BERT-style encoder (int64 ids and mask, dynamic batch and sequence) through all six."""
    return run_targets(engine, zoo["bert"], [], tmp_path_factory.mktemp("bert"))


def test_a_bert_style_encoder_passes_every_target(bert: PipelineResult) -> None:
    failed = {n: r.error for n, r in bert.reports.items() if r.status is not Status.PASSED}
    assert len(bert.reports) == 6 and failed == {}
    # the targets that keep the dynamic dims were validated across the sequence range, not one size
    seqs = {v.dims["input_ids_dim1"] for v in bert.reports["ort-web"].variants}
    assert min(seqs) == 2 and max(seqs) == 64 and len(seqs) >= 3


def test_token_ids_a_converter_narrowed_are_fed_as_the_artifact_declares(bert: PipelineResult) -> None:
    """litert-torch makes int64 token ids int32: fed as int32, and the report says so."""
    litert = bert.reports["litert-int4"]
    assert litert.interface == {"input_ids": "int32", "attention_mask": "int32"}
    assert any("input_ids is int32 in the artifact" in n for n in litert.notes)
    # litert-torch traces at the typical shape and this graph cannot be resized: the report says so
    assert {d: (r.min, r.max) for d, r in litert.envelope.items()} == {
        "batch": (3, 3),
        "input_ids_dim1": (11, 11),
    }
    assert any("fixed at the traced shape" in n for n in litert.notes)


def test_tfjs_falls_back_to_fixed_shapes_when_onnx2tf_cannot_keep_attention_dynamic(
    bert: PipelineResult,
) -> None:
    """onnx2tf cannot convert the dynamic attention mask: the inputs are fixed at the typical size,
    the mask's GatherND and bool casts rewritten, and the envelope and notes say so."""
    tfjs = bert.reports["tfjs"]
    assert {d: (r.min, r.max) for d, r in tfjs.envelope.items()} == {
        "batch": (3, 3),
        "input_ids_dim1": (11, 11),
    }
    fixed = next(n for n in tfjs.notes if n.startswith("inputs fixed at"))
    assert "'input_ids': [3, 11]" in fixed and "with dynamic dims, onnx2tf" in fixed
    assert any("cast(s) to bool written as x != 0" in n for n in tfjs.notes)
    # validated on both Node backends and in Chromium at the size it serves, within the fp32 gates
    assert {(v.runtime, v.dims["batch"], v.dims["input_ids_dim1"]) for v in tfjs.variants} == {
        ("tfjs cpu", 3, 11),
        ("tfjs wasm", 3, 11),
        ("Chromium tfjs webgl (float32 textures: true)", 3, 11),
        ("Chromium tfjs wasm", 3, 11),
    }


@pytest.mark.parametrize("model", ["gelu_mlp", "mobilenet_v3"])
def test_library_style_models_pass_every_target(
    engine: Engine, zoo: dict[str, Path], tmp_path: Path, model: str
) -> None:
    """An exact-GELU MLP; a MobileNetV3-like net (depthwise and grouped convs, hard-swish, SE)."""
    result = run_targets(engine, zoo[model], [], tmp_path)
    failed = {n: r.error for n, r in result.reports.items() if r.status is not Status.PASSED}
    assert len(result.reports) == 6 and failed == {}
    if model == "mobilenet_v3":  # TF.js has no grouped conv2d: the ONNX graph was rewritten, exactly
        assert any("grouped conv(s) split" in n for n in result.reports["tfjs"].notes)


def test_runtime_errors_lead_with_the_reason_not_a_banner() -> None:
    from targets._node import harness_failure

    banner = (  # what @tensorflow/tfjs 4.22 prints in Node before anything else
        "============================\n"
        "Hi, looks like you are running TensorFlow.js in Node.js. To speed things up dramatically, "
        "install our node backend, visit https://github.com/tensorflow/tfjs-node for more details. \n"
        "============================\n"
    )
    reason = "Error in conv2d: depth of input (16) must match input depth for filter 4."
    assert harness_failure(banner + reason + "\n    at conv2d_ (file.js:1:2)\n").startswith(reason)
