"""`shipyard runs`: the work folders kept by failed runs (and --keep-workdir), newest first."""

from __future__ import annotations

import argparse
import time
from typing import Any

from flows.cli._common import EXIT_OK, Command, print_json, print_table

__all__ = ["COMMANDS"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")


def _kept_runs() -> list[dict[str, Any]]:
    from flows._packaging import RUN_REPORT, runs_home
    from shipyard.report import RunReport

    rows = []
    folders = [p for p in runs_home().glob("*") if p.is_dir()] if runs_home().is_dir() else []
    for folder in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True):
        row: dict[str, Any] = {
            "run_id": folder.name,
            "folder": str(folder),
            "age_h": round((time.time() - folder.stat().st_mtime) / 3600, 1),
            "model": None,
            "version": None,
            "failed": [],
            "reproduce": [],
        }
        try:
            report = RunReport.model_validate_json((folder / RUN_REPORT).read_text())
        except (OSError, ValueError):  # a run that was interrupted: only its steps are there
            report = None
        if report is not None:
            row["model"], row["version"] = report.model, report.version
            row["failed"] = [n for n, t in report.targets.items() if t.status.value != "passed"]
            row["reproduce"] = [
                str(folder / s.folder / "reproduce.sh")
                for s in report.steps
                if s.status.value == "failed" and s.folder
            ]
        rows.append(row)
    return rows


def run_runs(args: argparse.Namespace) -> int:
    rows = _kept_runs()
    if args.json:
        print_json(rows)
        return EXIT_OK
    shown = [
        {**r, "model": r["model"] or "?", "version": r["version"] or "-", "failed": ",".join(r["failed"])}
        for r in rows
    ]
    print_table(shown, ["run_id", "age_h", "model", "version", "failed", "folder"], empty="no kept runs")
    return EXIT_OK


COMMANDS = [
    Command(
        "runs",
        "list the work folders kept by failed runs, with each failed step's reproduce.sh in --json",
        _configure,
        run_runs,
        description="Failed runs keep their work folder ($SHIPYARD_HOME/runs/<id>: every step's job, "
        "log and reproduce.sh) for $SHIPYARD_KEEP_RUNS_DAYS days (default 14).",
    )
]
