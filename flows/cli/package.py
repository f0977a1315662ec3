"""`shipyard package` (export, validate, publish; or --dry-run: check and plan) and `shipyard inspect`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from flows.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    SOURCE_HELP,
    Command,
    add_registry,
    print_json,
    target_list,
    verbosity,
)
from shipyard.errors import InputError

__all__ = ["COMMANDS"]


def _configure_package(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help=SOURCE_HELP)
    _add_spec_and_targets(parser)
    parser.add_argument(
        "--name", help="registry model name (default: the spec's `name`, else the file's stem)"
    )
    add_registry(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the run's work folder even when every target passed"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check source, spec, targets, samples and registry, read the model's signature and print "
        "the plan (targets, steps, validation variants); export nothing",
    )


def _add_spec_and_targets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec", type=Path, help="YAML/JSON spec: names, dim ranges, samples, per-target options and gates"
    )
    parser.add_argument(
        "--targets", metavar="A,B", help="comma-separated target names (default: all; see `shipyard targets`)"
    )


def _request(args: argparse.Namespace) -> Any:
    from shipyard.spec import load_spec
    from targets.pipeline import check_request

    return check_request(
        args.source, load_spec(args.spec), target_list(args.targets), getattr(args, "name", None)
    )


def _usable_registry(url: str | None) -> Any:
    from registry import open_registry
    from shipyard.errors import InputError, RegistryError

    registry = open_registry(url)
    try:
        registry.check_access()
    except RegistryError as exc:
        raise InputError(f"registry not usable: {exc}") from None
    return registry


def run_package(args: argparse.Namespace) -> int:
    request = _request(args)
    registry = _usable_registry(args.registry)
    if args.dry_run:
        return _dry_run(request, registry.url, args)
    if os.environ.get("PREFECT_API_URL"):
        report = _package_with_prefect(request, args)
    else:  # no server: the same run without Prefect, no temporary server to start
        from flows._packaging import package
        from flows.cli.progress import progress_for

        with progress_for(request.targets, verbosity(args)) as hooks:
            report = package(request, args.registry, hooks=hooks, keep_workdir=args.keep_workdir)
    if args.json:
        print_json(report.to_json_dict())
    else:
        from shipyard.table import format_table

        print(format_table(report))
        if report.html_report:
            print(f"report: {report.html_report}")
    if report.workdir and verbosity(args) >= 0:
        _print_kept(report)
    code: int = report.exit_code()
    return code


def _print_kept(report: Any) -> None:
    """Where a failed run's steps are kept, and how to run each failed one again."""
    print(f"work folder kept: {report.workdir}", file=sys.stderr)
    for step in report.steps:
        if step.status.value == "failed" and step.folder:
            print(f"  {step.step}: sh {Path(report.workdir) / step.folder / 'reproduce.sh'}", file=sys.stderr)


def _package_with_prefect(request: Any, args: argparse.Namespace) -> Any:
    """Run the package-model flow against the Prefect server in PREFECT_API_URL (tracked in its UI)."""
    from flows._parameters import SpecForm, TargetName
    from flows.package import package_model

    given = request.spec.model_dump(mode="json", exclude_defaults=True)
    samples = given.pop("samples", None)
    return package_model(
        source=str(request.source),
        targets=[TargetName(t) for t in request.asked_targets()],
        spec=SpecForm.model_validate(given),
        name=request.model_name,
        registry=args.registry,
        keep_workdir=args.keep_workdir,
        samples=samples,
    )


def _dry_run(request: Any, registry_url: str, args: argparse.Namespace) -> int:
    """The plan: every step that would run (or be reused), and the variants validation would use."""
    import tempfile

    from targets.pipeline import Engine

    with tempfile.TemporaryDirectory(prefix="shipyard-plan-") as work, Engine() as engine:
        plan = engine.plan(request, Path(work))
    summary = {
        "model": request.model_name,
        "source": str(request.source),
        "source_kind": request.source_kind.value,
        "source_sha256": request.source_sha256,
        "registry": registry_url,
        "targets": request.targets,
        "signature": plan.signature.model_dump(mode="json"),
        "variants": [{"name": v.name, "dims": v.dims} for v in plan.variants],
        "steps": [s.model_dump() for s in plan.steps],
    }
    if args.json:
        print_json(summary)
        return EXIT_OK
    print(f"{request.model_name}: {_described(request)}")
    print(f"registry: {registry_url}")
    print(f"targets: {', '.join(request.targets)}")
    _print_signature(plan.signature)
    print("validation variants: " + ", ".join(f"{v.name} {_dims(v.dims)}" for v in plan.variants))
    print("steps:")
    for s in plan.steps:
        print(f"  {s.step:<28} {'cached' if s.cached else 'runs if needed' if s.conditional else 'runs'}")
    return EXIT_OK


def _described(request: Any) -> str:
    return f"{request.source} ({request.source_kind.value}, sha256 {request.source_sha256[:12]})"


def _dims(dims: dict[str, int]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in dims.items()) + ")" if dims else "(static)"


def _print_signature(signature: Any) -> None:
    for label, tensors in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        print(f"{label}:")
        for t in tensors:
            print(f"  {t.name:<20} {t.dtype:<9} [{', '.join(str(d) for d in t.shape)}]")
    if signature.dims:
        print("dims:")
        for d in signature.dims.values():
            declared = f" (declared max {d.declared_max})" if d.declared_max is not None else ""
            print(f"  {d.name:<20} min {d.min}  typical {d.typical}  max {d.max}  from {d.source}{declared}")


def _configure_inspect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help=SOURCE_HELP)
    _add_spec_and_targets(parser)
    parser.add_argument("--json", action="store_true", help="print the signature as JSON")


def run_inspect(args: argparse.Namespace) -> int:
    import tempfile

    from shipyard.prepare import check_source
    from shipyard.source import SourceKind
    from targets.pipeline import Engine

    if check_source(args.source.resolve(), sniff=True) in (SourceKind.HF_FOLDER, SourceKind.HF_ARCHIVE):
        return _inspect_causal_lm(args)
    request = _request(args)
    with tempfile.TemporaryDirectory(prefix="shipyard-inspect-") as work, Engine() as engine:
        signature = engine.inspect(request, Path(work) / "signature")
        if not args.json:  # the names a spec needs come first, whether or not the model runs
            print(_described(request))
            _print_signature(signature)
            sys.stdout.flush()
        try:
            engine.check_runs(request, Path(work) / "runs")
            run_error = None
        except InputError as exc:
            run_error = str(exc)
    if args.json:
        print_json(
            {"kind": request.source_kind.value, **signature.model_dump(mode="json"), "run_error": run_error}
        )
    elif run_error is None:
        print("runs: on every validation variant")
    else:
        print(f"shipyard: error: {run_error}", file=sys.stderr)
    return EXIT_OK if run_error is None else EXIT_USAGE


def _inspect_causal_lm(args: argparse.Namespace) -> int:
    """A Hugging Face folder's facts, read from its config, safetensors headers and tokenizer files."""
    from shipyard.hf_folder import inspect_causal_lm
    from shipyard.source import ModelClass, detect_kind

    source = args.source.resolve()
    facts = inspect_causal_lm(source)
    kind = detect_kind(source, thorough=False).value
    if args.json:
        print_json({"kind": kind, "model_class": ModelClass.CAUSAL_LM.value, **facts.model_dump(mode="json")})
        return EXIT_OK
    yes_no = {True: "yes", False: "no"}
    print(f"{source} ({kind}, {ModelClass.CAUSAL_LM.value})")
    print(f"architecture: {facts.architecture} ({facts.model_type})")
    files = ", ".join(facts.weight_files)
    print(f"parameters:   {facts.parameters:,} ({facts.dtype}, {facts.weight_bytes:,} bytes in {files})")
    print(
        f"layers:       {facts.layers}, hidden {facts.hidden_size}, heads {facts.heads}, "
        f"kv heads {facts.kv_heads}, head dim {facts.head_dim}"
    )
    print(
        f"vocabulary:   {facts.vocab_size:,}; context length {facts.context_length:,}; "
        f"tied embeddings {yes_no[facts.tied_embeddings]}"
    )
    print(
        f"tokenizer:    {facts.tokenizer} (tokenizer.json); bos {facts.bos_id}, eos {facts.eos_ids}; "
        f"chat template {yes_no[facts.chat_template]}"
    )
    return EXIT_OK


COMMANDS = [
    Command(
        "package",
        "export, validate and publish a model",
        _configure_package,
        run_package,
        description="Export SOURCE for each target, run every artifact in its own runtime against "
        "the source model, and publish those that pass. Exit 0: every target passed (or was "
        "skipped: no converter path from this kind of source); 1: some target failed (the "
        "others are published); 2: bad usage or input.",
    ),
    Command(
        "inspect",
        "print a model's signature: the names, dtypes, shapes and dim ranges a spec can refer to",
        _configure_inspect,
        run_inspect,
        description="Print SOURCE's signature with the spec applied (read without running the model), "
        "then run the source on every validation variant. Exit 0: it runs; 2: bad input, or it fails on "
        "a variant (the error names the variant's sizes and the spec's dims to narrow). For a Hugging "
        "Face causal-LM folder (or an archive of one): its architecture, parameters, layers, heads, "
        "vocabulary, context length, dtype and tokenizer, read from its files without running any.",
    ),
]
