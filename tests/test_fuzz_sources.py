"""Seeded fuzz of corrupted .pt2 archives: one line and exit 2 (or a model that is still intact),
never a traceback, never the payload run, nothing written."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import registry_files, run_cli
from tests.corrupt import KINDS, corruptions


def test_corrupted_archives_get_one_line_through_inspect(
    home: Path, tmp_path: Path, models: dict[str, Path]
) -> None:
    marker = tmp_path / "pwned"
    cases = corruptions(models["convnet"], marker, count=40, seed=0)
    original = run_cli(["inspect", str(models["convnet"]), "--json"], home)
    assert original.returncode == 0, original.stderr

    def inspect(case):  # type: ignore[no-untyped-def]
        path = tmp_path / f"{case.name}.pt2"
        path.write_bytes(case.data)
        return case, run_cli(["inspect", str(path), "--json"], home, timeout=300)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(inspect, cases))
    refused = 0
    for case, result in results:
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr, (case.name, result.stderr[-2000:])
        if result.returncode == 2:
            refused += 1
            assert len(lines) == 1 and lines[0].startswith("shipyard: error: "), (case.name, result.stderr)
            assert result.stdout == ""
        else:  # the damage missed everything the model needs (an optional entry, a weight's order)
            assert result.returncode == 0, (case.name, result.stderr)
            assert json.loads(result.stdout) == json.loads(original.stdout), case.name
    assert not marker.exists()
    assert refused >= 30, f"only {refused} of 40 corruptions were refused"


def test_corrupted_archives_get_one_line_through_package(
    home: Path, tmp_path: Path, models: dict[str, Path]
) -> None:
    marker = tmp_path / "pwned"
    cases = corruptions(models["convnet"], marker, count=len(KINDS), seed=1)
    for case in cases:
        if case.kind in ("reverse", "drop"):
            continue  # may leave a loadable model; covered by inspect above
        path = tmp_path / f"{case.name}.pt2"
        path.write_bytes(case.data)
        result = run_cli(["package", str(path), "--targets", "triton"], home, timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (case.name, result.stderr[-2000:])
        assert registry_files(home) == [] and not (home / "runs").exists(), case.name
    assert not marker.exists()
