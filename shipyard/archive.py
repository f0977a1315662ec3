"""Uploaded archives (.zip, .tar, .tar.gz): listed within limits, unpacked only once every entry is checked.

One set of rules for every archive a source comes in (a SavedModel folder, an ONNX model with
external data): at most MAX_ARCHIVE_ENTRIES entries and max_unpacked_bytes() unpacked, no entry
name that could leave the folder (absolute, a drive, a `..` step, a NUL), no links or devices.
A listing is refused while it is read, so a bomb costs neither all the memory nor all the time.
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from pathlib import Path

from shipyard.errors import SourceError
from shipyard.settings import settings

__all__ = [
    "MAX_ARCHIVE_ENTRIES",
    "check_listing",
    "max_unpacked_bytes",
    "pack_folder",
    "tar_members",
    "unpack_archive",
    "unsafe_entry_name",
]

MAX_ARCHIVE_ENTRIES = 100_000


def max_unpacked_bytes() -> int:
    """$SHIPYARD_MAX_UNPACKED_BYTES, else 8 GiB."""
    return settings().max_unpacked_bytes


def unsafe_entry_name(name: str) -> bool:
    """An absolute path, a drive, a `..` step or a NUL: a name that could leave the archive."""
    parts = name.replace("\\", "/").split("/")
    drive = parts[0][1:2] == ":"  # C:... on Windows
    return name.startswith("/") or drive or ".." in parts or "\0" in name


def check_listing(names: list[str], sizes: list[int], source: Path) -> None:
    """SourceError unless the listing is within the limits and every name stays inside."""
    if len(names) > MAX_ARCHIVE_ENTRIES:
        raise SourceError(f"{source}: {len(names):,} archive entries, more than {MAX_ARCHIVE_ENTRIES:,}")
    unsafe = next((n for n in names if unsafe_entry_name(n)), None)
    if unsafe is not None:
        raise SourceError(f"{source}: archive entry {unsafe[:80]!r} points outside the archive")
    if sum(sizes) > (most := max_unpacked_bytes()):
        raise SourceError(
            f"{source}: unpacks to {sum(sizes):,} bytes, more than {most:,} (SHIPYARD_MAX_UNPACKED_BYTES)"
        )


def tar_members(tar: tarfile.TarFile, path: Path) -> list[tarfile.TarInfo]:
    """The archive's entries, read one header at a time and refused past the limits, so that a
    listing of millions of entries, or a .tar.gz that inflates without end, costs neither all
    the memory nor all the time."""
    members: list[tarfile.TarInfo] = []
    unpacked, most = 0, max_unpacked_bytes()
    for member in tar:
        members.append(member)
        unpacked += member.size
        if len(members) > MAX_ARCHIVE_ENTRIES:
            raise SourceError(f"{path}: more than {MAX_ARCHIVE_ENTRIES:,} archive entries")
        if unpacked > most:
            raise SourceError(f"{path}: unpacks to more than {most:,} bytes (SHIPYARD_MAX_UNPACKED_BYTES)")
    return members


def _unpack_tar(source: Path, dest: Path) -> None:
    try:
        with tarfile.open(source) as tar:
            members = tar_members(tar, source)
            links = [m.name for m in members if not (m.isfile() or m.isdir())]
            if links:
                raise SourceError(f"{source}: archive entry {links[0][:80]!r} is a link or device; refused")
            check_listing([m.name for m in members], [m.size for m in members], source)
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SourceError(f"{source} is a damaged tar archive ({exc})") from None


def _unpack_zip(source: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(source) as zf:
            infos = zf.infolist()
            links = [i.filename for i in infos if (i.external_attr >> 16) & 0o170000 == 0o120000]
            if links:
                raise SourceError(f"{source}: archive entry {links[0][:80]!r} is a link; refused")
            check_listing([i.filename for i in infos], [i.file_size for i in infos], source)
            zf.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error) as exc:
        raise SourceError(f"{source} is a damaged zip archive ({exc})") from None


def unpack_archive(source: Path, dest: Path) -> Path:
    """Unpack a .zip, .tar or .tar.gz into `dest` after checking every entry; returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as fh:
        zipped = fh.read(2) == b"PK"  # as shipyard.source tells a zip from a tar
    if zipped:
        _unpack_zip(source, dest)
    else:
        _unpack_tar(source, dest)
    return dest


def pack_folder(folder: Path, dest: Path) -> Path:
    """A deterministic tar of a model folder (sorted names, no owners or times)."""
    with tarfile.open(dest, "w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise SourceError(f"{folder}: {path.relative_to(folder)} is a link; a model folder has none")
            info = tar.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return dest
