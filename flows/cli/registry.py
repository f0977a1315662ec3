"""`shipyard registry gc`: collect what no version references."""

from __future__ import annotations

import argparse

from flows.cli._common import EXIT_OK, Command, add_registry, existing_registry, print_json

__all__ = ["COMMANDS"]

GC_DESCRIPTION = (
    "Unreferenced blobs older than the grace period move to trash/; trash entries older than it are "
    "deleted for good unless a version references them again (then they are restored). Unreferenced "
    "uploaded sources (incoming/) and unfinished uploads older than the grace period are deleted."
)


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="registry_command", metavar="SUBCOMMAND", required=True)
    gc = sub.add_parser(
        "gc", help="collect blobs and uploaded sources no version references", description=GC_DESCRIPTION
    )
    gc.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        help="leave what is younger than this (a publish may be in progress); default 24",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be done")
    add_registry(gc)
    gc.add_argument("--json", action="store_true", help="print what was done as JSON")


def run_gc(args: argparse.Namespace) -> int:
    from datetime import timedelta

    report = existing_registry(args.registry).gc(timedelta(hours=args.grace_hours), dry_run=args.dry_run)
    if args.json:
        print_json(report.model_dump(mode="json"))
        return EXIT_OK
    would = "would " if args.dry_run else ""
    for item in report.trashed:
        print(f"{would}move {item.key} to the trash (unreferenced, {item.age_s // 3600}h old)")
    for item in report.deleted:
        print(f"{would}delete {item.key} (unreferenced, {item.age_s // 3600}h old)")
    for digest in report.restored:
        print(f"{would}restore blobs/sha256/{digest} from the trash (a version references it)")
    print(
        f"{would}trash {len(report.trashed)}, delete {len(report.deleted)}, "
        f"restore {len(report.restored)}; {report.partial_uploads} unfinished upload(s) removed"
    )
    return EXIT_OK


COMMANDS = [Command("registry", "registry maintenance (gc)", _configure, run_gc)]
