"""Identify a source file by its content (never by its name)."""

from __future__ import annotations

import os
import struct
import tarfile
import zipfile
import zlib
from enum import StrEnum
from pathlib import Path

from shipyard.errors import SourceError

__all__ = ["SourceKind", "detect_kind", "holds_saved_model", "tar_members", "unsafe_entry_name"]

MAX_ARCHIVE_ENTRIES = 100_000
MAX_UNPACKED_BYTES = int(os.environ.get("SHIPYARD_MAX_UNPACKED_BYTES", 8 * 2**30))


class SourceKind(StrEnum):
    TORCH_EXPORT = "torch-export"  # torch.export.save archive (.pt2)
    AOTI_PACKAGE = "aoti-package"  # torch._inductor.aoti_compile_and_package output
    KERAS = "keras"  # Keras 3 .keras zip
    SAVED_MODEL = "saved-model"  # TensorFlow SavedModel folder (packed into a tar when checked)
    SAVED_MODEL_ARCHIVE = "saved-model-archive"  # a SavedModel in a .zip, .tar or .tar.gz
    ONNX = "onnx"


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
    if holds_saved_model(names):
        return SourceKind.SAVED_MODEL_ARCHIVE
    raise SourceError("zip archive is not a torch.export, AOTInductor, Keras or SavedModel model")


def tar_members(tar: tarfile.TarFile, path: Path) -> list[tarfile.TarInfo]:
    """The archive's entries, read one header at a time and refused past the limits, so that a
    listing of millions of entries, or a .tar.gz that inflates without end, costs neither all
    the memory nor all the time."""
    members: list[tarfile.TarInfo] = []
    unpacked = 0
    for member in tar:
        members.append(member)
        unpacked += member.size
        if len(members) > MAX_ARCHIVE_ENTRIES:
            raise SourceError(f"{path}: more than {MAX_ARCHIVE_ENTRIES:,} archive entries")
        if unpacked > MAX_UNPACKED_BYTES:
            raise SourceError(
                f"{path}: unpacks to more than {MAX_UNPACKED_BYTES:,} bytes (SHIPYARD_MAX_UNPACKED_BYTES)"
            )
    return members


def _tar_kind(path: Path) -> SourceKind:
    """A tar (or .tar.gz) holding a SavedModel; reads only the listing."""
    try:
        with tarfile.open(path) as tar:
            names = [m.name for m in tar_members(tar, path)]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SourceError(f"{path} is a damaged tar archive ({exc})") from None
    unsafe = next((n for n in names if unsafe_entry_name(n)), None)
    if unsafe is not None:
        raise SourceError(f"{path}: archive entry {unsafe[:80]!r} points outside the archive")
    if holds_saved_model(names):
        return SourceKind.SAVED_MODEL_ARCHIVE
    raise SourceError(f"{path} is a tar archive without a saved_model.pb")


def holds_saved_model(names: list[str]) -> bool:
    """Does an archive with these entry names hold a SavedModel?"""
    return any(n == "saved_model.pb" or n.endswith("/saved_model.pb") for n in names)


def unsafe_entry_name(name: str) -> bool:
    """An absolute path, a drive, a `..` step or a NUL: a name that could leave the archive."""
    parts = name.replace("\\", "/").split("/")
    drive = parts[0][1:2] == ":"  # C:... on Windows
    return name.startswith("/") or drive or ".." in parts or "\0" in name


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


def _checked_entries(path: Path) -> list[str]:
    """The entry names of a zip archive within the limits, whose every entry matches its checksum
    and stays inside it. Declared sizes bound the checksum pass: zipfile reads no more than them."""
    declared = _declared_zip_entries(path)
    if declared > MAX_ARCHIVE_ENTRIES:
        raise SourceError(f"{path}: {declared:,} archive entries, more than {MAX_ARCHIVE_ENTRIES:,}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            unsafe = next((n for n in names if unsafe_entry_name(n)), None)
            if unsafe is not None:
                raise SourceError(f"{path}: archive entry {unsafe[:80]!r} points outside the archive")
            if len(infos) > MAX_ARCHIVE_ENTRIES:
                raise SourceError(
                    f"{path}: {len(infos):,} archive entries, more than {MAX_ARCHIVE_ENTRIES:,}"
                )
            unpacked = sum(i.file_size for i in infos)
            if unpacked > MAX_UNPACKED_BYTES:
                raise SourceError(
                    f"{path}: unpacks to {unpacked:,} bytes, more than {MAX_UNPACKED_BYTES:,} "
                    "(SHIPYARD_MAX_UNPACKED_BYTES)"
                )
            damaged = zf.testzip()  # reads every entry once, checking its CRC-32
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        raise SourceError(f"{path} is a damaged zip archive ({exc})") from None
    except UnicodeDecodeError:
        raise SourceError(f"{path} is a damaged zip archive (an entry name is not valid UTF-8)") from None
    if damaged is not None:
        raise SourceError(f"{path} is a damaged zip archive (entry {damaged[:80]!r} fails its checksum)")
    return names


def detect_kind(path: Path) -> SourceKind:
    """Say what kind of model `path` holds, reading only headers and archive listings."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return SourceKind.SAVED_MODEL
        raise SourceError(f"{path} is a folder but not a TensorFlow SavedModel")
    with path.open("rb") as fh:
        head = fh.read(8)
    if not head:
        raise SourceError(f"{path} is empty")
    if head.startswith(b"PK"):
        return _zip_kind(_checked_entries(path))
    if head.startswith(b"\x1f\x8b") or _is_tar(path):
        return _tar_kind(path)
    if head[:1] == b"\x80" and head[1:2] in {bytes([p]) for p in range(2, 6)}:
        raise SourceError(
            f"{path} is a Python pickle, which can run code when loaded and is refused; "
            "save the model with torch.export.save"
        )
    if head.startswith(b"\x89HDF"):
        raise SourceError(f"{path} is a legacy Keras HDF5 file; save it as .keras instead")
    if _looks_like_onnx(path):
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
