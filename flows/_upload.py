"""Receive a webhook upload: its multipart body streamed once to disk, within a deadline.

The body is never kept whole: python-multipart parses it as it arrives, file fields go straight
into their own files in the upload's folder, text fields stay in memory (at most 1 MiB each).
Every raw byte also goes to a digest (the declared X-Shipyard-Content-SHA256, or the deprecated
body MAC), which the caller checks before it acts on anything parsed. A client must keep a
minimum rate: the whole body has `grace_s` plus its size at `min_rate` bytes/s, and no gap
between two chunks may exceed `grace_s`; a slower one is cut off (408), its slot freed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

__all__ = ["FILE_FIELDS", "TEXT_FIELDS", "Upload", "UploadRefused", "receive_upload"]

FILE_FIELDS = {"file": "source", "samples": "samples"}  # multipart field -> file name in the folder
TEXT_FIELDS = ("spec", "targets")
MAX_TEXT_BYTES = 1 << 20


class UploadRefused(Exception):
    """The body cannot be taken; `status` is the HTTP answer, the message its one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """What arrived: text fields, the files written, and the raw body's size and digest."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    size: int = 0
    sha256: str = ""


class _FormWriter:
    """python-multipart callbacks that write file parts to `folder` and keep text parts."""

    def __init__(self, folder: Path, upload: Upload) -> None:
        self.folder = folder
        self.upload = upload
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.name = ""
        self.text = bytearray()
        self.file: IO[bytes] | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self._grow("header_name", d[s:e]),
            "on_header_value": lambda d, s, e: self._grow("header_value", d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def _grow(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def on_part_begin(self) -> None:
        self.disposition, self.name, self.text = b"", "", bytearray()

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.name = options.get(b"name", b"").decode("latin-1")
        if self.name in self.upload.files or self.name in self.upload.fields:
            raise UploadRefused(422, f"multipart field {self.name!r} is sent twice")
        if self.name in FILE_FIELDS:
            path = self.folder / FILE_FIELDS[self.name]
            self.file = path.open("wb")
            self.upload.files[self.name] = path
        elif self.name not in TEXT_FIELDS:
            known = ", ".join([*FILE_FIELDS, *TEXT_FIELDS])
            raise UploadRefused(422, f"unexpected multipart field {self.name[:40]!r} (known: {known})")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.file is not None:
            self.file.write(data[start:end])
            return
        self.text += data[start:end]
        if len(self.text) > MAX_TEXT_BYTES:
            raise UploadRefused(422, f"multipart field {self.name!r} is larger than 1 MiB")

    def on_part_end(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        else:
            self.upload.fields[self.name] = self.text.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _boundary(request: Request) -> bytes:
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadRefused(422, "the body must be multipart/form-data (with a boundary)")
    return options[b"boundary"]


async def _next_chunk(request: Request, timeout: float) -> tuple[bytes, bool]:
    """The next body chunk and whether more follow; 408 past the deadline, ClientDisconnect."""
    try:
        message = await asyncio.wait_for(request.receive(), timeout=max(0.0, timeout))
    except TimeoutError:
        raise UploadRefused(408, "the body arrived too slowly; the upload was cut off") from None
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    return message.get("body", b""), bool(message.get("more_body", False))


async def receive_upload(
    request: Request,
    folder: Path,
    *,
    cap: int,
    over_cap: UploadRefused,
    grace_s: float,
    min_rate: float,
    on_chunk: Callable[[bytes], None] | None = None,
) -> Upload:
    """Stream the multipart body into `folder`: at most `cap` bytes (else `over_cap`), at least
    `min_rate` bytes/s."""
    loop = asyncio.get_running_loop()
    declared = request.headers.get("content-length")
    expected = int(declared) if declared and declared.isdigit() else cap
    deadline = loop.time() + grace_s + expected / min_rate
    upload = Upload()
    writer = _FormWriter(folder, upload)
    parser = MultipartParser(_boundary(request), writer.callbacks())  # type: ignore[arg-type]
    digest = hashlib.sha256()
    try:
        more = True
        while more:
            chunk, more = await _next_chunk(request, min(grace_s, deadline - loop.time()))
            upload.size += len(chunk)
            if upload.size > cap:
                raise over_cap
            digest.update(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise UploadRefused(422, "the body is not valid multipart/form-data") from None
    finally:
        writer.close()
    upload.sha256 = digest.hexdigest()
    return upload
