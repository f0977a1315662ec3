"""The service from the command line: `shipyard submit` (a signed webhook upload) and `shipyard
workers` (this user's warm step servers)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from flows.cli._common import EXIT_FAILED, EXIT_OK, SOURCE_HELP, Command, print_json, print_table, target_list

__all__ = ["COMMANDS"]


# submit --------------------------------------------------------------------------------------
def _configure_submit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help=SOURCE_HELP)
    parser.add_argument("--name", required=True, help="registry model name")
    parser.add_argument(
        "--url",
        help="webhook URL (default: $SHIPYARD_WEBHOOK_URL, else http://127.0.0.1:$SHIPYARD_WEBHOOK_PORT, "
        "port 8000)",
    )
    parser.add_argument("--spec", type=Path, help="YAML/JSON spec file, sent as text (without samples:)")
    parser.add_argument("--samples", type=Path, help="validation inputs: an .npz, one array per input name")
    parser.add_argument("--targets", metavar="A,B", help="comma-separated target names (default: all)")
    parser.add_argument("--wait", action="store_true", help="wait for the run to end and show its result")
    parser.add_argument("--json", action="store_true", help="print the webhook's answer as JSON")


def run_submit(args: argparse.Namespace) -> int:
    import httpx

    from flows._client import StatusUnreadable, WebhookClient, WebhookRefused
    from shipyard.errors import InputError
    from shipyard.settings import settings

    env = settings()
    secret = env.webhook_secret
    if len(secret) < 16:
        raise InputError(
            "set SHIPYARD_WEBHOOK_SECRET to the service's webhook secret (at least 16 characters; "
            "`make up` keeps the one it generated in .shipyard/service/webhook.secret)"
        )
    for path in (args.source, args.samples):
        if path is not None and not path.is_file():
            raise InputError(f"{path}: no such file")
    url = args.url or env.webhook_url or f"http://127.0.0.1:{env.webhook_port}"
    client = WebhookClient(url, secret)
    try:
        spec = args.spec.read_text() if args.spec else None
        answer = client.submit(args.source, args.name, spec, target_list(args.targets), args.samples)
    except (OSError, httpx.HTTPError) as exc:
        raise InputError(f"cannot read the files or reach {url}: {exc}") from None
    except WebhookRefused as exc:
        raise InputError(f"the webhook refused the request: {exc}") from None
    if args.wait:
        try:
            answer = client.wait(answer["status_url"])
        except (StatusUnreadable, WebhookRefused) as exc:  # accepted: the upload is safe either way
            print(
                f"shipyard: run {answer['run_id']} was accepted and goes on (the upload is stored); "
                f"its status could not be read ({exc}); read it again at {answer['status_url']}",
                file=sys.stderr,
            )
            return EXIT_FAILED
    if args.json:
        print_json(answer)
    else:
        _print_answer(answer)
    if not args.wait:
        return EXIT_OK
    passed = answer.get("state") == "COMPLETED" and all(
        t.get("status") == "passed" for t in answer.get("targets", {}).values()
    )
    return EXIT_OK if passed else EXIT_FAILED


def _print_answer(answer: dict[str, Any]) -> None:
    if "state" not in answer:
        print(f"run {answer['run_id']} started; status: {answer['status_url']}")
        return
    version = f" v{answer['version']}" if answer.get("version") else ""
    print(f"run {answer['run_id']}: {answer['state']}{version}")
    rows = [
        {"target": n, "status": t.get("status"), "error": (t.get("error") or "")[:100]}
        for n, t in answer.get("targets", {}).items()
    ]
    if rows:
        print_table(rows, ["target", "status", "error"])
    if answer.get("error"):
        print(answer["error"])


# workers -------------------------------------------------------------------------------------
def _configure_workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stop", action="store_true", help="stop them (steps they are running are killed)")
    parser.add_argument("--json", action="store_true", help="print them as JSON")


def run_workers(args: argparse.Namespace) -> int:
    from targets.engine.servers import max_warm_servers, running_servers, stop_servers

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
        print_json(rows)
        return EXIT_OK
    verb = "stopped " if args.stop else ""
    shown = [
        {**r, "name": f"{verb}{r['name']}", "rss_mb": "-" if r["rss_mb"] is None else r["rss_mb"]}
        for r in rows
    ]
    print_table(shown, ["name", "pid", "rss_mb", "age_s"], empty="no warm servers running")
    if rows and not args.stop:
        total = sum(s.rss_mb() or 0 for s in found)
        most = max_warm_servers()
        print(f"{len(rows)} of at most {most} servers (SHIPYARD_MAX_WARM_SERVERS), {total:,} MB resident")
    return EXIT_OK


COMMANDS = [
    Command(
        "submit",
        "send a model to the service's webhook (signed with $SHIPYARD_WEBHOOK_SECRET)",
        _configure_submit,
        run_submit,
        description="POST a model to the webhook, signed with the shared secret in "
        "$SHIPYARD_WEBHOOK_SECRET; prints the run id and status URL (with --wait, the result).",
    ),
    Command(
        "workers",
        "list or stop this user's warm step servers",
        _configure_workers,
        run_workers,
        description="Steps fork from warm servers that have imported the toolchains. They are "
        "shared by every run of this user with the same code and packages, and exit after "
        "$SHIPYARD_WARM_IDLE_S seconds without work (default 900; 0: each run starts and stops "
        "its own). Sockets live in $SHIPYARD_RUNTIME_DIR (default $XDG_RUNTIME_DIR/shipyard or "
        "<tmp>/shipyard-<uid>).",
    ),
]
