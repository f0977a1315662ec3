"""Step functions for tests, run in real step processes: a tampering exporter, a crash, a hang."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from targets import ExportJob, ExportResult, RuntimeJob, RuntimeResult

HANG_SLEEP_S = "6071"  # a grandchild the hanging step leaves behind, found by this argument


def sleepers() -> list[int]:
    """Processes still running the hanging step's `sleep` (there should be none)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[:2] == [b"sleep", HANG_SLEEP_S.encode()]:
            found.append(int(pid))
    return found


def tampered_triton(job: ExportJob) -> ExportResult:
    """The real Triton export, then the largest weight scaled by 5%: a wrong artifact."""
    import onnx
    from onnx import numpy_helper

    from targets.triton import export

    result = export(job)
    path = job.out_path / job.model_name / "1" / "model.onnx"
    model = onnx.load_model(str(path))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(biggest) * 1.05
    biggest.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), biggest.name))
    onnx.save_model(model, str(path))
    return result


def tampered_executorch_llm(job: ExportJob) -> ExportResult:
    """executorch's LLM export of the model with one MLP weight matrix perturbed: a conversion
    that got one tensor wrong."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from targets.executorch import export_llm

    folder = job.work_path / "tampered"
    shutil.copytree(job.input("hf-folder"), folder)
    weights = load_file(folder / "model.safetensors")
    name = sorted(k for k in weights if k.endswith("mlp.down_proj.weight"))[-1]
    noise = np.random.default_rng(0).normal(0, 0.2, weights[name].shape).astype(weights[name].dtype)
    weights[name] = weights[name] + noise
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return export_llm(job.model_copy(update={"inputs": {"hf-folder": str(folder)}}))


def tampered_tfjs(job: ExportJob) -> ExportResult:
    """The real TF.js export, then its largest float32 weight scaled by 5% in the shard."""
    import json

    from targets.tfjs import export

    result = export(job)
    (group,) = json.loads((job.out_path / "model.json").read_text())["weightsManifest"]
    data = bytearray(b"".join((job.out_path / p).read_bytes() for p in group["paths"]))
    offset, spans = 0, []
    for spec in group["weights"]:
        size = int(np.prod(spec["shape"])) * 4  # float32 and int32 both take 4 bytes
        if spec["dtype"] == "float32":
            spans.append((size, offset))
        offset += size
    size, start = max(spans)
    scaled = np.frombuffer(bytes(data[start : start + size]), dtype="<f4") * np.float32(1.05)
    data[start : start + size] = scaled.astype("<f4").tobytes()
    (job.out_path / group["paths"][0]).write_bytes(bytes(data))
    return result


def crash(job: ExportJob) -> ExportResult:
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable")


def hang(job: ExportJob) -> ExportResult:
    subprocess.Popen(["sleep", HANG_SLEEP_S])
    time.sleep(600)
    raise AssertionError("unreachable")


class Behave(BaseModel):
    """A job for `behave`: how the step process should end."""

    what: str


class Behaved(BaseModel):
    pid: int
    parent: int  # the server it was forked from (warm), or the engine (cold)
    preloaded_torch: bool


def behave(job: Behave) -> Behaved:
    """End the way the job says: normally, by raising, by a signal, by hanging, by eating memory."""
    import sys

    if job.what == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if job.what == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if job.what == "hang":
        subprocess.Popen(["sleep", HANG_SLEEP_S])
        time.sleep(600)
    if job.what == "fail":
        raise ValueError("unsupported op Foo")
    if job.what == "exit3":
        print("some converter noise", flush=True)
        os._exit(3)
    if job.what == "hog":
        bytearray(3 * 1024**3)
    if job.what == "orphan":  # returns normally, leaving a grandchild behind
        subprocess.Popen(["sleep", HANG_SLEEP_S], start_new_session=False)
    return Behaved(pid=os.getpid(), parent=os.getppid(), preloaded_torch="torch" in sys.modules)


def fails(job: ExportJob) -> ExportResult:
    """A converter that rejects the model: the same inputs fail the same way."""
    raise ValueError("unsupported op Foo")


def hogs(job: ExportJob) -> ExportResult:
    """A converter that runs out of memory under its cap: that may not happen next time."""
    bytearray(3 * 1024**3)
    raise AssertionError("unreachable under a memory cap")


def scribbles(job: ExportJob) -> ExportResult:
    """The real Triton export, which then writes to the ONNX file it was given."""
    from targets import Format
    from targets.triton import export

    result = export(job)
    with job.input(Format.ONNX).open("ab") as fh:
        fh.write(b"scribble")
    return result


def snoops(job: ExportJob) -> ExportResult:
    """The real Triton export, after looking for credentials in the step's environment and
    checking that a crash would leave no core dump."""
    from targets.triton import export

    leaked = sorted(k for k in os.environ if any(w in k for w in ("SECRET", "KEY", "TOKEN", "PASSWORD")))
    if leaked:
        raise ValueError(f"credentials reached a step process: {leaked}")
    if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):
        raise ValueError(f"core dumps are allowed: RLIMIT_CORE {resource.getrlimit(resource.RLIMIT_CORE)}")
    return export(job)


def hangs_in_chromium(job: RuntimeJob) -> RuntimeResult:
    """ort-web's browser run, timing the model a billion times: the step is killed mid-run."""
    from targets._browser import run_in_chromium
    from targets._node import HarnessModel

    model = HarnessModel(file=job.files[0], path=str(job.artifact(job.files[0])))
    result = run_in_chromium(job, "ort", model, ["wasm"], extra={"repeats": 10**9})
    raise RuntimeError(f"the browser run ended: {result}")


def writes_big(job: ExportJob) -> ExportResult:
    """Writes 3 MB in 64 KB pieces, as a converter expanding its output would."""
    with (job.out_path / "huge.bin").open("wb") as out:
        for _ in range(48):
            out.write(b"\0" * 65536)
    raise RuntimeError("the 3 MB file was written: no file size limit")
