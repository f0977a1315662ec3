"""The command line as a user meets it: help, names, registries, --json everywhere, progress, runs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import registry_files, run_cli

ESC = "\x1b"


def _json(result) -> object:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def _one_line_error(result, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shipyard: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module", autouse=True)
def usual_umask() -> Iterator[None]:
    saved = os.umask(0o022)
    yield
    os.umask(saved)


@pytest.fixture(scope="module")
def packaged(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, usual_umask: None
) -> tuple[Path, Path]:
    """`ResNet.v2.pt2` (the conv net) packaged for triton, twice with different seeds: two versions."""
    home = tmp_path_factory.mktemp("cli-home")
    source = home.parent / "ResNet.v2.pt2"
    shutil.copy(models["convnet"], source)
    spec = home.parent / "seed.yaml"
    spec.write_text("seed: 1\n")
    for extra in ([], ["--spec", str(spec)]):
        result = run_cli(["package", str(source), "--targets", "triton", *extra], home)
        assert result.returncode == 0, result.stderr[-2000:]
    return home, source


def test_version_help_and_a_bare_command() -> None:
    from flows.cli._app import build_parser
    from shipyard import __version__

    version = run_cli(["--version"], Path("/nonexistent"))
    assert version.returncode == 0 and version.stdout.strip() == f"shipyard {__version__}"
    bare = run_cli([], Path("/nonexistent"))
    assert bare.returncode == 2 and "package" in bare.stdout and "Exit codes" in bare.stdout
    undocumented = []
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for arg in sub._actions:
                    if not arg.help and not isinstance(arg, argparse._SubParsersAction):
                        undocumented.append(f"{name} {arg.dest}")
    assert undocumented == []


def test_names_are_normalised_the_same_everywhere(packaged: tuple[Path, Path]) -> None:
    home, _ = packaged
    listing = _json(run_cli(["ls", "--json"], home))
    assert [m["model"] for m in listing] == ["resnet.v2"]  # the stem, lowercased, dots kept
    shown = _json(run_cli(["show", "ResNet.v2", "--json"], home))
    assert shown["model"] == "resnet.v2" and shown["version"] == 2 and shown["aliases"] == ["latest"]


def test_files_are_readable_as_the_umask_says(packaged: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = packaged
    blobs = list((home / "registry" / "blobs" / "sha256").iterdir())
    assert blobs and all(stat.S_IMODE(b.stat().st_mode) == 0o644 for b in blobs)
    out = tmp_path / "pulled"
    _json(run_cli(["pull", "resnet.v2", "--target", "triton", "-o", str(out), "--json"], home))
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files)


def test_pull_defaults_to_name_target_and_knows_the_targets(
    packaged: tuple[Path, Path], tmp_path: Path
) -> None:
    home, _ = packaged
    pulled = run_cli(["pull", "resnet.v2", "--target", "triton", "--json"], home, cwd=tmp_path)
    assert _json(pulled)["output"] == str(tmp_path / "resnet.v2-triton")
    assert (tmp_path / "resnet.v2-triton" / "resnet.v2" / "config.pbtxt").is_file()
    _one_line_error(run_cli(["pull", "resnet.v2", "--target", "bogus"], home), "unknown target 'bogus'")
    _one_line_error(run_cli(["pull", "resnet.v2", "--target", "aoti"], home), "was not packaged for 'aoti'")


def test_a_registry_that_is_not_there_is_exit_2(packaged: tuple[Path, Path], tmp_path: Path) -> None:
    home, source = packaged
    missing = f"file://{tmp_path}/doesnotexist"
    for args in (["ls"], ["show", "m"], ["pull", "m", "--target", "triton"], ["registry", "gc"]):
        _one_line_error(run_cli([*args, "--registry", missing], home), "no registry at")
    plain = tmp_path / "plain-registry"  # a plain path works, and package creates it
    made = run_cli(["package", str(source), "--targets", "triton", "--registry", str(plain)], home)
    assert made.returncode == 0, made.stderr[-2000:]
    assert [m["model"] for m in _json(run_cli(["ls", "--json", "--registry", str(plain)], home))] == [
        "resnet.v2"
    ]


def test_empty_targets_and_inspect_checks(models: dict[str, Path], home: Path, tmp_path: Path) -> None:
    _one_line_error(run_cli(["package", str(models["convnet"]), "--targets", ""], home), "--targets is empty")
    spec = tmp_path / "spec.yaml"
    for text, field in (
        ("targets:\n  bogus: {}\n", "unknown target 'bogus'"),
        ("targets:\n  aoti:\n    options: {nope: 1}\n", "targets.aoti.options.nope"),
        ("samples: missing.npz\n", "samples"),
    ):
        spec.write_text(text)
        _one_line_error(run_cli(["inspect", str(models["convnet"]), "--spec", str(spec)], home), field)
    assert not (home / "runs").exists()
    text = run_cli(["inspect", str(models["convnet"])], home)
    assert text.returncode == 0 and "image" in text.stdout and "batch" in text.stdout
    assert (
        json.loads(run_cli(["inspect", str(models["convnet"]), "--json"], home).stdout)["kind"]
        == "torch-export"
    )


def test_dry_run_plans_without_exporting(packaged: tuple[Path, Path]) -> None:
    home, source = packaged
    before = registry_files(home)
    plan = _json(
        run_cli(["package", str(source), "--targets", "triton,ort-web", "--dry-run", "--json"], home)
    )
    steps = {s["step"]: s["cached"] for s in plan["steps"]}
    assert steps["export:triton"] and steps["convert:onnx"]  # packaged before: the cache has them
    assert not steps["export:ort-web"] and not steps["validate:ort-web"]
    assert [v["name"] for v in plan["variants"]] == ["min", "typical", "max"]
    assert plan["signature"]["dims"]["batch"]["max"] == 16
    assert registry_files(home) == before  # nothing published


def test_progress_is_plain_when_piped(models: dict[str, Path], home: Path) -> None:
    args = ["package", str(models["multi_io"]), "--targets", "triton"]
    quiet_by_default = run_cli(args, home)
    assert quiet_by_default.returncode == 0 and quiet_by_default.stderr == ""
    verbose = run_cli([*args, "-v"], home)
    assert "validate:triton" in verbose.stderr and ESC not in verbose.stderr + verbose.stdout
    assert run_cli([*args, "-q"], home).stderr == ""


def test_a_failed_run_says_where_its_steps_are(models: dict[str, Path], home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("targets:\n  aoti: {timeout_s: 1}\n")
    failed = run_cli(["package", str(models["convnet"]), "--targets", "aoti", "--spec", str(spec)], home)
    assert failed.returncode == 1
    assert "work folder kept:" in failed.stderr and "export:aoti: sh " in failed.stderr
    (run,) = _json(run_cli(["runs", "--json"], home))
    assert run["model"] == "convnet" and run["failed"] == ["aoti"]
    assert [Path(r).relative_to(run["folder"]).as_posix() for r in run["reproduce"]] == [
        "steps/export-aoti/reproduce.sh"
    ]
    assert all(Path(r).is_file() for r in run["reproduce"])


def test_rm_is_refused_while_an_alias_points_at_the_version(
    packaged: tuple[Path, Path], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(packaged[0], home)
    _one_line_error(run_cli(["rm", "resnet.v2:2"], home), "@latest")
    promoted = _json(run_cli(["promote", "resnet.v2:1", "prod", "--json"], home))
    assert promoted["alias"] == "prod" and promoted["version"] == 1
    removed = _json(run_cli(["rm", "resnet.v2:2", "--force", "--json"], home))
    assert removed["aliases_removed"] == ["latest"] and removed["aliases"] == {"latest": 1, "prod": 1}
    versions = _json(run_cli(["ls", "resnet.v2", "--json"], home))
    assert [(v["version"], v["aliases"]) for v in versions] == [(1, ["latest", "prod"])]
    again = run_cli(["package", str(packaged[1]), "--targets", "ort-web"], home)
    assert again.returncode == 0 and "resnet.v2:3" in again.stdout  # numbers are never given twice


def test_json_on_every_command(packaged: tuple[Path, Path]) -> None:
    home, _ = packaged
    assert {"name", "summary", "consumes", "options", "gates"} <= set(
        _json(run_cli(["targets", "--json"], home))[0]
    )
    assert {"trashed", "deleted", "restored", "partial_uploads"} <= set(
        _json(run_cli(["registry", "gc", "--dry-run", "--json"], home))  # type: ignore[arg-type]
    )
    assert isinstance(_json(run_cli(["workers", "--json"], home)), list)
    assert isinstance(_json(run_cli(["runs", "--json"], home)), list)
    table = run_cli(["ls"], home)
    assert table.stdout.splitlines()[0].split() == ["MODEL", "VERSIONS", "ALIASES"]
    assert os.environ.get("SHIPYARD_RUNTIME_DIR")  # the suite's own warm servers answered `workers`
