"""Host independence, shown on an emulated CPU without AVX-512. Not a test: it takes a while.

Packages a bench model on this host (all six targets, step folders kept), then runs steps again
from their job files in fresh interpreters, each twice: natively, and under
`qemu-x86_64 -cpu Haswell-v4` (Debian's qemu-user, whose TCG emulates AVX2 and FMA but no
AVX-512, so CPUID tells torch, oneDNN, XLA and TensorFlow that there is none):
- every conversion and export: the two runs must write the same bytes (tree digest of out/);
- validate:aoti: the AOTInductor package built on this host must load and run on the AVX2 CPU
  (an AVX-512 instruction raises SIGILL there) and match the source model's outputs;
- a control: export:tfjs again with TensorFlow's own default for its oneDNN graph rewrites
  (Shipyard sets TF_ENABLE_ONEDNN_OPTS=0): on by default on an AVX-512 host, where they fuse
  MatMul + Tanh, off on the AVX2 CPU, so the two runs must write different bytes, or this method
  could not see a host in the bytes (the model needs a Tanh after a MatMul, as multi_io has).
Programs a step starts (gcc, node) run natively: qemu-user emulates only the interpreter.

Usage: python bench/portability.py [--model multi_io] [--cpu Haswell-v4]
Writes a table on stdout and bench/results/portability.json. Needs qemu-x86_64 (apt-get install
qemu-user).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _shipyard import package_process  # a sibling of this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _command(step_folder: Path) -> tuple[dict[str, str], list[str]]:
    """The environment and the command of a step's reproduce.sh."""
    line = next(
        ln for ln in (step_folder / "reproduce.sh").read_text().splitlines() if ln.startswith("exec env -i")
    )
    words = shlex.split(line)[3:]
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("/"))
    command = words[len(env) :]
    return env, command


def _rerun(
    step_folder: Path, into: Path, qemu: list[str], unset: tuple[str, ...] = ()
) -> tuple[float, int, str]:
    """Run a step again from its job in `into` (without the variables `unset`); (seconds, exit
    code, digest or log tail)."""
    from targets.engine.cache import tree_digest

    shutil.rmtree(into, ignore_errors=True)
    (into / "out").mkdir(parents=True)
    (into / "work").mkdir()
    job = json.loads((step_folder / "job.json").read_text())
    for key in ("out_dir", "work_dir"):
        if key in job:
            job[key] = str(into / key.removesuffix("_dir"))
    (into / "job.json").write_text(json.dumps(job))
    env, command = _command(step_folder)
    for name in unset:
        env.pop(name, None)
    function = command[command.index("targets.engine.child") + 1]
    argv = [
        *qemu,
        command[0],
        "-m",
        "targets.engine.child",
        function,
        str(into / "job.json"),
        str(into / "result.json"),
    ]
    start = time.perf_counter()
    with (into / "log.txt").open("wb") as log:
        code = subprocess.run(argv, env=env, cwd=into, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    tail = " | ".join((into / "log.txt").read_text(errors="replace").strip().splitlines()[-2:])[-300:]
    return seconds, code, tree_digest(into / "out") if code == 0 else tail


def _aoti_error(folder: Path) -> float:
    """Worst absolute difference between the aoti outputs in `folder` and the source's references."""
    import numpy as np

    from shipyard.variants import load_arrays

    job = json.loads((folder / "job.json").read_text())
    result = json.loads((folder / "result.json").read_text())
    worst = 0.0
    references = {
        v["name"]: load_arrays(Path(v["inputs"].replace(".inputs.", ".reference."))) for v in job["variants"]
    }
    for run in result["runs"]:
        for variant, outputs in run["outputs"].items():
            got = load_arrays(folder / "out" / outputs)
            for name, ref in references[variant].items():
                worst = max(worst, float(np.max(np.abs(got[name] - ref))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="multi_io", help="a bench model: convnet, mlp, encoder, multi_io")
    parser.add_argument("--cpu", default="Haswell-v4", help="the emulated CPU (qemu-x86_64 -cpu)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    qemu = [shutil.which("qemu-x86_64") or "qemu-x86_64", "-cpu", args.cpu]
    from tests import models as test_models

    rows = []
    with tempfile.TemporaryDirectory(prefix="shipyard-portability-") as tmp:
        source = getattr(test_models, f"save_{args.model}")(Path(tmp) / f"{args.model}.pt2")
        report, _, _ = package_process(source, Path(tmp) / "home", "--keep-workdir", "-q")
        workdir = Path(report["workdir"])
        for step in report["steps"]:
            name, folder = step["step"], step.get("folder")
            if not folder or not name.startswith(("convert:", "export:", "validate:aoti")):
                continue
            native = _rerun(workdir / folder, Path(tmp) / "native" / folder, [])
            emulated = _rerun(workdir / folder, Path(tmp) / "qemu" / folder, qemu)
            row: dict[str, Any] = {
                "step": name,
                "native_s": round(native[0], 1),
                "emulated_s": round(emulated[0], 1),
                "native_exit": native[1],
                "emulated_exit": emulated[1],
            }
            if name == "validate:aoti":
                row["loads_and_runs_without_avx512"] = emulated[1] == 0
                if emulated[1] == 0:
                    row["max_abs_err_emulated"] = _aoti_error(Path(tmp) / "qemu" / folder)
                else:
                    row["error"] = emulated[2]
            else:
                row["same_bytes"] = native[1] == emulated[1] == 0 and native[2] == emulated[2]
                if not row["same_bytes"]:
                    row["native"], row["emulated"] = native[2], emulated[2]
            rows.append(row)
            print(json.dumps(row), flush=True)
            if name == "export:tfjs":  # the control
                default = ("TF_ENABLE_ONEDNN_OPTS",)
                native = _rerun(workdir / folder, Path(tmp) / "native" / "control", [], default)
                emulated = _rerun(workdir / folder, Path(tmp) / "qemu" / "control", qemu, default)
                control = {
                    "step": "control: export:tfjs with TensorFlow's default oneDNN rewrites",
                    "native_s": round(native[0], 1),
                    "emulated_s": round(emulated[0], 1),
                    "native_exit": native[1],
                    "emulated_exit": emulated[1],
                    "same_bytes": native[1] == emulated[1] == 0 and native[2] == emulated[2],
                }
                rows.append(control)
                print(json.dumps(control), flush=True)
    cpuinfo = Path("/proc/cpuinfo").read_text()
    result = {
        "host": {
            "cpu": next(
                (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
                "?",
            ),
            "avx512": "avx512f" in cpuinfo,
        },
        "emulated_cpu": args.cpu,
        "qemu": subprocess.run([qemu[0], "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        "model": args.model,
        "steps": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "portability.json").write_text(json.dumps(result, indent=2))
    print("| step | same bytes / runs | native s | emulated s |\n|---|---|---|---|")
    for r in rows:
        verdict = r.get("same_bytes", r.get("loads_and_runs_without_avx512"))
        print(f"| {r['step']} | {verdict} | {r['native_s']} | {r['emulated_s']} |")


if __name__ == "__main__":
    main()
