"""Quantization that proves itself: the int4 search, and every target's precision ladder."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporters.int4_search import Candidate, Int4Recipe, Layer, LayerPrecision, Measured, _Search
from exporters.tflite2int4 import WeightStats
from shipyard.errors import SpecError
from shipyard.gates import Gates
from shipyard.precision import Precision
from shipyard.report import Status, TargetReport
from targets.pipeline import Engine, PipelineResult, check_request
from tests.conftest import run_targets
from tests.models import save_mlp
from tests.zoo import save


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save("mobilenet_v2", tmp_path_factory.mktemp("mobilenet") / "mobilenet_v2.pt2")


def _litert(engine: Engine, source: Path, workdir: Path, **options: object) -> TargetReport:
    spec = {"targets": {"litert-int4": {"options": options}}} if options else None
    return run_targets(engine, source, ["litert-int4"], workdir, spec).reports["litert-int4"]


@pytest.fixture(scope="module")
def searched(engine: Engine, mobilenet: Path, tmp_path_factory: pytest.TempPathFactory) -> TargetReport:
    return _litert(engine, mobilenet, tmp_path_factory.mktemp("searched"))


def test_the_default_int4_recipe_misses_the_gate_on_a_mobilenet(
    engine: Engine, mobilenet: Path, tmp_path: Path
) -> None:
    """Fixing the recipe turns the search off: per-channel int4 everywhere fails min_cosine."""
    report = _litert(engine, mobilenet, tmp_path, recipe="dynamic_wi4_afp32")
    assert report.status is Status.FAILED
    assert report.error is not None and "gate min_cosine failed" in report.error
    assert report.metrics.cosine is not None and report.metrics.cosine < 0.98
    assert any("fixed by the spec (no search)" in n for n in report.notes)


def test_the_int4_search_finds_a_passing_mobilenet_and_names_the_layers_it_kept(
    searched: TargetReport,
) -> None:
    assert searched.status is Status.PASSED, searched.error
    assert searched.precision is Precision.INT4
    assert searched.metrics.cosine is not None and searched.metrics.cosine >= 0.98
    extra = searched.metrics.model_dump()
    assert 0 < extra["int4_weight_share"] < 1 and extra["int8_weight_share"] > 0
    assert extra["size_vs_fp32"] < 0.5  # int4 and int8 layers together, still far below float
    kept = [n for n in searched.notes if " kept at int8: alone in int4 it gives cosine " in n]
    assert kept and all(n.startswith("CONV_2D #") for n in kept)
    found = next(n for n in searched.notes if n.startswith("int4 recipe found by search:"))
    assert f"{len(kept)} layer(s) kept higher" in found
    missed = next(n for n in searched.notes if n.startswith("per-channel int4 everywhere missed"))
    assert "cosine 0.9" in missed  # the first candidate's numbers
    assert any("generated inputs" in n and "weak proxy" in n for n in searched.notes)
    assert {f.path for f in searched.files} == {"model_int4.tflite", "int4_recipe.json"}


def test_a_minimum_int4_share_the_search_cannot_reach_fails_closed_with_the_numbers(
    engine: Engine, mobilenet: Path, tmp_path: Path
) -> None:
    report = _litert(engine, mobilenet, tmp_path / "search", min_int4_share=0.9)
    assert report.status is Status.FAILED and report.files == []
    assert report.error is not None and "none passes the gates with the search margin" in report.error
    assert "with an int4 share >= 90%" in report.error
    # per-channel everywhere holds the most int4 any candidate can: nothing else was worth trying
    assert (
        "after 1 candidates" in report.error and "the best was int4 per-channel: cosine 0.9" in report.error
    )


def test_a_fixed_recipe_below_the_minimum_int4_share_fails_closed(
    engine: Engine, mobilenet: Path, tmp_path: Path
) -> None:
    report = _litert(engine, mobilenet, tmp_path, recipe="dynamic_wi4_afp32", min_int4_share=0.9)
    assert report.status is Status.FAILED and report.files == []
    assert report.error is not None and "below the spec's min_int4_share 90.0%" in report.error
    assert "int4 holds 6" in report.error  # the share it did reach


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_mlp(tmp_path_factory.mktemp("mlp") / "mlp.pt2")


LADDER = ["executorch", "executorch-int8", "ort-web", "ort-web-int8", "triton", "triton-int8"]


@pytest.fixture(scope="module")
def convnet_ladder(
    engine: Engine, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> PipelineResult:
    targets = [*LADDER, "tfjs", "tfjs-fp16", "ort-web-fp16"]
    return run_targets(engine, models["convnet"], targets, tmp_path_factory.mktemp("convnet-ladder"))


@pytest.fixture(scope="module")
def mlp_ladder(engine: Engine, mlp: Path, tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    return run_targets(engine, mlp, LADDER, tmp_path_factory.mktemp("mlp-ladder"))


@pytest.mark.parametrize("model", ["convnet_ladder", "mlp_ladder"])
@pytest.mark.parametrize("family", ["executorch", "ort-web", "triton"])
def test_int8_rungs_pass_their_gates_and_are_smaller_than_fp32(
    model: str, family: str, request: pytest.FixtureRequest
) -> None:
    result: PipelineResult = request.getfixturevalue(model)
    fp32, int8 = result.reports[family], result.reports[f"{family}-int8"]
    assert fp32.status is Status.PASSED and int8.status is Status.PASSED, (fp32.error, int8.error)
    assert (fp32.precision, int8.precision) == (Precision.FP32, Precision.INT8)
    assert int8.metrics.artifact_bytes is not None and fp32.metrics.artifact_bytes is not None
    assert int8.metrics.artifact_bytes < 0.6 * fp32.metrics.artifact_bytes
    # the int8 artifact really differs from float, and its gates are the int8 ones
    assert int8.metrics.cosine is not None and 0.99 <= int8.metrics.cosine < 1 - 1e-9
    assert {g.name for g in int8.gates} >= {"min_cosine", "max_rel_l2_err"}
    assert any("calibrated on" in n and "generated inputs" in n for n in int8.notes)


def test_tfjs_fp16_weights_halve_the_shard_bytes(convnet_ladder: PipelineResult) -> None:
    fp32, fp16 = convnet_ladder.reports["tfjs"], convnet_ladder.reports["tfjs-fp16"]
    assert fp32.status is Status.PASSED and fp16.status is Status.PASSED, (fp32.error, fp16.error)

    def shards(report: TargetReport) -> int:
        return sum(f.bytes for f in report.files if f.path.endswith(".bin"))

    assert shards(fp16) == pytest.approx(shards(fp32) / 2, rel=0.01)
    assert fp16.metrics.model_dump()["size_vs_fp32"] == pytest.approx(0.5, abs=0.005)


def test_ort_web_fp16_runs_in_the_browser_runtime_and_is_smaller(convnet_ladder: PipelineResult) -> None:
    fp32, fp16 = convnet_ladder.reports["ort-web"], convnet_ladder.reports["ort-web-fp16"]
    assert fp16.status is Status.PASSED, fp16.error
    assert fp16.metrics.artifact_bytes is not None and fp32.metrics.artifact_bytes is not None
    assert fp16.metrics.artifact_bytes < 0.7 * fp32.metrics.artifact_bytes


def test_a_spec_climbs_a_ladder_and_says_which_rungs_a_target_lacks(models: dict[str, Path]) -> None:
    spec = {"targets": {"executorch": {"precisions": ["fp32", "int8"]}, "aoti": {"precisions": ["fp16"]}}}
    request = check_request(models["convnet"], spec, ["executorch", "aoti"])
    assert request.targets == ["executorch", "executorch-int8"]
    assert "aoti-fp16" in request.skipped and "half" in request.skipped["aoti-fp16"]
    assert request.asked_targets() == ["executorch", "aoti"]  # a flow run climbs the same way again


def test_the_default_target_set_leaves_ladder_rungs_out(models: dict[str, Path]) -> None:
    request = check_request(models["convnet"], None, None)
    assert sorted(request.targets) == ["aoti", "executorch", "litert-int4", "ort-web", "tfjs", "triton"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"executorch-int8": {"precisions": ["int8"]}}, "is a rung of executorch's ladder"),
        ({"litert-int4": {"precisions": ["int8"]}}, "int8 not on litert-int4's ladder (int4)"),
        ({"tfjs": {"precisions": ["int3"]}}, "precisions.0: Input should be"),
    ],
)
def test_precisions_a_ladder_cannot_take_are_spec_errors(
    models: dict[str, Path], settings: dict, message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_request(models["convnet"], {"targets": settings}, None)


class _Scripted(_Search):
    """The search's bookkeeping with a scripted outcome per number of kept layers, to check
    that it keeps as few as pass (the real quantizer runs in the tests above)."""

    def __init__(self, passes_from: int, share_per_kept: float = 0.05) -> None:
        super().__init__(
            Path("-"),
            Path("-"),
            lambda _: Measured(cosine=1, rel_l2_err=0, max_abs_err=0, max_rel_err=0),
            Gates(min_cosine=0.98),
            0.5,
            100,
            [],
            [],
        )
        self.passes_from, self.share_per_kept, self.calls = passes_from, share_per_kept, []

    def evaluate(self, recipe: Int4Recipe) -> Candidate | None:
        k = len(recipe.kept)
        self.calls.append(k)
        int4 = round(100 * (1 - self.share_per_kept * k))
        stats = WeightStats(int4_tensors=1, int4_bytes=int4, weight_bytes=100, float_tensors=0, float_bytes=0)
        measured = Measured(
            cosine=0.99 if k >= self.passes_from else 0.9, rel_l2_err=0, max_abs_err=0, max_rel_err=0
        )
        passed = k >= self.passes_from and stats.int4_share >= self.min_int4_share
        return Candidate(recipe=recipe, file="-", stats=stats, bytes=int4, measured=measured, passed=passed)


def _ranked(n: int) -> list[tuple[Layer, float]]:
    return [
        (Layer(index=i, op="CONV_2D", scope=f"s{i}", name=f"l{i}", weight_bytes=4), 0.9) for i in range(n)
    ]


@pytest.mark.parametrize(
    ("passes_from", "calls", "kept"),
    [
        (1, [1], 1),
        (5, [1, 2, 4, 8, 6, 5], 5),
        (9, [1, 2, 4, 8, 9], 9),  # capped at all but one layer
        (10, [1, 2, 4, 8, 9], None),  # passing would need every layer kept: no int4 left
    ],
)
def test_the_search_keeps_as_few_layers_as_pass(passes_from: int, calls: list[int], kept: int | None) -> None:
    search = _Scripted(passes_from, share_per_kept=0.01)
    found = search.fewest_kept(_ranked(10), LayerPrecision.INT8)
    assert search.calls == calls
    assert (len(found.recipe.kept) if found else None) == kept


def test_the_search_stops_keeping_layers_once_the_int4_share_is_below_the_minimum() -> None:
    search = _Scripted(passes_from=8, share_per_kept=0.1)  # 4 kept: share 60%; 8 kept: 20% < 50%
    assert search.fewest_kept(_ranked(10), LayerPrecision.INT8) is None
    assert search.calls == [1, 2, 4, 8]


def test_samples_of_batch_one_calibrate_the_int8_rungs(
    engine: Engine, models: dict[str, Path], tmp_path: Path
) -> None:
    """The spec's samples are the calibration data (the report says they are validation inputs
    too); a batch of one must not pin the re-exported program's dynamic batch."""
    import numpy as np

    samples = tmp_path / "samples.npz"
    np.savez(samples, image=np.random.default_rng(3).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32))
    spec = {"samples": str(samples), "inputs": {"image": {"low": 0.0, "high": 1.0}}}  # validated alike
    result = run_targets(
        engine, models["convnet"], ["executorch-int8", "ort-web-int8"], tmp_path / "run", spec
    )
    for name in ("executorch-int8", "ort-web-int8"):
        report = result.reports[name]
        assert report.status is Status.PASSED, report.error
        assert any(
            "calibrated on the spec's samples, which are also validation inputs" in n for n in report.notes
        )
        assert {v.dims["batch"] for v in report.variants} >= {1, 4}
