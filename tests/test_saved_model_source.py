"""A TensorFlow SavedModel as the source: a folder, a .zip or a .tar.gz of one, unpacked safely;
graphs that touch files are refused without running."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from shipyard.report import Status
from shipyard.source import SourceKind
from targets.pipeline import Engine, PipelineResult, check_request
from tests.conftest import run_cli, run_targets
from tests.models import (
    save_disguised_saver_call,
    save_saved_model,
    save_tf1_main_op_saver,
    save_writing_saved_model,
)
from tests.test_bad_input import assert_refused


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_saved_model(tmp_path_factory.mktemp("sm") / "mlp_saved_model")


@pytest.fixture(scope="module")
def packaged(engine: Engine, folder: Path, tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    return run_targets(engine, folder, [], tmp_path_factory.mktemp("run"), {"dims": {"batch": {"max": 6}}})


def test_a_saved_model_folder_builds_four_targets(packaged: PipelineResult) -> None:
    states = {n: r.status for n, r in packaged.reports.items()}
    assert {n for n, s in states.items() if s is Status.PASSED} == {
        "litert-int4",
        "tfjs",
        "ort-web",
        "triton",
    }, {n: r.error for n, r in packaged.reports.items()}
    assert states["executorch"] is Status.SKIPPED and states["aoti"] is Status.SKIPPED
    assert [t.name for t in packaged.signature.inputs] == ["features"]
    assert packaged.signature.inputs[0].shape == ["batch", 24]
    assert "convert:saved-model" in {s.step for s in packaged.steps}  # the checked unpack


def test_a_folder_is_packed_into_one_deterministic_tar(folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "home"))
    first, again = check_request(folder, None, "ort-web"), check_request(folder, None, "ort-web")
    assert first.source_kind is SourceKind.SAVED_MODEL_ARCHIVE
    assert first.source == again.source and first.source_sha256 == again.source_sha256
    assert first.source.name == f"{first.source_sha256}.tar" and first.model_name == "mlp_saved_model"


def _zip_of(folder: Path, path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, f"model/{file.relative_to(folder).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def _tar_gz_of(folder: Path, path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="model")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("pack", [_zip_of, _tar_gz_of], ids=["zip", "tar.gz"])
def test_an_archived_saved_model_is_detected_by_content(
    engine: Engine, folder: Path, tmp_path: Path, pack
) -> None:
    source = pack(folder, tmp_path / "upload.bin")  # no telling name
    result = run_targets(engine, source, ["ort-web"], tmp_path / "run")
    assert result.request.source_kind is SourceKind.SAVED_MODEL_ARCHIVE
    assert result.reports["ort-web"].status is Status.PASSED, result.reports["ort-web"].error


@pytest.mark.parametrize("pack", [_zip_of, _tar_gz_of], ids=["zip", "tar.gz"])
def test_archive_entries_leaving_the_folder_are_refused_and_nothing_is_written(
    home: Path, folder: Path, tmp_path: Path, pack
) -> None:
    inside = tmp_path / "a" / "b"
    inside.mkdir(parents=True)
    source = pack(folder, inside / "evil.bin", {"../../escaped.txt": b"out"})
    assert_refused(run_cli(["package", str(source)], home), home, "points outside the archive")
    assert not (tmp_path / "escaped.txt").exists() and not list(tmp_path.rglob("escaped.txt"))


def test_a_graph_that_writes_files_is_refused_without_running(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "the-graph-ran"
    source = save_writing_saved_model(tmp_path / "writer", marker)
    assert_refused(run_cli(["package", str(source)], home), home, "WriteFile", "refused without running")
    assert not marker.exists()


@pytest.mark.parametrize(
    "craft",
    [
        lambda folder, prefix: save_tf1_main_op_saver(folder, prefix),
        lambda folder, prefix: save_tf1_main_op_saver(folder, prefix, use_own_saver=True),
        save_disguised_saver_call,
    ],
    ids=["tf1-main-op-saves", "tf1-main-op-runs-the-saver", "tf2-call-named-like-the-saver"],
)
def test_checkpoint_ops_outside_the_models_own_saver_are_refused_and_write_nothing(
    home: Path, tmp_path: Path, craft
) -> None:
    """Checkpoint ops are exempt only in the saver the loader feeds the model's own variables path:
    not in a main op (saving to a path of the uploader's choice, or running the real saver with its
    default filename), nor in a serving-time call to a function named like TensorFlow's saver."""
    prefix = tmp_path / "written-by-the-upload"
    source = craft(tmp_path / "crafted", prefix)
    before = {p.name for p in tmp_path.iterdir()}
    assert_refused(
        run_cli(["package", str(source)], home), home, "SaveV2", "own saver", "refused without running"
    )
    assert {p.name for p in tmp_path.iterdir()} == before  # nothing written beside the model
    assert not [p for p in home.rglob("*") if p.name.startswith(("written-by", "model.", "model_temp"))]


def test_a_saved_model_folder_with_a_link_is_refused(home: Path, folder: Path, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    shutil.copytree(folder, linked)
    (linked / "assets").mkdir(exist_ok=True)
    (linked / "assets" / "passwd").symlink_to("/etc/passwd")
    assert_refused(run_cli(["package", str(linked)], home), home, "is a link")
    assert not list((home / "sources").glob("*"))  # no partial tar left behind


def test_a_file_op_outside_the_serving_function_is_refused_too(home: Path, tmp_path: Path) -> None:
    """A lookup table read from a text file at load time: its initializer is not part of the
    serving signature, and loading would run it; the whole SavedModel is checked."""
    import tensorflow as tf

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")

    class Lookup(tf.Module):
        def __init__(self) -> None:
            init = tf.lookup.TextFileInitializer(
                str(vocab),
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
            )
            self.table = tf.lookup.StaticHashTable(init, default_value=-1)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
        def serve(self, words: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"ids": self.table.lookup(words)}

    module = Lookup()
    folder = tmp_path / "lookup"
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    assert_refused(run_cli(["package", str(folder)], home), home, "InitializeTableFromTextFile")


def _tar_gz(path: Path, entries: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_archive_listing_past_the_entry_limit_is_refused_while_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shipyard.archive
    import shipyard.source
    from shipyard.errors import SourceError

    monkeypatch.setattr(shipyard.archive, "MAX_ARCHIVE_ENTRIES", 10)
    many = _tar_gz(tmp_path / "many.tar.gz", {"m/saved_model.pb": b"x", **{f"m/{i}": b"" for i in range(40)}})
    read: list[str] = []
    original = tarfile.TarFile.next

    def counting_next(self: tarfile.TarFile) -> tarfile.TarInfo | None:
        member = original(self)
        if member is not None:
            read.append(member.name)
        return member

    monkeypatch.setattr(tarfile.TarFile, "next", counting_next)
    with pytest.raises(SourceError, match="more than 10 archive entries"):
        shipyard.source.detect_kind(many)
    assert len(set(read)) == 11  # stopped at the first entry past the limit, not after listing all 41


def test_a_tar_gz_that_inflates_past_the_limit_is_refused(home: Path, tmp_path: Path) -> None:
    """A few KB of gzip that lists 64 MB of zeros: refused while the listing is read."""
    bomb = _tar_gz(tmp_path / "bomb.tar.gz", {"m/saved_model.pb": b"x", "m/zeros": bytes(64 * 2**20)})
    assert bomb.stat().st_size < 2**20
    limited = run_cli(["package", str(bomb)], home, extra_env={"SHIPYARD_MAX_UNPACKED_BYTES": str(2**20)})
    assert_refused(limited, home, "unpacks to more than 1,048,576 bytes")


def test_zip_sources_past_the_limits_are_refused_before_they_are_read(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shipyard.archive
    import shipyard.source
    from shipyard.errors import SourceError

    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(40):
            zf.writestr(f"m/{i}", b"")
    monkeypatch.setattr(shipyard.archive, "MAX_ARCHIVE_ENTRIES", 10)
    monkeypatch.setattr(zipfile.ZipFile, "__init__", None)  # the end record alone must refuse it
    with pytest.raises(SourceError, match="40 archive entries, more than 10"):
        shipyard.source.detect_kind(many)
    monkeypatch.undo()
    bomb = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/archive_format", b"pt2")
        zf.writestr("m/models/zeros", bytes(64 * 2**20))
    assert bomb.stat().st_size < 2**20
    limited = run_cli(["package", str(bomb)], home, extra_env={"SHIPYARD_MAX_UNPACKED_BYTES": str(2**20)})
    assert_refused(limited, home, "unpacks to 67,108,867 bytes, more than 1,048,576")


def test_tfjs_outputs_keyed_by_frozen_tensor_names_get_the_signature_keys_back() -> None:
    """tensorflowjs keys a dict-valued signature's outputs by the frozen graph's tensor names
    (all but the first, for Basic Pitch's SavedModel); TensorFlow flattens a dict by sorted key."""
    from exporters.savedmodel2tfjs import _outputs_by_name

    outputs = {
        "contour": {"name": "Identity:0"},
        "Identity_2:0": {"name": "Identity_2:0"},
        "Identity_1:0": {"name": "Identity_1:0"},
    }
    renamed = _outputs_by_name(outputs, ["onset", "contour", "note"])
    assert {key: spec["name"] for key, spec in renamed.items()} == {
        "contour": "Identity:0",
        "note": "Identity_1:0",
        "onset": "Identity_2:0",
    }
    positional = _outputs_by_name({"output_1": {"name": "b"}, "output_0": {"name": "a"}}, ["y", "x"])
    assert {key: spec["name"] for key, spec in positional.items()} == {"y": "a", "x": "b"}
    with pytest.raises(ValueError, match="match neither"):
        _outputs_by_name({"logits": {"name": "dense/BiasAdd:0"}}, ["probs"])
