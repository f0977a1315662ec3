"""Coverage: third-party architectures through all six targets, with the default gates. Not a test.

Every model of tests/zoo.py (built from `transformers` classes and common vision blocks, random
weights, no downloads) and the project's own encoder block is exported with its dynamic dims
and packaged by `shipyard package` for every target. Each cell of the table says how it ended:
`passed`, or `failed` with the step and the reason's first words (a gate with its value), or
`skipped` with the reason.

Usage: python bench/coverage.py [--models bert,vit,...] [--update] [--readme]
Writes bench/results/coverage.json and prints the table; --readme also puts it in README.md
between the coverage markers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _shipyard import (  # a sibling of this script (it makes the project importable)
    ROOT,
    PackageFailed,
    cell_text,
    default_targets,
    package_process,
    write_readme_section,
)

TARGETS = default_targets()


def _save(name: str, path: Path) -> Path:
    from tests import models, zoo

    if name == "encoder":  # the project's own transformer encoder block
        return models.save_encoder(path)
    return zoo.save(name, path)


def package(source: Path, home: Path) -> dict[str, Any]:
    try:
        return package_process(source, home, "-q")[0]
    except PackageFailed as exc:
        return {"error": str(exc)[-300:], "targets": {}}


def table(results: dict[str, dict[str, str]]) -> str:
    lines = ["| architecture | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
    for model, cells in results.items():
        lines.append(f"| {model} | " + " | ".join(cells.get(t, "-") for t in TARGETS) + " |")
    cells = [c for row in results.values() for c in row.values()]
    passed, narrowed = (
        sum(c.startswith("passed") for c in cells),
        sum(c.startswith("passed (") for c in cells),
    )
    lines.append(
        f"\n{passed} of {len(cells)} cells pass ({passed / len(cells):.0%}) with the default gates; "
        f"{passed - narrowed} of them serve every declared size, {narrowed} a fixed or narrower one."
    )
    return "\n".join(lines)


def main() -> None:
    from tests.zoo import ZOO

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join([*ZOO, "encoder"]))
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--render", action="store_true", help="only render the table of the last run again")
    parser.add_argument(
        "--update", action="store_true", help="keep the last run's rows for the models not named in --models"
    )
    args = parser.parse_args()
    if args.render:
        saved = json.loads((args.out / "coverage.json").read_text())["details"]
        _publish(
            table({m: {t: cell_text(r) for t, r in d["targets"].items()} for m, d in saved.items()}), args
        )
        return
    results: dict[str, dict[str, str]] = {}
    details: dict[str, Any] = {}
    if args.update:
        last = json.loads((args.out / "coverage.json").read_text())
        results, details = last["cells"], last["details"]
    with tempfile.TemporaryDirectory(prefix="shipyard-coverage-") as tmp:
        for name in args.models.split(","):
            start = time.perf_counter()
            report = package(_save(name, Path(tmp) / f"{name}.pt2"), Path(tmp) / "home")
            results[name] = {t: cell_text(r) for t, r in report["targets"].items()}
            details[name] = {
                "seconds": round(time.perf_counter() - start, 1),
                "error": report.get("error"),
                "targets": {
                    t: {"status": r["status"], "error": r["error"], "notes": r["notes"]}
                    for t, r in report["targets"].items()
                },
            }
            print(f"{name}: {results[name]}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coverage.json").write_text(json.dumps({"cells": results, "details": details}, indent=2))
    _publish(table(results), args)


def _publish(rendered: str, args: argparse.Namespace) -> None:
    print(rendered)
    if args.readme:
        write_readme_section("coverage", rendered)


if __name__ == "__main__":
    main()
