"""S3 transfers that never read a file twice and check every byte on the way.

Upload: the file's sha256 and per-part CRC32s come from the read that hashed it for the
report (shipyard.digests remembers them while the file is unchanged). Each part is sent with
its CRC32, which S3 checks on arrival and refuses with BadDigest when the bytes differ from
the ones that were hashed; any failure aborts the multipart upload, so nothing is stored.
Download: ranged GETs in parallel, each part written at its offset as it lands and hashed in
order, so the file's sha256 is known when the last byte lands.

boto3's transfer manager cannot do either (it checks nothing the caller can see), which cost
publish and pull a second full read and hash of the file. At most five parts are in memory at
once (about 80 MB either way).
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shipyard.digests import PART_BYTES, file_digests

__all__ = ["download_hashed", "upload_checked"]

CONCURRENCY = 4  # parts in flight per upload
DOWNLOAD_PART_BYTES = 16 * 1024 * 1024  # ranged GETs: 4 x 16 MB cost the least CPU (registry_bench)
DOWNLOAD_CONCURRENCY = 4  # 8 threads cost 40% more CPU on 2 cores (GIL hand-offs) for no speed


def _b64_crc32(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def _parts(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(PART_BYTES):
            yield chunk


def _confirmed(response: dict[str, Any], checksum: str, what: str) -> None:
    """An endpoint that checked the CRC32 says so; one that ignores checksums checks nothing."""
    if response.get("ChecksumCRC32") != checksum:
        raise OSError(f"the S3 endpoint did not confirm the CRC32 of {what}: it does not check uploads")


def upload_checked(
    client: Any, bucket: str, key: str, path: Path, sha256: str, progress: Callable[[int], None] | None
) -> str | None:
    """Upload `path` to bucket/key; returns None when stored, or the digest the file really has.

    S3 refuses (BadDigest) a part whose bytes differ from the ones that were hashed.
    """
    digests = file_digests(path)
    if digests.sha256 != sha256:
        return digests.sha256
    if digests.size <= PART_BYTES:
        data = path.read_bytes()
        crc = _b64_crc32(digests.part_crc32[0] if digests.part_crc32 else zlib.crc32(b""))
        stored = client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumCRC32=crc)
        _confirmed(stored, crc, key)
        if progress:
            progress(len(data))
        return None
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32")["UploadId"]
    try:
        parts = _upload_parts(client, bucket, key, upload_id, path, digests.part_crc32, progress)
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return None


def _upload_parts(
    client: Any,
    bucket: str,
    key: str,
    upload_id: str,
    path: Path,
    crcs: tuple[int, ...],
    progress: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    """Send every part, CONCURRENCY at a time, each with the CRC32 its bytes had when hashed."""

    def send(number: int, data: bytes) -> dict[str, Any]:
        checksum = _b64_crc32(crcs[number - 1])
        sent = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, ChecksumCRC32=checksum
        )
        _confirmed(sent, checksum, f"{key} part {number}")
        return {"PartNumber": number, "ETag": sent["ETag"], "ChecksumCRC32": checksum}

    parts: list[dict[str, Any]] = []
    in_flight: deque[tuple[Future[dict[str, Any]], int]] = deque()
    sent_bytes = 0
    with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="s3-upload") as pool:
        for number, data in enumerate(_parts(path), start=1):
            if number > len(crcs):
                raise OSError(f"{path} grew while uploading")
            in_flight.append((pool.submit(send, number, data), len(data)))
            while len(in_flight) > CONCURRENCY:
                sent_bytes += _collect(in_flight, parts, progress, sent_bytes)
        while in_flight:
            sent_bytes += _collect(in_flight, parts, progress, sent_bytes)
    if len(parts) != len(crcs):
        raise OSError(f"{path} shrank while uploading")
    return parts


def _collect(
    in_flight: deque[tuple[Future[dict[str, Any]], int]],
    parts: list[dict[str, Any]],
    progress: Callable[[int], None] | None,
    sent_so_far: int,
) -> int:
    future, size = in_flight.popleft()
    parts.append(future.result())
    if progress:
        progress(sent_so_far + size)
    return size


def download_hashed(client: Any, bucket: str, key: str, path: Path, size: int) -> str:
    """Write bucket/key (of `size` bytes) to `path`; returns the sha256 of what was written.

    Each part is written at its offset by the thread that fetched it, as soon as it lands, while
    this thread hashes the parts in order: the disk's write-back and the hash overlap instead of
    taking turns (a write can stall for a second while the kernel flushes dirty pages).
    """
    digest = hashlib.sha256()
    if size <= DOWNLOAD_PART_BYTES:
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        digest.update(data)
        path.write_bytes(data)
        return digest.hexdigest()

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def fetch(start: int) -> bytes:
        end = min(start + DOWNLOAD_PART_BYTES, size) - 1
        data: bytes = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")["Body"].read()
        if len(data) != end - start + 1:
            raise OSError(f"{key}: got {len(data)} bytes for range {start}-{end}")
        _write_at(fd, data, start)
        return data

    try:
        starts = iter(range(0, size, DOWNLOAD_PART_BYTES))
        with ThreadPoolExecutor(max_workers=DOWNLOAD_CONCURRENCY, thread_name_prefix="s3-download") as pool:
            in_flight = deque(
                pool.submit(fetch, s) for _, s in zip(range(DOWNLOAD_CONCURRENCY + 1), starts, strict=False)
            )
            try:
                while in_flight:
                    data = in_flight.popleft().result()
                    next_start = next(starts, None)
                    if next_start is not None:
                        in_flight.append(pool.submit(fetch, next_start))
                    digest.update(data)
            except BaseException:
                for pending in in_flight:
                    pending.cancel()
                raise
    finally:
        os.close(fd)
    return digest.hexdigest()


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
