"""An ONNX model whose weights live in external data files (the only form past protobuf's 2 GB),
uploaded as a .zip or .tar of its folder: every entry and data location is checked before
anything reads one, and the weights travel beside model.onnx into every ONNX artifact."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from shipyard.errors import SourceError
from shipyard.onnx_external import data_locations
from shipyard.prepare import check_source, load_source
from shipyard.report import Status
from shipyard.source import SourceKind
from targets.pipeline import Engine, PipelineResult
from tests.conftest import run_cli, run_targets
from tests.test_bad_input import assert_refused

TARGETS = ["ort-web", "ort-web-fp16", "triton", "tfjs"]


def _save_external_model(folder: Path, location: str = "weights.bin") -> Path:
    """A conv net whose every weight is in `location` beside model.onnx (fc big enough that its
    fp16 copy stays external too)."""
    rng = np.random.default_rng(3)
    weights = [
        numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "b"),
        numpy_helper.from_array(rng.standard_normal((16, 64)).astype(np.float32) * 0.3, "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])  # IR newer than ort-web's
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path


def _relocated(model_file: Path, **external: str) -> Path:
    """Rewrite every external tensor's entries (location, offset, length) in the model file."""
    model = onnx.load_model(str(model_file), load_external_data=False)
    for tensor in model.graph.initializer:
        entries = {e.key: e.value for e in tensor.external_data} | external
        del tensor.external_data[:]
        for key, value in entries.items():
            tensor.external_data.add(key=key, value=value)
    model_file.write_bytes(model.SerializeToString())
    return model_file


def _zip_folder(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return dest


@pytest.fixture(scope="module")
def external_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("external")
    _save_external_model(root / "net")
    return _zip_folder(root / "net", root / "net.zip")


@pytest.fixture(scope="module")
def packaged(engine: Engine, external_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    spec = {"dims": {"N": {"min": 1, "max": 4}}}
    return run_targets(engine, external_zip, TARGETS, tmp_path_factory.mktemp("run"), spec)


def test_a_zip_or_tar_of_an_onnx_folder_is_an_onnx_source(external_zip: Path, tmp_path: Path) -> None:
    tar_gz = tmp_path / "net.tar.gz"
    with tarfile.open(tar_gz, "w:gz") as tar:
        tar.add(external_zip.parent / "net", arcname="net")
    for archive in (external_zip, tar_gz):
        assert check_source(archive) is SourceKind.ONNX_ARCHIVE
        assert check_source(archive, sniff=True) is SourceKind.ONNX_ARCHIVE
        source = load_source(archive)
        x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
        y = source.run(source.signature(), {"x": x})["y"]
        assert y.shape == (2, 64) and np.abs(y).max() > 0


def test_the_weights_travel_beside_every_onnx_artifact(packaged: PipelineResult) -> None:
    """ort-web (Node and Chromium get them as externalData), its fp16 rung (written external
    too), triton's model version folder; tfjs converts the loaded weights."""
    reports = packaged.reports
    assert {n for n, r in reports.items() if r.status is Status.PASSED} == set(TARGETS), {
        n: r.error for n, r in reports.items()
    }
    files = {name: [f.path for f in r.files] for name, r in reports.items()}
    assert files["ort-web"] == ["model.onnx", "weights.bin"]
    assert files["ort-web-fp16"] == ["model.onnx", "model.onnx.data"]
    assert files["triton"] == ["net/config.pbtxt", "net/1/model.onnx", "net/1/weights.bin"]
    for name in ("ort-web", "ort-web-fp16"):
        assert data_locations(packaged.artifact_dirs[name] / "model.onnx"), name  # not inlined
    for name in ("ort-web", "triton", "tfjs"):
        metrics = reports[name].metrics
        assert metrics.max_abs_err is not None and metrics.max_abs_err < 1e-4, (name, metrics)
    assert any("external data file" in note for note in reports["ort-web"].notes)
    assert any("IR version lowered" in note for note in reports["ort-web"].notes)  # checked beside its data


def _broken_archive(tmp_path: Path, **external: str) -> Path:
    model = _save_external_model(tmp_path / "net")
    _relocated(model, **external)
    return _zip_folder(tmp_path / "net", tmp_path / "net.zip")


@pytest.mark.parametrize(
    ("external", "message"),
    [
        ({"location": "../outside.bin"}, "not a plain relative file name"),
        ({"location": "/etc/hostname"}, "not a plain relative file name"),
        ({"location": "missing.bin"}, "not a file in the archive"),
        ({"location": "model.onnx"}, "the model file itself"),
        ({"length": "1000000"}, "lie outside the file"),
        ({"offset": "-4"}, "lie outside the file"),
        ({"location": "*/_ORT_MEM_ADDR_/*"}, "not a plain relative file name"),  # an address to ORT
        ({"location": "weights.ort"}, "named like a model file"),
    ],
)
def test_a_data_location_outside_the_archive_or_the_file_is_refused(
    tmp_path: Path, external: dict[str, str], message: str
) -> None:
    archive = _broken_archive(tmp_path, **external)
    with pytest.raises(SourceError, match=message) as refused:
        load_source(archive)
    assert str(refused.value).startswith(f"{archive}: ")  # the upload, not where it was unpacked


def test_external_data_in_a_model_local_function_is_found_too(tmp_path: Path) -> None:
    """Tensors hide in more places than the graph (functions, sparse attributes, training info):
    every TensorProto in the file counts, so a bare .onnx pointing anywhere is refused."""
    from shipyard.onnx_model import load_onnx

    value = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "c")
    value.ClearField("raw_data")
    value.data_location = TensorProto.EXTERNAL
    value.external_data.add(key="location", value="app.env")
    function = helper.make_function(
        "local",
        "add_c",
        ["a"],
        ["b"],
        [helper.make_node("Constant", [], ["c"], value=value), helper.make_node("Add", ["a", "c"], ["b"])],
        [helper.make_opsetid("", 18)],
    )
    graph = helper.make_graph(
        [helper.make_node("add_c", ["x"], ["y"], domain="local")],
        "uses_function",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph,
        functions=[function],
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
    )
    path = tmp_path / "function.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(SourceError, match="keep their data in external files"):
        load_onnx(path)


def test_the_cli_refuses_such_an_archive_in_one_line_and_writes_nothing(home: Path, tmp_path: Path) -> None:
    archive = _broken_archive(tmp_path, location="../../../../etc/hostname")
    assert_refused(run_cli(["package", str(archive)], home), home, "external data location", "not a plain")


def test_a_linked_data_file_or_a_second_model_is_refused(tmp_path: Path) -> None:
    model = _save_external_model(tmp_path / "net")
    linked = tmp_path / "linked.tar"
    with tarfile.open(linked, "w") as tar:
        tar.add(model, arcname="net/model.onnx")
        link = tarfile.TarInfo("net/weights.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/hostname"
        tar.addfile(link)
    with pytest.raises(SourceError, match="is a link or device"):
        load_source(linked)
    two = tmp_path / "two.tar"
    with tarfile.open(two, "w") as tar:
        for name in ("a/model.onnx", "b/model.onnx"):
            info = tarfile.TarInfo(name)
            info.size = model.stat().st_size
            tar.addfile(info, io.BytesIO(model.read_bytes()))
    with pytest.raises(SourceError, match=r"holds 2 \.onnx files"):
        check_source(two)
