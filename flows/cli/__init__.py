"""The `shipyard` command. Commands live in modules of their own (package, models, registry, runs,
service, catalog) and import heavy code only when they run, so `shipyard --help` is fast."""

from flows.cli._app import main

__all__ = ["main"]
