"""Published models: `ls`, `show`, `pull`, `promote`, `rm`."""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.cli._common import EXIT_OK, Command, add_registry, existing_registry, print_json, print_table

__all__ = ["COMMANDS"]

REF_HELP = "NAME, NAME:VERSION or NAME@ALIAS (default alias: latest)"


def _aliases_by_version(aliases: dict[str, int]) -> dict[int, list[str]]:
    by_version: dict[int, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(version, []).append(alias)
    return by_version


# ls ------------------------------------------------------------------------------------------
def _configure_ls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="a model: list its versions (default: list the models)")
    add_registry(parser)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def run_ls(args: argparse.Namespace) -> int:
    from shipyard.errors import NotFound
    from shipyard.spec import normalize_model_name

    registry = existing_registry(args.registry)
    if not args.name:
        rows = [
            {"model": m, "versions": len(registry.versions(m)), "aliases": registry.aliases(m)}
            for m in registry.models()
        ]
        if args.json:
            print_json(rows)
            return EXIT_OK
        shown = [
            {**r, "aliases": " ".join(f"@{a}={v}" for a, v in sorted(r["aliases"].items()))} for r in rows
        ]
        print_table(shown, ["model", "versions", "aliases"], empty=f"no models in {registry.url}")
        return EXIT_OK
    name = normalize_model_name(args.name)
    versions = registry.versions(name)
    if not versions:
        raise NotFound(f"no model named {name!r} in {registry.url}")
    aliases = _aliases_by_version(registry.aliases(name))
    rows = []
    for version in versions:
        manifest = registry.manifest(name, version)
        rows.append(
            {
                "version": version,
                "created_at": manifest.created_at,
                "source_sha256": manifest.source.sha256,
                "aliases": aliases.get(version, []),
                "targets": {n: t.status.value for n, t in manifest.targets.items()},
            }
        )
    if args.json:
        print_json(rows)
        return EXIT_OK
    shown = [
        {
            **r,
            "source_sha256": r["source_sha256"][:12],
            "aliases": " ".join("@" + a for a in r["aliases"]),
            "targets": " ".join(f"{n}:{s}" for n, s in r["targets"].items()),
        }
        for r in rows
    ]
    print_table(shown, ["version", "created_at", "source_sha256", "aliases", "targets"])
    return EXIT_OK


# show ----------------------------------------------------------------------------------------
def _configure_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help=REF_HELP)
    add_registry(parser)
    parser.add_argument("--json", action="store_true", help="print the whole manifest, and its aliases")


def run_show(args: argparse.Namespace) -> int:
    registry = existing_registry(args.registry)
    m = registry.resolve(args.ref)
    aliases = _aliases_by_version(registry.aliases(m.model)).get(m.version, [])
    report = (
        registry.report_location(m.model, m.version)
        if registry.has_version_report(m.model, m.version)
        else None
    )
    if args.json:
        print_json({**m.model_dump(mode="json"), "aliases": aliases, "html_report": report})
        return EXIT_OK
    pointed = f"  aliases {' '.join('@' + a for a in aliases)}" if aliases else ""
    print(f"{m.model}:{m.version}  created {m.created_at}{pointed}")
    print(f"source {m.source.filename} ({m.source.kind}, {m.source.bytes:,} bytes, sha256 {m.source.sha256})")
    rows = []
    for name, t in m.targets.items():
        rows.append(
            {
                "target": name,
                "status": t.status.value,
                "files": len(t.files),
                "bytes": f"{sum(f.bytes for f in t.files):,}",
                "max_abs_err": "-" if t.metrics.max_abs_err is None else f"{t.metrics.max_abs_err:.2e}",
                "error": (t.error or "")[:100],
            }
        )
    print_table(rows, ["target", "status", "files", "bytes", "max_abs_err", "error"])
    if report:
        print(f"report: {report}  (or: shipyard report {m.model}:{m.version})")
    return EXIT_OK


# report --------------------------------------------------------------------------------------
def _configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help=REF_HELP)
    parser.add_argument("-o", "--output", type=Path, help="HTML file to write (default: ./NAME-VERSION.html)")
    add_registry(parser)


def run_report(args: argparse.Namespace) -> int:
    """Write a version's HTML report: the stored one, else rendered again from its manifest."""
    registry = existing_registry(args.registry)
    m = registry.resolve(args.ref)
    output = args.output or Path(f"{m.model}-{m.version}.html")
    stored = registry.version_report(m.model, m.version)
    if stored is None:
        from flows.html_report import render_version_report

        stored = render_version_report(m, registry.previous_version(m.model, m.version)).encode()
    output.write_bytes(stored)
    print(output)
    return EXIT_OK


# pull ----------------------------------------------------------------------------------------
def _configure_pull(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help=REF_HELP)
    parser.add_argument("--target", required=True, help="target name, e.g. ort-web (see `shipyard targets`)")
    parser.add_argument("-o", "--output", type=Path, help="folder to write into (default: ./NAME-TARGET)")
    add_registry(parser)
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")


def run_pull(args: argparse.Namespace) -> int:
    registry = existing_registry(args.registry)
    manifest = registry.resolve(args.ref)
    if args.target not in manifest.targets:
        from targets import get_target

        get_target(args.target)  # UnknownTarget, listing the known ones, for a name that is none
    output = args.output or Path(f"{manifest.model}-{args.target}")
    _, files = registry.pull(f"{manifest.model}:{manifest.version}", args.target, output)
    if args.json:
        entries = manifest.targets[args.target].files
        print_json(
            {
                "model": manifest.model,
                "version": manifest.version,
                "target": args.target,
                "output": str(output.resolve()),
                "files": [e.model_dump() for e in entries],
            }
        )
        return EXIT_OK
    print(f"{manifest.model}:{manifest.version} {args.target}: {len(files)} file(s) verified -> {output}")
    return EXIT_OK


# promote -------------------------------------------------------------------------------------
def _configure_promote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help="NAME:VERSION")
    parser.add_argument("alias", help="alias name, e.g. prod")
    add_registry(parser)
    parser.add_argument("--json", action="store_true", help="print the alias record as JSON")


def _exact_version(args: argparse.Namespace) -> tuple[str, int]:
    """The NAME:VERSION a command that changes a version must be given (no alias)."""
    from registry import parse_ref
    from shipyard.errors import InputError

    name, version, _ = parse_ref(args.ref)
    if version is None:
        raise InputError(f"{args.command} needs NAME:VERSION, got {args.ref!r}")
    return name, version


def run_promote(args: argparse.Namespace) -> int:
    name, version = _exact_version(args)
    record = existing_registry(args.registry).set_alias(name, args.alias, version, move_back=True)
    if args.json:
        print_json(record.model_dump(mode="json"))
    else:
        print(f"{record.model}@{record.alias} -> {record.version}")
    return EXIT_OK


# rm ------------------------------------------------------------------------------------------
def _configure_rm(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help="NAME:VERSION")
    parser.add_argument(
        "--force", action="store_true", help="also when aliases point at it (they go; latest moves back)"
    )
    add_registry(parser)
    parser.add_argument("--json", action="store_true", help="print what was removed as JSON")


def run_rm(args: argparse.Namespace) -> int:
    name, version = _exact_version(args)
    registry = existing_registry(args.registry)
    aliases = registry.delete_version(name, version, force=args.force)
    left = registry.aliases(name)
    if args.json:
        print_json({"model": name, "version": version, "aliases_removed": aliases, "aliases": left})
        return EXIT_OK
    moved = f"; latest -> {left['latest']}" if "latest" in aliases and "latest" in left else ""
    print(f"removed {name}:{version}{moved} (its files go with `shipyard registry gc`)")
    return EXIT_OK


COMMANDS = [
    Command("ls", "list models, or one model's versions", _configure_ls, run_ls),
    Command("show", "show a version: source, aliases, every target's result", _configure_show, run_show),
    Command(
        "report", "write a version's HTML report (targets, metrics, charts)", _configure_report, run_report
    ),
    Command(
        "pull",
        "write a published target's files, each checked against its digest",
        _configure_pull,
        run_pull,
    ),
    Command("promote", "point an alias (e.g. prod) at a version", _configure_promote, run_promote),
    Command(
        "rm",
        "remove a version (refused while an alias points at it, unless --force)",
        _configure_rm,
        run_rm,
    ),
]
