"""What every command shares: the command record, exit codes, common arguments, output helpers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shipyard.errors import InputError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "REGISTRY_HELP",
    "SOURCE_HELP",
    "Command",
    "add_registry",
    "existing_registry",
    "print_json",
    "print_table",
    "target_list",
    "verbosity",
]

SOURCE_HELP = (
    "the model: a torch.export archive (.pt2), an ONNX file (.onnx; with external data: a "
    ".zip/.tar.gz of its folder), a Keras 3 model (.keras), or a TensorFlow SavedModel (a folder, "
    "or a .zip/.tar.gz of one)"
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

REGISTRY_HELP = (
    "registry: file:///abs/path, a plain path, or s3://bucket/prefix (default: $SHIPYARD_REGISTRY, "
    "else ~/.shipyard/registry); S3 endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY"
)


@dataclass(frozen=True)
class Command:
    """One subcommand: its arguments, and the function that runs it (returning the exit code)."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


def add_registry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", metavar="URL", help=REGISTRY_HELP)


def existing_registry(url: str | None) -> Any:
    """The registry a reading command works on; NotFound (exit 2) when there is none at `url`."""
    from registry import open_registry

    registry = open_registry(url)
    registry.require_existing()
    return registry


def verbosity(args: argparse.Namespace) -> int:
    """-1 with -q, 1 with -v, else 0."""
    return int(getattr(args, "verbosity", 0) or 0)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_table(rows: list[dict[str, Any]], columns: list[str], empty: str = "(none)") -> None:
    """Rows under a header row of the column names, each column as wide as its widest cell."""
    if not rows:
        print(empty)
        return
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    for row in [[c.upper() for c in columns], *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def target_list(value: str | None) -> str | None:
    """A --targets value: None (all), or a non-empty comma-separated list."""
    if value is not None and not value.strip(" ,"):
        raise InputError("--targets is empty: name at least one target, or leave it out for all")
    return value


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
