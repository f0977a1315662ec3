"""The `shipyard` parser and entry point: one module per group of commands, errors as exit codes."""

from __future__ import annotations

import argparse
import os
import sys

from flows.cli import catalog, models, package, registry, runs, service
from flows.cli._common import EXIT_FAILED, EXIT_USAGE, Command
from shipyard import __version__
from shipyard.errors import InputError, NotFound, ShipyardError

__all__ = ["COMMANDS", "main"]

DESCRIPTION = """\
Package one trained model for every place it runs, prove each artifact in its own
runtime against the source model, and publish only what passed.

Start with `shipyard package model.pt2`; `shipyard COMMAND --help` tells more.
Exit codes: 0 success; 1 some target failed (the passed ones are still published) or
a registry error; 2 bad usage or input (one line on stderr, nothing written).
"""

COMMANDS: list[Command] = [
    *package.COMMANDS,
    *models.COMMANDS,
    *registry.COMMANDS,
    *runs.COMMANDS,
    *service.COMMANDS,
    *catalog.COMMANDS,
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
        help="print only results and errors",
    )  # fmt: skip
    group.add_argument(
        "-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
        help="also print every step and Prefect's own log lines",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="shipyard", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"shipyard {__version__}")
    _add_verbosity(parser, 0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        child = sub.add_parser(
            command.name, help=command.help, description=command.description or command.help
        )
        _add_verbosity(child, argparse.SUPPRESS)  # after the command too: `shipyard package m.pt2 -v`
        command.configure(child)
        child.set_defaults(run=command.run)
    return parser


def _quiet_prefect(verbosity: int) -> None:
    """Prefect's console lines (server banner, task states) only with -v; its UI keeps them all."""
    if verbosity < 1:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _quiet_prefect(args.verbosity)
    try:
        code: int = args.run(args)
        return code
    except (InputError, NotFound) as exc:
        print(f"shipyard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ShipyardError as exc:
        print(f"shipyard: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("shipyard: interrupted", file=sys.stderr)
        return 130
