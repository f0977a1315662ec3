"""Execute one step: build its job from its inputs' outcomes, reuse a cached result or run it.

Every step kind turns the outcomes it depends on into a typed job with explicit paths, and into
the key material of its cache entry: the digests of what it reads (never their paths), its
options and its fingerprint. A cache hit costs a lookup; a miss runs the step in a warm isolated
process (targets.engine.workers), in a folder of its own under the run folder:

    steps/<step>/job.json  result.json  log.txt  reproduce.sh  out/  work/
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipyard.digests import sha256_file
from shipyard.precision import Precision
from shipyard.report import StepStatus
from shipyard.spec import Spec
from shipyard.variants import Variant, max_variant_elements
from targets._jobs import ExportJob, ExportResult, RuntimeJob, RuntimeResult, VariantInputs
from targets.engine.cache import CacheEntry, StepCache, cache_key, tree_digest
from targets.engine.family import Family
from targets.engine.fingerprint import code_digest, host_class, toolchain_versions
from targets.engine.graph import PREPARE, Step, StepKind, export_id, reference_id
from targets.engine.judge import LocatedVariant, edge_dims, in_envelope
from targets.engine.scheduler import StepOutcome
from targets.engine.steps import EdgeJob, EdgeVariants, PreparedSource, PrepareJob
from targets.engine.workers import (
    STEP_SETTINGS,
    TOOLCHAIN_ENVIRONMENT,
    StepCall,
    StepProcesses,
    step_environment,
)

__all__ = ["RunContext", "StepExecutor", "located_variants", "step_folder"]

CACHE_FORMAT = 1  # bump when the layout of cached results changes


@dataclass(frozen=True)
class RunContext:
    """What every step of one run shares."""

    source: Path
    source_sha256: str
    spec: Spec
    model_name: str
    folder: Path  # the run folder


def located_variants(outcomes: dict[str, StepOutcome], target: str) -> dict[str, LocatedVariant]:
    """The variants a target's validation runs: the prepared ones it serves, plus its edge's."""
    prepared = outcomes[PREPARE]
    assert isinstance(prepared.result, PreparedSource) and prepared.out_dir is not None
    exported = _result(outcomes[export_id(target)], ExportResult)
    found = {
        v.name: LocatedVariant.at(v, prepared.out_dir)
        for v in prepared.result.variants
        if in_envelope(v.dims, exported.envelope)
    }
    edge = outcomes[reference_id(target)]
    if isinstance(edge.result, EdgeVariants) and edge.out_dir is not None:
        found.update({v.name: LocatedVariant.at(v, edge.out_dir) for v in edge.result.variants})
    return found


def step_folder(step_id: str) -> str:
    """A step's folder, relative to the run folder: `steps/export-tfjs`."""
    return "steps/" + "".join(c if c.isalnum() or c in "-_." else "-" for c in step_id)


class StepExecutor:
    """Turns a step and its inputs' outcomes into a job, and the job into an outcome."""

    def __init__(
        self,
        context: RunContext,
        processes: StepProcesses,
        cache: StepCache,
        families: list[Family],
        dry: bool = False,
    ) -> None:
        self.context = context
        self.processes = processes
        self.cache = cache
        self.families = families  # warm servers to start as soon as one step has to run
        self.dry = dry  # run only the preparation; every other step is looked up, never run

    def __call__(self, step: Step, inputs: dict[str, StepOutcome]) -> StepOutcome:
        if step.kind is StepKind.PREPARE:
            return self._prepare(step)
        if step.kind is StepKind.REFERENCE:
            return self._reference(step, inputs)
        if step.kind is StepKind.VALIDATE:
            return self._validate(step, inputs)
        return self._export(step, inputs)

    # the kinds ------------------------------------------------------------
    def _prepare(self, step: Step) -> StepOutcome:
        spec = self.context.spec
        samples = _file_digest(Path(spec.samples)) if spec.samples else None
        budget = max_variant_elements()
        calibrate = step.calibrate
        material = {
            "source": self.context.source_sha256,
            "spec": spec.model_dump(mode="json", include={"inputs", "outputs", "dims", "seed", "generation"}),
            "samples": samples,
            "max_variant_elements": budget,
            "calibrate": calibrate,
        }

        def job(out_dir: Path, work_dir: Path) -> BaseModel:
            return PrepareJob(
                source=str(self.context.source),
                spec=spec,
                out_dir=str(out_dir),
                max_variant_elements=budget,
                calibrate=calibrate,
            )

        return self._run(step, {}, material, job, PreparedSource, cache_failures=False)

    def _export(self, step: Step, inputs: dict[str, StepOutcome]) -> StepOutcome:
        prepared = _result(inputs[PREPARE], PreparedSource) if PREPARE in inputs else None
        signature = prepared.signature if prepared else None
        assert step.consumes is not None
        upstream = next((inputs[n] for n in step.needs if n != PREPARE), None)
        if upstream is None:  # it consumes the source itself
            product, product_digest = self.context.source, self.context.source_sha256
        else:
            made = _result(upstream, ExportResult)
            assert upstream.out_dir is not None and made.product is not None
            product, product_digest = upstream.out_dir / made.product, upstream.digest
        precision = step.target.precision if step.target else Precision.FP32
        material = {
            "input": {step.consumes.value: product_digest},
            "signature": signature.model_dump(mode="json") if signature else None,
            "model_name": self.context.model_name,
            "precision": precision.value,  # one exporter builds every rung: the rung is its input
            "options": step.options,
        }
        calibration = None
        if step.gates is not None:  # a quantizer: its bytes follow the calibration data and gates
            assert prepared is not None and prepared.calibration is not None
            folder = inputs[PREPARE].out_dir
            assert folder is not None
            calibration = prepared.calibration.model_copy(
                update={
                    "batches": [str(folder / b) for b in prepared.calibration.batches],
                    "generated": [str(folder / b) for b in prepared.calibration.generated],
                }
            )
            material["gates"] = step.gates.model_dump(mode="json")
            material["calibration"] = {
                "source": calibration.source.value,
                "files": [_file_digest(Path(f)) for f in [*calibration.batches, *calibration.generated]],
            }

        def job(out_dir: Path, work_dir: Path) -> BaseModel:
            return ExportJob(
                step=step.id,
                model_name=self.context.model_name,
                signature=signature,
                precision=precision,
                options=step.options,
                inputs={step.consumes.value: str(product)} if step.consumes else {},
                out_dir=str(out_dir),
                work_dir=str(work_dir),
                calibration=calibration,
                gates=step.gates,
            )

        return self._run(step, inputs, material, job, ExportResult, cache_failures=True)

    def _reference(self, step: Step, inputs: dict[str, StepOutcome]) -> StepOutcome:
        """Reference outputs at the top of a narrowed envelope; nothing when the export serves all."""
        assert step.target is not None
        prepared = _result(inputs[PREPARE], PreparedSource)
        exported = _result(inputs[export_id(step.target.name)], ExportResult)
        edge = edge_dims(prepared.signature, exported.envelope)
        if edge is None or any(v.dims == edge for v in prepared.variants):
            return StepOutcome(
                step=step, status=StepStatus.NOOP, seconds=0.0, result=EdgeVariants(variants=[])
            )
        variants = [Variant(name="served-max", dims=edge)]
        spec = self.context.spec
        material = {
            "source": self.context.source_sha256,
            "signature": prepared.signature.model_dump(mode="json"),
            "spec": spec.model_dump(mode="json", include={"inputs", "seed"}),
            "variants": [v.model_dump() for v in variants],
        }

        def job(out_dir: Path, work_dir: Path) -> BaseModel:
            return EdgeJob(
                source=str(self.context.source),
                signature=prepared.signature,
                spec=spec,
                variants=variants,
                out_dir=str(out_dir),
            )

        return self._run(step, inputs, material, job, EdgeVariants, cache_failures=False)

    def _validate(self, step: Step, inputs: dict[str, StepOutcome]) -> StepOutcome:
        assert step.target is not None
        prepared = _result(inputs[PREPARE], PreparedSource)
        export = inputs[export_id(step.target.name)]
        exported = _result(export, ExportResult)
        variants = located_variants(inputs, step.target.name)
        baseline = inputs[step.baseline_step] if step.baseline_step else None
        baseline_path = None
        if baseline is not None:
            made = _result(baseline, ExportResult)
            assert baseline.out_dir is not None and made.product is not None
            baseline_path = baseline.out_dir / made.product
        reference = inputs[reference_id(step.target.name)]
        material = {
            "artifact": export.digest,
            "baseline": baseline.digest if baseline else None,
            "variants": [inputs[PREPARE].digest, reference.digest, sorted(variants)],
            "signature": prepared.signature.model_dump(mode="json"),
            "options": step.options,
        }

        target = step.target

        def job(out_dir: Path, work_dir: Path) -> BaseModel:
            assert export.out_dir is not None
            return RuntimeJob(
                step=step.id,
                model_name=self.context.model_name,
                artifact_dir=str(export.out_dir),
                files=exported.files,
                baseline=str(baseline_path) if baseline_path else None,
                signature=prepared.signature,
                precision=target.precision,
                options=step.options,
                variants=[
                    VariantInputs(name=v.name, dims=v.dims, inputs=v.inputs) for v in variants.values()
                ],
                out_dir=str(out_dir),
                work_dir=str(work_dir),
            )

        return self._run(step, inputs, material, job, RuntimeResult, cache_failures=False)

    # running with the cache -----------------------------------------------
    def _key(self, step: Step, material: dict[str, Any]) -> str:
        return cache_key(
            {
                "cache_format": CACHE_FORMAT,
                "function": step.recipe.function,
                "kind": step.kind.value,
                "material": material,
                "toolchain": toolchain_versions(step.recipe.toolchain),
                "environment": TOOLCHAIN_ENVIRONMENT,
                "settings": {name: os.environ.get(name) for name in STEP_SETTINGS},
                "code": code_digest(),
                "host": host_class(),
            }
        )

    def _run(
        self,
        step: Step,
        inputs: dict[str, StepOutcome],
        material: dict[str, Any],
        make_job: Any,
        result_type: type[BaseModel],
        cache_failures: bool,
    ) -> StepOutcome:
        start = time.perf_counter()
        key = self._key(step, material)
        hit = self.cache.lookup(key)
        if hit is not None:
            entry = hit.entry
            return StepOutcome(
                step=step,
                status=StepStatus.PASSED if entry.ok else StepStatus.FAILED,
                seconds=time.perf_counter() - start,
                result=result_type.model_validate_json(entry.result) if entry.ok else None,
                out_dir=hit.out_dir,
                digest=entry.digest,
                reused=True,
                original_seconds=entry.seconds,
                error=None if entry.ok else entry.result,
            )
        if self.dry and step.kind is not StepKind.PREPARE:
            error = "not run (dry run)"
            return StepOutcome(step=step, status=StepStatus.FAILED, seconds=0.0, error=error)
        self.processes.start(self.families)  # a step must run: let every family warm up meanwhile
        folder = self.context.folder / step_folder(step.id)
        shutil.rmtree(folder, ignore_errors=True)
        out_dir, work_dir = folder / "out", folder / "work"
        out_dir.mkdir(parents=True)
        work_dir.mkdir()
        call = StepCall(
            name=step.id,
            recipe=step.recipe,
            job=folder / "job.json",
            result=folder / "result.json",
            log=folder / "log.txt",
            timeout_s=step.timeout_s,
            memory_mb=step.memory_mb,
        )
        call.job.write_text(make_job(out_dir, work_dir).model_dump_json(indent=2))
        _write_reproduce_script(folder, call)
        ended = self.processes.run(call)
        shutil.rmtree(work_dir, ignore_errors=True)
        changed = self._changed_inputs(inputs)
        if changed:  # it wrote to what it read (as root, read-only files do not stop that)
            error = f"{step.id} modified its input {changed}; a step must not write to what it reads"
            return StepOutcome(
                step=step, status=StepStatus.FAILED, seconds=time.perf_counter() - start, error=error
            )
        if not ended.ok:
            repeatable = ended.error is not None and ended.error.repeatable
            if repeatable and cache_failures and self.cache.enabled:
                entry = CacheEntry(
                    step=step.id,
                    ok=False,
                    result=ended.output,
                    seconds=ended.seconds,
                    digest="",
                    created_at=time.time(),
                )
                self.cache.store(key, out_dir, entry)
            return StepOutcome(
                step=step,
                status=StepStatus.FAILED,
                seconds=time.perf_counter() - start,
                error=ended.error.reason if ended.error and ended.error.bad_input else ended.output,
                bad_input=ended.error is not None and ended.error.bad_input,
            )
        result = result_type.model_validate_json(ended.output)
        digest = tree_digest(out_dir)
        if self.cache.enabled:
            entry = CacheEntry(
                step=step.id,
                ok=True,
                result=ended.output,
                seconds=ended.seconds,
                digest=digest,
                created_at=time.time(),
            )
            out_dir = self.cache.store(key, out_dir, entry)
        return StepOutcome(
            step=step,
            status=StepStatus.PASSED,
            seconds=time.perf_counter() - start,
            result=result,
            out_dir=out_dir,
            digest=digest,
        )

    def _changed_inputs(self, inputs: dict[str, StepOutcome]) -> str | None:
        """The first input whose files no longer match their digest, if any."""
        if sha256_file(self.context.source) != self.context.source_sha256:
            return "the source model"
        for name, outcome in inputs.items():
            if (
                outcome.out_dir is not None
                and outcome.digest
                and tree_digest(outcome.out_dir) != outcome.digest
            ):
                return name
        return None


def _result(outcome: StepOutcome, result_type: type[Any]) -> Any:
    assert isinstance(outcome.result, result_type), f"{outcome.step.id} has no {result_type.__name__}"
    return outcome.result


def _file_digest(path: Path) -> str:
    return sha256_file(path) if path.is_file() else "missing"


def _write_reproduce_script(folder: Path, call: StepCall) -> None:
    """reproduce.sh: this step again, cold, with the step environment, into fresh out/ and work/."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(step_environment().items()))
    command = " ".join(shlex.quote(c) for c in call.command())
    script = folder / "reproduce.sh"
    script.write_text(
        "#!/bin/sh\n# Run this step again in a fresh interpreter (see log.txt for the first run).\n"
        f'set -e\ncd "$(dirname "$0")"\nrm -rf out work && mkdir -p out work\nexec env -i {env} {command}\n'
    )
    script.chmod(0o755)
