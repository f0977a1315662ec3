"""Identify a source file by its content (never by its name)."""

from __future__ import annotations

import os
import struct
import tarfile
import zipfile
import zlib
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from shipyard import archive
from shipyard.archive import check_listing, tar_members, unsafe_entry_name
from shipyard.errors import SourceError
from shipyard.hf_folder import holds_hf_model

__all__ = [
    "ModelClass",
    "SourceKind",
    "detect_kind",
    "holds_saved_model",
    "onnx_entries",
    "onnx_header_ir_version",
]


class ModelClass(StrEnum):
    """What a model computes, which decides what a target builds from it (Target.builds)."""

    FIXED_SHAPE = "fixed-shape"  # one forward pass over tensors whose dims the signature bounds
    CAUSAL_LM = "causal-lm"  # a decoder language model: generates token by token with a KV cache


class SourceKind(StrEnum):
    TORCH_EXPORT = "torch-export"  # torch.export.save archive (.pt2)
    AOTI_PACKAGE = "aoti-package"  # torch._inductor.aoti_compile_and_package output
    KERAS = "keras"  # Keras 3 .keras zip
    SAVED_MODEL = "saved-model"  # TensorFlow SavedModel folder (packed into a tar when checked)
    SAVED_MODEL_ARCHIVE = "saved-model-archive"  # a SavedModel in a .zip, .tar or .tar.gz
    ONNX = "onnx"
    ONNX_ARCHIVE = "onnx-archive"  # an ONNX model and its external data files in a .zip, .tar or .tar.gz
    HF_FOLDER = "hf-folder"  # a Hugging Face model folder (save_pretrained; packed into a tar when checked)
    HF_ARCHIVE = "hf-archive"  # a Hugging Face model folder in a .zip, .tar or .tar.gz

    @property
    def packed(self) -> SourceKind:
        """The kind a folder source becomes once packed into one deterministic tar (others: itself)."""
        return {
            SourceKind.SAVED_MODEL: SourceKind.SAVED_MODEL_ARCHIVE,
            SourceKind.HF_FOLDER: SourceKind.HF_ARCHIVE,
        }.get(self, self)


def _zip_kind(names: list[str]) -> SourceKind:
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names) and not any(
        "/models/" in n or n.startswith("models/") for n in names
    ):
        raise SourceError(
            "this is a torch.save pickle checkpoint, which can run code when loaded and is "
            "refused; save the model with torch.export.save(torch.export.export(model, args), "
            "'model.pt2')"
        )
    if any("aotinductor/" in n for n in names):
        return SourceKind.AOTI_PACKAGE
    if any(n.endswith("archive_format") for n in names) and any("/models/" in n for n in names):
        return SourceKind.TORCH_EXPORT
    if {"config.json", "metadata.json"} <= set(names):
        return SourceKind.KERAS
    return _folder_kind(
        names,
        "zip archive is not a torch.export, AOTInductor, Keras, SavedModel, ONNX or Hugging Face model",
    )


def _tar_kind(path: Path) -> SourceKind:
    """A tar (or .tar.gz) holding a SavedModel or an ONNX model; reads only the listing."""
    try:
        with tarfile.open(path) as tar:
            members = tar_members(tar, path)
        names = [m.name for m in members]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SourceError(f"{path} is a damaged tar archive ({exc})") from None
    unsafe = next((n for n in names if unsafe_entry_name(n)), None)
    if unsafe is not None:
        raise SourceError(f"{path}: archive entry {unsafe[:80]!r} points outside the archive")
    files = [m.name for m in members if not m.isdir()]  # a folder named x.onnx is no model
    return _folder_kind(
        files,
        f"{path} is a tar archive without a saved_model.pb, an .onnx file or a Hugging Face model folder",
    )


def _folder_kind(names: list[str], otherwise: str) -> SourceKind:
    """The kind of a model folder packed in an archive: a SavedModel, or one ONNX model (whose
    external data files are beside it)."""
    if holds_saved_model(names):
        return SourceKind.SAVED_MODEL_ARCHIVE
    if holds_hf_model(names):  # before ONNX: a Hub folder may carry an onnx/ export beside its weights
        return SourceKind.HF_ARCHIVE
    models = onnx_entries(names)
    if len(models) > 1:
        shown = ", ".join(repr(n[:60]) for n in models[:3])
        raise SourceError(f"the archive holds {len(models)} .onnx files ({shown}); pack one model's folder")
    if models:
        return SourceKind.ONNX_ARCHIVE
    raise SourceError(otherwise)


def onnx_entries(names: list[str]) -> list[str]:
    """The entries of an archive that are ONNX models (`.onnx`), macOS's resource forks aside."""
    return sorted(
        n
        for n in names
        if n.lower().endswith(".onnx") and not n.startswith("__MACOSX/") and "/._" not in f"/{n}"
    )


def holds_saved_model(names: list[str]) -> bool:
    """Does an archive with these entry names hold a SavedModel?"""
    return any(n == "saved_model.pb" or n.endswith("/saved_model.pb") for n in names)


def _declared_zip_entries(path: Path) -> int:
    """The entry count a zip's end record declares (zip64 too), read before zipfile builds its
    whole directory in memory; 0 if there is no end record (zipfile then says what is wrong)."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - (1 << 16) - 22))
        tail = fh.read()
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or end + 22 > len(tail):
        return 0
    entries = int(struct.unpack("<H", tail[end + 10 : end + 12])[0])
    locator = end - 20
    if entries == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        with path.open("rb") as fh:
            fh.seek(int(struct.unpack("<Q", tail[locator + 8 : locator + 16])[0]))
            record = fh.read(56)
        if record[:4] == b"PK\x06\x06" and len(record) == 56:
            entries = int(struct.unpack("<Q", record[32:40])[0])
    return entries


def _checked_entries(path: Path, checksums: bool = True) -> list[str]:
    """The entry names of a zip archive within the limits, whose every entry stays inside it and
    (with `checksums`) matches its checksum. Declared sizes bound the checksum pass: zipfile reads
    no more than them."""
    declared = _declared_zip_entries(path)
    if declared > archive.MAX_ARCHIVE_ENTRIES:
        raise SourceError(f"{path}: {declared:,} archive entries, more than {archive.MAX_ARCHIVE_ENTRIES:,}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            check_listing(names, [i.file_size for i in infos], path)
            damaged = zf.testzip() if checksums else None  # reads every entry once: its CRC-32
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        raise SourceError(f"{path} is a damaged zip archive ({exc})") from None
    except RuntimeError as exc:  # an entry flagged encrypted: zipfile wants a password
        raise SourceError(f"{path} is a damaged or encrypted zip archive ({exc})") from None
    except UnicodeDecodeError:
        raise SourceError(f"{path} is a damaged zip archive (an entry name is not valid UTF-8)") from None
    if damaged is not None:
        raise SourceError(f"{path} is a damaged zip archive (entry {damaged[:80]!r} fails its checksum)")
    return names


def detect_kind(path: Path, thorough: bool = True) -> SourceKind:
    """Say what kind of model `path` holds, reading only headers and archive listings.

    `thorough` also reads every zip entry once (its checksum) and parses an ONNX file whole;
    without it (the webhook's door check) nothing is inflated and no more than a few header
    bytes per field are read, so the cost does not grow with what the file claims to hold.
    """
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return SourceKind.SAVED_MODEL
        if holds_hf_model([p.name for p in path.iterdir() if p.is_file()]):
            return SourceKind.HF_FOLDER
        raise SourceError(
            f"{path} is a folder but not a TensorFlow SavedModel or a Hugging Face model folder "
            "(config.json and .safetensors weights)"
        )
    with path.open("rb") as fh:
        head = fh.read(8)
    if not head:
        raise SourceError(f"{path} is empty")
    if head.startswith(b"PK"):
        return _zip_kind(_checked_entries(path, checksums=thorough))
    if head.startswith(b"\x1f\x8b") or _is_tar(path):
        return _tar_kind(path)
    if head[:1] == b"\x80" and head[1:2] in {bytes([p]) for p in range(2, 6)}:
        raise SourceError(
            f"{path} is a Python pickle, which can run code when loaded and is refused; "
            "save the model with torch.export.save"
        )
    if head.startswith(b"\x89HDF"):
        raise SourceError(f"{path} is a legacy Keras HDF5 file; save it as .keras instead")
    if _looks_like_onnx(path) if thorough else _onnx_header(path):
        return SourceKind.ONNX
    raise SourceError(f"{path} is not a recognized model (torch.export .pt2, .keras, ONNX, SavedModel)")


def _is_tar(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(257)
        return fh.read(5) == b"ustar"


def _looks_like_onnx(path: Path) -> bool:
    try:
        import onnx  # optional: only to recognize the format

        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:
        return False
    return model.ir_version > 0 and len(model.graph.node) > 0


_ONNX_WIRE_TYPES = {0: "varint", 1: "fixed64", 2: "length", 5: "fixed32"}
_ONNX_GRAPH_FIELD = 7
_MAX_HEADER_FIELDS = 4096


def _varint(fh: BinaryIO) -> int | None:
    value = 0
    for shift in range(0, 64, 7):
        byte = fh.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
    return None


def _onnx_header(path: Path) -> bool:
    return onnx_header_ir_version(path) is not None


def onnx_header_ir_version(path: Path) -> int | None:
    """The IR version of an ONNX ModelProto read from its top-level fields alone: a plausible
    ir_version (field 1) and a graph (field 7), every field well formed and inside the file; None
    otherwise. Seeks past field contents, so it reads a few bytes per field whatever their size
    (the prepare step parses the whole file)."""
    size = path.stat().st_size
    ir_version, graph = 0, False
    with path.open("rb") as fh:
        for _ in range(_MAX_HEADER_FIELDS):
            if fh.tell() == size:
                return ir_version if 0 < ir_version < 100 and graph else None
            key = _varint(fh)
            if key is None or key >> 3 == 0 or (key & 7) not in _ONNX_WIRE_TYPES:
                return None
            number, wire = key >> 3, key & 7
            if wire == 0:
                value = _varint(fh)
                if value is None:
                    return None
                ir_version = value if number == 1 else ir_version
                continue
            length = {1: 8, 5: 4}.get(wire) or _varint(fh)
            if length is None or fh.tell() + length > size:
                return None
            graph = graph or (number == _ONNX_GRAPH_FIELD and wire == 2 and length > 0)
            fh.seek(length, os.SEEK_CUR)
    return None
