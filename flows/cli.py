"""The `shipyard` command. Heavy modules are imported inside each command, so --help is fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shipyard.errors import InputError, NotFound, RegistryError, ShipyardError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Package one trained model for every place it runs, prove each artifact in its own
runtime against the source model, and publish only what passed.

Exit codes: 0 every requested target passed and was published; 1 some target failed
(the passed ones are still published) or a registry error; 2 bad usage or input.
"""

REGISTRY_HELP = (
    "registry URL: file:///abs/path or s3://bucket/prefix (default: $SHIPYARD_REGISTRY, else "
    "~/.shipyard/registry); S3 endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="shipyard", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    pk = sub.add_parser(
        "package",
        help="export, validate and publish a model",
        description="Export SOURCE (a torch.export .pt2) for each target, run every "
        "artifact in its runtime against the source, publish those that pass.",
    )
    pk.add_argument("source", type=Path, help="model file (torch.export.save archive)")
    pk.add_argument(
        "--spec", type=Path, help="YAML/JSON spec: names, dim ranges, samples, per-target options and gates"
    )
    pk.add_argument("--targets", help="comma-separated target names (default: all; see `shipyard targets`)")
    pk.add_argument("--name", help="registry model name (default: spec `name`, else the file's stem)")
    pk.add_argument("--registry", help=REGISTRY_HELP)
    pk.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    pk.add_argument("--keep-workdir", action="store_true", help="keep the run's work folder even on success")

    pl = sub.add_parser("pull", help="write a published target's files after checking every digest")
    pl.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS (default alias: latest)")
    pl.add_argument("--target", required=True, help="target name, e.g. ort-web")
    pl.add_argument("-o", "--output", type=Path, required=True, help="folder to write into")
    pl.add_argument("--registry", help=REGISTRY_HELP)

    ls = sub.add_parser("ls", help="list models, or one model's versions")
    ls.add_argument("name", nargs="?", help="model name")
    ls.add_argument("--registry", help=REGISTRY_HELP)
    ls.add_argument("--json", action="store_true")

    sh = sub.add_parser("show", help="show a version's manifest summary")
    sh.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS")
    sh.add_argument("--registry", help=REGISTRY_HELP)
    sh.add_argument("--json", action="store_true", help="print the whole manifest")

    ins = sub.add_parser("inspect", help="print a source model's signature (what a spec can override)")
    ins.add_argument("source", type=Path)
    ins.add_argument("--spec", type=Path)

    pr = sub.add_parser("promote", help="point an alias (e.g. prod) at a version")
    pr.add_argument("ref", help="NAME:VERSION")
    pr.add_argument("alias", help="alias name, e.g. prod")
    pr.add_argument("--registry", help=REGISTRY_HELP)

    rg = sub.add_parser("registry", help="registry maintenance")
    rg_sub = rg.add_subparsers(dest="registry_command", required=True, parser_class=_Parser)
    gc = rg_sub.add_parser(
        "gc",
        help="collect blobs and uploaded sources no version references",
        description="Unreferenced blobs older than the grace period move to trash/; trash entries "
        "older than it are deleted for good unless a version references them again (then they are "
        "restored). Unreferenced uploaded sources (incoming/) and unfinished uploads older than "
        "the grace period are deleted.",
    )
    gc.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        help="keep unreferenced blobs younger than this (a publish may be in progress); default 24",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be done")
    gc.add_argument("--registry", help=REGISTRY_HELP)
    gc.add_argument("--json", action="store_true", help="print what was done as JSON")

    sm = sub.add_parser(
        "submit",
        help="send a model to the service's webhook (signed with $SHIPYARD_WEBHOOK_SECRET)",
        description="POST a model to the webhook, signed with the shared secret in "
        "$SHIPYARD_WEBHOOK_SECRET; prints the run id and status URL (with --wait, the result).",
    )
    sm.add_argument("source", type=Path, help="model file")
    sm.add_argument("--name", required=True, help="registry model name")
    sm.add_argument(
        "--url",
        help="webhook URL (default: $SHIPYARD_WEBHOOK_URL, else http://127.0.0.1:$SHIPYARD_WEBHOOK_PORT)",
    )
    sm.add_argument("--spec", type=Path, help="YAML/JSON spec file, sent as text (without samples:)")
    sm.add_argument("--samples", type=Path, help="validation inputs (.npz, one array per input name)")
    sm.add_argument("--targets", help="comma-separated target names (default: all)")
    sm.add_argument("--wait", action="store_true", help="wait for the run to end and print its result")

    sub.add_parser("targets", help="list the target catalog")

    wk = sub.add_parser(
        "workers",
        help="list or stop this user's warm step servers",
        description="Steps fork from warm servers that have imported the toolchains. They are "
        "shared by every run of this user with the same code and packages, and exit after "
        "$SHIPYARD_WARM_IDLE_S seconds without work (default 900; 0: each run starts and stops "
        "its own). Sockets live in $SHIPYARD_RUNTIME_DIR (default $XDG_RUNTIME_DIR/shipyard or "
        "<tmp>/shipyard-<uid>).",
    )
    wk.add_argument("--stop", action="store_true", help="stop them (steps they are running are killed)")
    wk.add_argument("--json", action="store_true")
    return p


def _package(args: argparse.Namespace) -> int:
    import os

    from registry import open_registry
    from shipyard.spec import load_spec
    from shipyard.table import format_table
    from targets.pipeline import check_request

    request = check_request(args.source, load_spec(args.spec), args.targets, args.name)
    try:
        open_registry(args.registry).check_access()
    except RegistryError as exc:
        raise InputError(f"registry not usable: {exc}") from None
    if os.environ.get("PREFECT_API_URL"):
        report = _package_with_prefect(request, args)
    else:  # no server: the same run without Prefect, no temporary server to start
        from flows._packaging import package
        from flows._progress import StepProgress

        report = package(
            request, args.registry, hooks=StepProgress(sys.stderr), keep_workdir=args.keep_workdir
        )
    if args.json:
        print(json.dumps(report.to_json_dict(), indent=2))
    else:
        print(format_table(report))
    return report.exit_code()


def _package_with_prefect(request: Any, args: argparse.Namespace) -> Any:
    """Run the package-model flow against the Prefect server in PREFECT_API_URL (tracked in its UI)."""
    from flows.package import package_model
    from shipyard.report import RunReport

    result = package_model(
        source=str(request.source),
        targets=request.targets,
        spec=request.spec.model_dump(mode="json", exclude_defaults=True),
        name=request.model_name,
        registry=args.registry,
        keep_workdir=args.keep_workdir,
    )
    return RunReport.model_validate(result)


def _pull(args: argparse.Namespace) -> int:
    from registry import open_registry

    manifest, files = open_registry(args.registry).pull(args.ref, args.target, args.output)
    print(
        f"{manifest.model}:{manifest.version} {args.target}: {len(files)} file(s) verified -> {args.output}"
    )
    return EXIT_OK


def _ls(args: argparse.Namespace) -> int:
    from registry import open_registry

    reg = open_registry(args.registry)
    if not args.name:
        rows: Any = [
            {"model": m, "versions": len(reg.versions(m)), "aliases": reg.aliases(m)} for m in reg.models()
        ]
        text = "\n".join(
            f"{r['model']}  {r['versions']} version(s)  "
            + " ".join(f"@{a}={v}" for a, v in sorted(r["aliases"].items()))
            for r in rows
        )
    else:
        if not reg.versions(args.name):
            raise NotFound(f"no model named {args.name!r} in {reg.url}")
        rows = []
        for v in reg.versions(args.name):
            m = reg.manifest(args.name, v)
            rows.append(
                {
                    "version": v,
                    "created_at": m.created_at,
                    "source_sha256": m.source.sha256,
                    "targets": {n: t.status.value for n, t in m.targets.items()},
                }
            )
        text = "\n".join(
            f"{r['version']:>4}  {r['created_at']}  {r['source_sha256'][:12]}  "
            + " ".join(f"{n}:{s}" for n, s in r["targets"].items())
            for r in rows
        )
    print(json.dumps(rows, indent=2) if args.json else (text or "(empty)"))
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from registry import open_registry

    m = open_registry(args.registry).resolve(args.ref)
    if args.json:
        print(m.model_dump_json(indent=2))
        return EXIT_OK
    print(
        f"{m.model}:{m.version}  created {m.created_at}  source {m.source.filename} sha256 {m.source.sha256}"
    )
    for name, t in m.targets.items():
        size = sum(f.bytes for f in t.files)
        detail = (
            t.error
            if t.error
            else f"{len(t.files)} file(s), {size:,} bytes, max_abs_err {t.metrics.max_abs_err:.2e}"
        )
        print(f"  {name:<12} {t.status.value:<7} {detail}")
    return EXIT_OK


def _promote(args: argparse.Namespace) -> int:
    from registry import open_registry, parse_ref

    name, version, _ = parse_ref(args.ref)
    if version is None:
        raise InputError(f"promote needs NAME:VERSION, got {args.ref!r}")
    record = open_registry(args.registry).set_alias(name, args.alias, version)
    print(f"{record.model}@{record.alias} -> {record.version}")
    return EXIT_OK


def _registry(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from registry import open_registry

    report = open_registry(args.registry).gc(timedelta(hours=args.grace_hours), dry_run=args.dry_run)
    if args.json:
        print(report.model_dump_json(indent=2))
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


def _inspect(args: argparse.Namespace) -> int:
    import tempfile

    from shipyard.spec import load_spec
    from targets.pipeline import Engine, check_request

    request = check_request(args.source, load_spec(args.spec))
    with tempfile.TemporaryDirectory(prefix="shipyard-inspect-") as work, Engine() as engine:
        signature = engine.inspect(request, Path(work))
    print(json.dumps({"kind": request.source_kind.value, **signature.model_dump(mode="json")}, indent=2))
    return EXIT_OK


def _submit(args: argparse.Namespace) -> int:
    import os

    import httpx

    from flows._client import WebhookClient, WebhookRefused

    secret = os.environ.get("SHIPYARD_WEBHOOK_SECRET", "")
    if len(secret) < 16:
        raise InputError(
            "set SHIPYARD_WEBHOOK_SECRET to the service's webhook secret (at least 16 characters)"
        )
    for path in (args.source, args.samples):
        if path is not None and not path.is_file():
            raise InputError(f"{path}: no such file")
    port = os.environ.get("SHIPYARD_WEBHOOK_PORT", "8000")
    url = args.url or os.environ.get("SHIPYARD_WEBHOOK_URL") or f"http://127.0.0.1:{port}"
    client = WebhookClient(url, secret)
    try:
        spec = args.spec.read_text() if args.spec else None
        answer = client.submit(args.source, args.name, spec, args.targets, args.samples)
        if args.wait:
            answer = client.wait(answer["status_url"])
    except (OSError, httpx.HTTPError) as exc:
        raise InputError(f"cannot read the files or reach {url}: {exc}") from None
    except WebhookRefused as exc:
        raise InputError(f"the webhook refused the request: {exc}") from None
    print(json.dumps(answer, indent=2))
    if not args.wait:
        return EXIT_OK
    passed = answer.get("state") == "COMPLETED" and all(
        t.get("status") == "passed" for t in answer.get("targets", {}).values()
    )
    return EXIT_OK if passed else EXIT_FAILED


def _targets(args: argparse.Namespace) -> int:
    from targets import all_targets

    for t in all_targets():
        print(f"{t.name:<12} {t.summary}")
    return EXIT_OK


def _workers(args: argparse.Namespace) -> int:
    import time

    from targets.engine.servers import running_servers, stop_servers

    found = stop_servers() if args.stop else running_servers()
    rows = [
        {
            "name": s.name,
            "pid": s.pid,
            "rss_mb": None if args.stop else s.rss_mb(),
            "age_s": round(time.time() - s.started_at),
        }
        for s in found
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no warm servers running")
    else:
        verb = "stopped " if args.stop else ""
        for r in rows:
            memory = f"  {r['rss_mb']} MB" if r["rss_mb"] is not None else ""
            print(f"{verb}{r['name']}  pid {r['pid']}  up {r['age_s']} s{memory}")
    return EXIT_OK


COMMANDS = {
    "package": _package,
    "pull": _pull,
    "ls": _ls,
    "show": _show,
    "inspect": _inspect,
    "promote": _promote,
    "registry": _registry,
    "submit": _submit,
    "targets": _targets,
    "workers": _workers,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (InputError, NotFound) as exc:
        print(f"shipyard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ShipyardError as exc:
        print(f"shipyard: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
