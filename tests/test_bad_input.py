"""Bad input: one line on stderr, exit 2, no traceback, nothing written, no code executed."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, registry_files, run_cli
from tests.corrupt import RunsShell


def assert_refused(result: subprocess.CompletedProcess[str], home: Path, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shipyard: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == ""
    assert registry_files(home) == []
    assert not (home / "runs").exists()


def test_missing_file(home: Path, tmp_path: Path) -> None:
    assert_refused(run_cli(["package", str(tmp_path / "nope.pt2")], home), home, "no such file")


def test_random_bytes(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "noise.pt2"
    path.write_bytes(os.urandom(4096))
    assert_refused(run_cli(["package", str(path)], home), home, "not a recognized model")


def test_zip_of_junk(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "junk.pt2"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "not a model")
        zf.writestr("data/blob.bin", os.urandom(256))
    assert_refused(run_cli(["package", str(path)], home), home, "zip archive is not")


def test_truncated_archive(home: Path, tmp_path: Path, models: dict[str, Path]) -> None:
    data = models["convnet"].read_bytes()
    path = tmp_path / "truncated.pt2"
    path.write_bytes(data[: len(data) // 2])
    assert_refused(run_cli(["package", str(path)], home), home, "truncated.pt2")


def test_an_entry_flagged_encrypted_is_one_line(home: Path, tmp_path: Path, models: dict[str, Path]) -> None:
    """One flipped bit in the central directory (general-purpose flag bit 0: encrypted)."""
    data = bytearray(models["convnet"].read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the last entry's central directory header
    data[entry + 8] |= 0x01
    path = tmp_path / "encrypted.pt2"
    path.write_bytes(bytes(data))
    assert_refused(run_cli(["inspect", str(path)], home), home, "encrypted")


def test_raw_pickle_is_never_unpickled(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt2"
    path.write_bytes(pickle.dumps(RunsShell(f"touch {marker}")))
    assert_refused(run_cli(["package", str(path)], home), home, "pickle")
    assert not marker.exists()


def test_torch_save_checkpoint_is_refused(home: Path, tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt2"
    torch.save({"model": RunsShell(f"touch {marker}")}, path)
    assert_refused(run_cli(["package", str(path)], home), home, "torch.save")
    assert not marker.exists()


def _poison_sample_inputs(source: Path, dest: Path, marker: Path) -> None:
    """Copy a real .pt2, replacing its pickled sample inputs with a code-running payload."""
    import torch

    payload = tmp = dest.with_suffix(".payload")
    torch.save(RunsShell(f"touch {marker}"), payload)
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("sample_inputs/model.pt"):
                data = tmp.read_bytes()
            out.writestr(item, data)


def test_code_in_pt2_archive_does_not_run(home: Path, tmp_path: Path, models: dict[str, Path]) -> None:
    poisoned = tmp_path / "poisoned.pt2"
    marker = tmp_path / "pwned"
    _poison_sample_inputs(models["convnet"], poisoned, marker)

    # Control: torch's own loader does run this payload, so the test below means something.
    control_marker = tmp_path / "control"
    control = tmp_path / "control.pt2"
    _poison_sample_inputs(models["convnet"], control, control_marker)
    subprocess.run(
        [sys.executable, "-c", f"import torch; torch.export.load({str(control)!r})"],
        capture_output=True,
        timeout=300,
    )
    assert control_marker.exists(), "payload is inert; the test would prove nothing"

    assert_refused(run_cli(["package", str(poisoned)], home), home, "poisoned.pt2")
    assert not marker.exists()


def _huge_batch_program(path: Path) -> Path:
    """A program that claims to take a batch of up to 200,000 images of 3x224x224 (~120 GB)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=200_000)
    program = torch.export.export(
        torch.nn.Conv2d(3, 4, 1).eval(), (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, str(path))
    return path


def test_a_huge_declared_dim_is_validated_up_to_a_cap(home: Path, tmp_path: Path) -> None:
    source = _huge_batch_program(tmp_path / "huge.pt2")
    inspected = run_cli(["inspect", str(source), "--json"], home)
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    batch = json.loads(inspected.stdout)["dims"]["batch"]
    fits = (1 << 24) // (3 * 224 * 224)  # 111 images in one variant's 16.8 M input elements
    assert batch["max"] == fits and batch["declared_max"] == 200_000 and batch["source"] == "capped"
    packaged = run_cli(["package", str(source), "--targets", "triton", "--json"], home)
    assert packaged.returncode == 0, packaged.stderr[-2000:]
    triton = json.loads(packaged.stdout)["targets"]["triton"]
    assert triton["envelope"]["batch"] == {"min": 1, "max": fits}
    assert any("validated up to 111 of the declared 200000" in n for n in triton["notes"])


def test_samples_that_decompress_to_too_much_are_refused(
    home: Path, tmp_path: Path, models: dict[str, Path]
) -> None:
    import numpy as np

    bomb = tmp_path / "bomb.npz"  # about 100 KB on disk, 100 M elements once decompressed
    np.savez_compressed(bomb, image=np.zeros((20_000, 5_000), dtype=np.uint8))
    spec = tmp_path / "spec.yaml"
    spec.write_text("samples: bomb.npz\n")
    result = run_cli(["package", str(models["convnet"]), "--spec", str(spec)], home)
    assert_refused(result, home, "bomb.npz holds 100,000,000 elements")


def test_unknown_target(home: Path, models: dict[str, Path]) -> None:
    result = run_cli(["package", str(models["convnet"]), "--targets", "ort-web,coreml"], home)
    assert_refused(result, home, "unknown target 'coreml'", "ort-web")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("dims:\n  batch: {min: lots}\n", "dims.batch.min"),
        ("gatez: {}\n", "gatez"),
        ("targets:\n  ort-web:\n    gates: {max_abs_err: -1}\n", "targets.ort-web.gates.max_abs_err"),
        (
            "targets:\n  triton:\n    gates: {max_abs_err: null, max_rel_err: null, min_cosine: null}\n",
            "targets.triton.gates: keep at least one gate that tells a right answer from noise",
        ),
        (
            "targets:\n  triton:\n    gates: {min_cosine: -1, max_abs_err: null, max_rel_err: null}\n",
            "targets.triton.gates.min_cosine",
        ),
        (
            "targets:\n  ort-web:\n    gates: {min_cosine: 0.1, max_abs_err: 1.0e+30, max_rel_err: null}\n",
            "targets.ort-web.gates: keep at least one gate",
        ),
        ("targets:\n  tfjs:\n    gates: {max_rel_err: .inf}\n", "targets.tfjs.gates.max_rel_err"),
        ("targets:\n  aoti:\n    gates: {rel_eps: 1.0e+9}\n", "targets.aoti.gates.rel_eps"),
        (
            "targets:\n  aoti:\n    memory_mb: 100000000\n",
            "targets.aoti.memory_mb: 100,000,000 MB is above this service's limit",
        ),
        ("targets:\n  tfjs:\n    timeout_s: 864000\n", "targets.tfjs.timeout_s: 864,000 s is above"),
        ('name: "convnet\\n"\n', "name"),
        (
            "targets:\n  triton:\n    options: {max_queue_delay_us: soon}\n",
            "targets.triton.options.max_queue_delay_us",
        ),
        ("targets:\n  coreml: {}\n", "unknown target 'coreml'"),
        ("dims:\n  batch: {max: 64}\n", "dims.batch"),
        ("name: ../../etc\n", "name"),
        ("inputs:\n  nope: {name: x}\n", "inputs"),
        ("samples: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_spec_names_the_field(
    home: Path, tmp_path: Path, models: dict[str, Path], spec: str, field: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    result = run_cli(["package", str(models["convnet"]), "--spec", str(path)], home)
    assert_refused(result, home, field)


def test_model_name_with_path_tricks(home: Path, models: dict[str, Path]) -> None:
    result = run_cli(["package", str(models["convnet"]), "--name", "../escape"], home)
    assert_refused(result, home, "model name")


def test_cli_usage_error_exits_2(home: Path) -> None:
    result = run_cli(["package"], home)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_help_is_fast_and_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0
    for command in ("package", "pull", "ls", "show", "inspect", "targets"):
        assert command in result.stdout
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flows.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert "torch" not in {line.split("|")[-1].strip().split(".")[0] for line in probe.stderr.splitlines()}


def test_a_program_calling_an_operator_outside_the_allowlist_is_refused(home: Path, tmp_path: Path) -> None:
    """aten.from_file would read a file on the worker into the reference outputs (and from there
    into metrics and errors); the program is refused by name before anything runs it."""
    from tests.models import save_file_reading_program

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"NOT-FOR-UPLOADER")
    source = save_file_reading_program(tmp_path / "reads.pt2", secret)
    for command in (["inspect", str(source)], ["package", str(source), "--targets", "ort-web"]):
        result = run_cli(command, home)
        assert_refused(result, home, "calls operators this service does not run: aten.from_file.default")


def test_outputs_beyond_the_variant_budget_are_refused_before_they_are_written(
    home: Path, tmp_path: Path
) -> None:
    """A tiny program whose outputs expand a millionfold: the prepare step refuses them by size
    (8x what a variant's inputs may hold, SHIPYARD_MAX_OUTPUT_ELEMENTS) and writes no variant."""
    from tests.models import save_expander

    source = save_expander(tmp_path / "expands.pt2")
    result = run_cli(
        ["package", str(source), "--targets", "ort-web"],
        home,
        extra_env={"SHIPYARD_MAX_VARIANT_ELEMENTS": "200000"},
    )
    assert result.returncode == 2, result.stderr
    assert "outputs on variant" in result.stderr and "at most 1,600,000 are validated" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(home.rglob("*.reference.npz"))
