"""ONNX models whose weights live in external data files: the only way past protobuf's 2 GB.

`onnx.save(model, path, save_as_external_data=True)` writes the graph to one file and the
weights to files beside it; each tensor names its file (`location`), offset and length. Such a
model is a source when its folder comes packed in one archive (.zip, .tar, .tar.gz): the archive
is unpacked with every entry checked (shipyard.archive), and every location must be a plain
relative file name of a regular file in that folder, its byte range inside the file, before
anything loads the model. An ONNX loader reads a location wherever it points, so a bare .onnx
with external data (nothing beside it that was uploaded) is refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shipyard.archive import unpack_archive, unsafe_entry_name
from shipyard.errors import SourceError
from shipyard.source import onnx_entries

__all__ = [
    "copy_onnx",
    "data_locations",
    "external_data_files",
    "external_tensors",
    "onnx_bytes",
    "unpack_onnx_archive",
]


def _all_tensors(message: Any) -> Iterator[Any]:
    """Every TensorProto anywhere in a protobuf message: initializers, sparse tensors' parts,
    node attributes, subgraphs, model-local functions, training info; found by walking every
    set message field, so a place added to ONNX later is walked too."""
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        for item in value if field.is_repeated else [value]:
            if item.DESCRIPTOR.full_name == "onnx.TensorProto":
                yield item
            yield from _all_tensors(item)


def external_tensors(model: Any) -> list[Any]:
    """The tensors of `model` (loaded without its external data) that keep their data outside."""
    import onnx

    return [t for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]


def _external_data(tensor: Any) -> dict[str, str]:
    """A tensor's external data entries: location, offset, length (and checksum)."""
    return {e.key: e.value for e in tensor.external_data}


def _checked_location(tensor: Any, folder: Path, model_file: Path) -> tuple[str, int]:
    """The tensor's data file (relative to `folder`) and the byte its data ends at."""
    entries = _external_data(tensor)
    location = entries.get("location", "")
    shown = f"tensor {tensor.name[:60]!r}: external data location {location[:80]!r}"
    if not location or unsafe_entry_name(location) or any(c in location for c in "\\~*"):
        # `*/_ORT_MEM_ADDR_/*` would make ONNX Runtime read the offset as a memory address
        raise SourceError(f"{shown} is not a plain relative file name inside the model's folder")
    path = folder / location
    if path.resolve() == model_file.resolve():
        raise SourceError(f"{shown} is the model file itself")
    if location.lower().endswith((".onnx", ".ort")):  # artifacts ship model.onnx / model.ort beside it
        raise SourceError(f"{shown} is named like a model file")
    if path.is_symlink() or not path.is_file() or folder.resolve() not in path.resolve().parents:
        raise SourceError(f"{shown} is not a file in the archive")
    try:
        offset, length = int(entries.get("offset", 0)), int(entries.get("length", -1))
    except ValueError:
        raise SourceError(f"{shown}: offset/length are not integers") from None
    size = path.stat().st_size
    end = size if length < 0 else offset + length
    if offset < 0 or end > size:
        raise SourceError(f"{shown}: bytes {offset}..{end} lie outside the file's {size:,} bytes")
    return location, end


def external_data_files(model: Any, model_file: Path) -> list[str]:
    """The data files `model` (loaded without them) reads, relative to its folder, each checked:
    a plain relative name of a regular file there, every tensor's bytes inside it. SourceError
    says which tensor and location is wrong."""
    folder = model_file.parent
    return sorted({_checked_location(t, folder, model_file)[0] for t in external_tensors(model)})


def unpack_onnx_archive(source: Path, dest: Path) -> Path:
    """Unpack the archive into `dest` (entries checked) and return its one .onnx file; the
    external data locations are checked when the model is loaded (shipyard.onnx_model)."""
    unpack_archive(source, dest)
    found = onnx_entries([p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()])
    if len(found) != 1:
        raise SourceError(f"{source}: expected one .onnx file, found {len(found)}")
    return dest / found[0]


def data_locations(model_file: Path) -> list[str]:
    """The external data files an .onnx reads, relative to its folder ([] for a single file)."""
    import onnx

    model = onnx.load_model(str(model_file), load_external_data=False)
    return sorted({_external_data(t).get("location", "") for t in external_tensors(model)})


def onnx_bytes(model_file: Path) -> int:
    """The size of an ONNX model: its file and the data files it reads."""
    files = [model_file, *(model_file.parent / loc for loc in data_locations(model_file))]
    return sum(f.stat().st_size for f in files)


def copy_onnx(source: Path, dest: Path) -> list[Path]:
    """Copy an .onnx file and the external data files it reads (same relative names, beside
    `dest`); returns the files written, the model first. The locations were checked when the
    source was loaded, or were written by our own steps."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    written = [dest]
    for location in data_locations(source):
        target = dest.parent / location
        if target == dest:
            raise ValueError(f"{source}: a data file has the name the model is copied to ({dest.name})")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.parent / location, target)
        written.append(target)
    return written
