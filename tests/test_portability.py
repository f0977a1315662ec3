"""Portability gates: a TF.js graph the web backends cannot run, a package with code beyond its ISA."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from targets._isa import audit_package
from targets._jobs import RuntimeJob, VariantInputs
from targets.pipeline import Engine, PipelineResult
from targets.tfjs import run_artifact
from tests.conftest import run_targets


@pytest.fixture(scope="module")
def tfjs_multi_io(
    engine: Engine, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> PipelineResult:
    return run_targets(engine, models["multi_io"], ["tfjs"], tmp_path_factory.mktemp("tfjs"))


def _edited_copy(result: PipelineResult, folder: Path, edit) -> RuntimeJob:  # type: ignore[no-untyped-def]
    """A copy of the tfjs artifact with model.json edited, and a job that validates it."""
    artifact = folder / "artifact"
    shutil.copytree(result.artifact_dirs["tfjs"], artifact)
    doc = json.loads((artifact / "model.json").read_text())
    edit(doc["modelTopology"]["node"])
    (artifact / "model.json").write_text(json.dumps(doc))
    rng = np.random.default_rng(0)
    inputs = folder / "inputs.npz"
    np.savez(
        inputs,
        features=rng.standard_normal((2, 8), dtype=np.float32),
        extra=rng.standard_normal((2, 4), dtype=np.float32),
    )
    for name in ("out", "work"):
        (folder / name).mkdir()
    return RuntimeJob(
        step="validate:tfjs",
        model_name="multi_io",
        artifact_dir=str(artifact),
        files=[f.path for f in result.reports["tfjs"].files],
        signature=result.signature,
        variants=[VariantInputs(name="typical", dims={"batch": 2}, inputs=str(inputs))],
        out_dir=str(folder / "out"),
        work_dir=str(folder / "work"),
        repeats=1,
    )


def _fused(nodes: list[dict]) -> dict:
    return next(n for n in nodes if n["op"] == "_FusedMatMul")


def test_gate_passes_the_real_artifact(tfjs_multi_io: PipelineResult, tmp_path: Path) -> None:
    job = _edited_copy(tfjs_multi_io, tmp_path, lambda nodes: None)
    (check,) = run_artifact(job).checks
    assert check.name == "portability" and check.passed, check.detail


def test_gate_names_a_fused_activation_the_backends_lack(
    tfjs_multi_io: PipelineResult, tmp_path: Path
) -> None:
    """What TensorFlow's oneDNN rewrites made on AVX-512 hosts: MatMul + BiasAdd + Tanh in one node."""

    def fuse_tanh(nodes: list[dict]) -> None:
        _fused(nodes)["attr"]["fused_ops"] = {
            "list": {"s": [base64.b64encode(op).decode() for op in (b"BiasAdd", b"Tanh")]}
        }

    result = run_artifact(_edited_copy(tfjs_multi_io, tmp_path, fuse_tanh))
    (check,) = result.checks
    assert not check.passed
    assert "fuses activation tanh, which backend(s) cpu, wasm, webgl do not implement" in check.detail
    assert result.runs == []  # nothing is run once the gate has failed


def test_gate_names_an_op_the_converter_runtime_lacks(tfjs_multi_io: PipelineResult, tmp_path: Path) -> None:
    def unknown_op(nodes: list[dict]) -> None:
        _fused(nodes)["op"] = "FancyNewOp"

    (check,) = run_artifact(_edited_copy(tfjs_multi_io, tmp_path, unknown_op)).checks
    assert not check.passed and "op FancyNewOp" in check.detail and "not supported" in check.detail


def _shared_library(tmp_path: Path, flags: list[str], body: str) -> Path:
    source = tmp_path / "kernel.c"
    source.write_text(f"#include <immintrin.h>\n{body}\n")
    library = tmp_path / f"kernel{len(flags)}.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", *flags, str(source), "-o", str(library)], check=True)
    package = tmp_path / f"package{len(flags)}.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.write(library, "model/data/aotinductor/model/kernel.so")
    return package


def test_isa_audit_finds_instructions_beyond_the_level(tmp_path: Path) -> None:
    add = (
        "void add(float* a, const float* b) "
        "{{ _mm{w}_storeu_ps(a, _mm{w}_add_ps(_mm{w}_loadu_ps(a), _mm{w}_loadu_ps(b))); }}"
    )
    avx512 = _shared_library(tmp_path, ["-mavx512f"], add.format(w=512))
    avx2 = _shared_library(tmp_path, ["-mavx2", "-mfma", "-mf16c"], add.format(w=256))
    too_wide = audit_package(avx512)
    assert "AVX512F" in too_wide.beyond("x86-64-v3")
    assert "zmm" in too_wide.examples["AVX512F"]
    fits = audit_package(avx2)
    assert fits.beyond("x86-64-v3") == [] and "AVX" in fits.features
    assert "AVX" in fits.beyond("x86-64-v2")
