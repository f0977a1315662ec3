"""`shipyard targets`: the target catalog."""

from __future__ import annotations

import argparse

from flows.cli._common import EXIT_OK, Command, print_json, print_table

__all__ = ["COMMANDS"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="also each target's options and default gates")


def run_targets(args: argparse.Namespace) -> int:
    from shipyard.source import ModelClass
    from targets import all_targets, default_targets

    if args.json:
        print_json(
            [
                {
                    "name": t.name,
                    "summary": t.summary,
                    "consumes": t.consumes.value if t.build() else None,
                    "builds": [c.value for c in t.builds],
                    "precision": t.precision.value,
                    "ladder": t.ladder,
                    "in_default_set": t.in_default_set,
                    "options": t.options.model_json_schema().get("properties", {}),
                    "gates": t.gates.model_dump(exclude_none=True),
                }
                for t in all_targets()
            ]
        )
        return EXIT_OK
    rows = [{"target": t.name, "precision": t.precision.value, "summary": t.summary} for t in all_targets()]
    print_table(rows, ["target", "precision", "summary"])
    default = ", ".join(t.name for t in default_targets())
    causal = ", ".join(t.name for t in default_targets(ModelClass.CAUSAL_LM) if t.build(ModelClass.CAUSAL_LM))
    print(
        f"\nWithout --targets a run builds {default} (a causal LM folder: {causal}; the others are "
        "reported skipped).\nName a precision rung (executorch-int8) or list precisions in the spec: "
        "targets: {executorch: {precisions: [fp32, int8]}}"
    )
    return EXIT_OK


COMMANDS = [Command("targets", "list the targets a model can be packaged for", _configure, run_targets)]
