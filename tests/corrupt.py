"""Seeded corruptions of a valid archive, as an attacker or a broken disk would make them."""

from __future__ import annotations

import io
import os
import pickle
import random
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

KINDS = ("truncate", "flip", "drop", "reverse", "pickle", "dotdot", "badname")
STRUCTURAL = ("truncate", "flip", "dotdot", "badname")  # found without loading the model
LISTING = ("truncate", "dotdot", "badname")  # found from the zip's listing alone (no entry read)


class RunsShell:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


@dataclass(frozen=True)
class Corruption:
    name: str  # "07-truncate"
    kind: str
    data: bytes


def _entries(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def _corrupt(
    kind: str, data: bytes, entries: list[tuple[str, bytes]], rng: random.Random, marker: Path
) -> bytes:
    at = rng.randrange(len(entries))
    name, content = entries[at]
    before, after = entries[:at], entries[at + 1 :]
    if kind == "truncate":
        return data[: rng.randrange(1, len(data))]
    if kind == "flip":
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if kind == "drop":
        return _zip(before + after)
    if kind == "reverse":
        return _zip([*before, (name, content[::-1]), *after])
    if kind == "pickle":
        return _zip([*before, (name, pickle.dumps(RunsShell(f"touch {marker}"))), *after])
    if kind == "dotdot":
        return _zip([*before, ("../" * rng.randrange(1, 4) + name, content), *after])
    # badname: an entry name in the central directory that is not UTF-8, though flagged so
    damaged = bytearray(data)
    damaged[damaged.rfind(name.encode())] = 0xFF
    return bytes(damaged)


def corruptions(source: Path, marker: Path, count: int = 40, seed: int = 0) -> list[Corruption]:
    """`count` corrupted copies of `source`, cycling through KINDS; a pickle payload touches `marker`."""
    rng = random.Random(seed)
    data = source.read_bytes()
    entries = _entries(data)
    out = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        out.append(Corruption(f"{i:02d}-{kind}", kind, _corrupt(kind, data, entries, rng, marker)))
    return out


def with_failing_checksum(source: Path) -> bytes:
    """`source` (a zip) with one byte of its largest entry's data flipped: the listing is intact,
    only reading the entry finds it damaged."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        largest = max(archive.infolist(), key=lambda i: i.compress_size)
    header = largest.header_offset  # local header: 30 bytes, then the name and the extra field
    name_len, extra_len = struct.unpack("<HH", data[header + 26 : header + 30])
    start = header + 30 + name_len + extra_len
    data[start + largest.compress_size // 2] ^= 0x40
    return bytes(data)
