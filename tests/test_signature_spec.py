"""Signatures read from torch.export programs, and what a spec may change in them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shipyard.errors import SpecError
from shipyard.prepare import apply_spec, check_source, read_signature
from shipyard.spec import Spec, parse_spec
from shipyard.torch_program import load_program, program_signature
from shipyard.variants import build_variants


def test_convnet_signature(models: dict[str, Path]) -> None:
    sig, _ = read_signature(models["convnet"], Spec())
    assert check_source(models["convnet"]).value == "torch-export"
    assert [(t.name, t.dtype, t.shape) for t in sig.inputs] == [("image", "float32", ["batch", 3, 32, 32])]
    assert [(t.name, t.shape) for t in sig.outputs] == [("output_0", ["batch", 10])]
    batch = sig.dims["batch"]
    assert (batch.min, batch.max, batch.source) == (1, 16, "program")
    assert batch.min <= batch.typical <= batch.max


def test_multi_io_shares_one_batch_dim(models: dict[str, Path]) -> None:
    sig, _ = read_signature(models["multi_io"], Spec())
    assert [t.shape for t in sig.inputs] == [["batch", 8], ["batch", 4]]
    assert [t.shape for t in sig.outputs] == [["batch", 4], ["batch", 2]]
    assert sig.batch_dim() is not None and sig.batch_dim().max == 8


def test_unbounded_dim_gets_default_max_and_says_so(tmp_path: Path) -> None:
    program = torch.export.export(
        torch.nn.Linear(4, 2), (torch.randn(3, 4),), dynamic_shapes=({0: torch.export.Dim("b")},)
    )
    path = tmp_path / "linear.pt2"
    torch.export.save(program, str(path))
    sig = program_signature(load_program(path))
    dim = sig.dims["batch"]
    assert (dim.min, dim.max, dim.source) == (1, 32, "default")
    widened = apply_spec(sig, parse_spec({"dims": {"batch": {"max": 256}}}))
    assert (widened.dims["batch"].max, widened.dims["batch"].source) == (256, "spec")


def test_spec_narrows_and_renames(models: dict[str, Path]) -> None:
    spec = parse_spec(
        {
            "inputs": {"image": {"name": "pixels"}},
            "outputs": {"output_0": {"name": "logits"}},
            "dims": {"batch": {"min": 2, "max": 8, "typical": 4}},
        }
    )
    sig, _ = read_signature(models["convnet"], spec)
    assert sig.input_names() == ["pixels"] and sig.output_names() == ["logits"]
    assert (sig.dims["batch"].min, sig.dims["batch"].typical, sig.dims["batch"].max) == (2, 4, 8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"dims": {"batch": {"max": 17}}}, "outside what the program accepts"),
        ({"dims": {"batch": {"min": 9, "max": 4}}}, "dims.batch"),
        ({"dims": {"batch": {"typical": 99}}}, "dims.batch.typical"),
        ({"dims": {"height": {"max": 4}}}, "no dynamic dim named 'height'"),
        ({"outputs": {"output_0": {"name": "bad name"}}}, "outputs.output_0.name"),
    ],
)
def test_spec_errors(models: dict[str, Path], data: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        read_signature(models["convnet"], parse_spec(data))


def test_variants_cover_min_typical_max_and_samples(models: dict[str, Path], tmp_path: Path) -> None:
    sig, _ = read_signature(models["convnet"], Spec())
    samples = tmp_path / "samples.npz"
    np.savez(samples, image=np.ones((5, 3, 32, 32), dtype=np.float32))
    spec = parse_spec({"samples": str(samples), "inputs": {"image": {"low": 0, "high": 1}}})
    variants = build_variants(sig, spec)
    assert [(v.name, v.dims["batch"]) for v, _ in variants] == [
        ("samples", 5),
        ("min", 1),
        ("typical", sig.dims["batch"].typical),
        ("max", 16),
    ]
    random_inputs = variants[1][1]["image"]
    assert random_inputs.min() >= 0 and random_inputs.max() < 1
    again = build_variants(sig, spec)
    assert np.array_equal(again[2][1]["image"], variants[2][1]["image"])  # seeded


def test_samples_with_wrong_shape_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    sig, _ = read_signature(models["convnet"], Spec())
    samples = tmp_path / "samples.npz"
    np.savez(samples, image=np.ones((64, 3, 32, 32), dtype=np.float32))
    with pytest.raises(SpecError, match="axis 0 has size 64"):
        build_variants(sig, parse_spec({"samples": str(samples)}))
    np.savez(samples, other=np.ones((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(SpecError, match="missing input"):
        build_variants(sig, parse_spec({"samples": str(samples)}))


def test_samples_that_are_not_an_npz_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    sig, _ = read_signature(models["convnet"], Spec())
    npy = tmp_path / "samples.npy"
    np.save(npy, np.ones((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(SpecError, match=r"one bare array; save an \.npz"):
        build_variants(sig, parse_spec({"samples": str(npy)}))
