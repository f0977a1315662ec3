"""The S3 registry through the CLI and under failure, against a real SeaweedFS."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from registry import open_registry
from shipyard.errors import RegistryError
from tests.conftest import Seaweed, parse_json, run_cli, unique_prefix
from tests.test_registry import _artifact, _draft


def test_package_publishes_to_s3_and_pull_verifies(
    models: dict[str, Path], seaweed: Seaweed, prefect_api: str, home: Path, tmp_path: Path
) -> None:
    url = f"s3://{seaweed.bucket}/{unique_prefix()}"
    result = run_cli(
        ["package", str(models["convnet"]), "--targets", "triton", "--registry", url, "--json"],
        home,
        prefect_api,
        extra_env=seaweed.env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = parse_json(result.stdout)
    pulled = run_cli(
        ["pull", "convnet@latest", "--target", "triton", "-o", str(tmp_path / "o"), "--registry", url],
        home,
        extra_env=seaweed.env,
    )
    assert pulled.returncode == 0, pulled.stderr
    for entry in report["targets"]["triton"]["files"]:
        assert hashlib.sha256((tmp_path / "o" / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    listing = run_cli(["ls", "--registry", url], home, extra_env=seaweed.env)
    assert listing.stdout.splitlines()[1].split() == ["convnet", "1", "@latest=1"]
    promoted = run_cli(["promote", "convnet:1", "prod", "--registry", url], home, extra_env=seaweed.env)
    assert promoted.returncode == 0 and "convnet@prod -> 1" in promoted.stdout
    gc = run_cli(
        ["registry", "gc", "--grace-hours", "0", "--registry", url, "--json"], home, extra_env=seaweed.env
    )
    assert gc.returncode == 0, gc.stderr
    collected = parse_json(gc.stdout)
    assert collected["trashed"] == [] and collected["restored"] == []
    assert [d["key"] for d in collected["deleted"]] == []  # the source was packaged: referenced


def test_wrong_credentials_are_a_plain_error(seaweed: Seaweed, home: Path) -> None:
    env = {**seaweed.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    result = run_cli(["ls", "--registry", f"s3://{seaweed.bucket}/x"], home, extra_env=env, timeout=120)
    assert result.returncode == 1
    assert "refused the credentials" in result.stderr and "SignatureDoesNotMatch" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_bucket_is_a_plain_error(seaweed: Seaweed, home: Path) -> None:
    result = run_cli(["ls", "--registry", "s3://no-such-bucket/x"], home, extra_env=seaweed.env, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no registry at s3://no-such-bucket/x" in lines[0]


def test_server_stopped_mid_publish_then_retry_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own SeaweedFS: stopped while a large blob uploads, restarted, publish retried."""
    server = Seaweed(tmp_path / "sw")
    server.start()
    try:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail fast once the server is gone
        registry = open_registry(f"s3://{server.bucket}/reg")
        source = tmp_path / "model.pt2"
        source.write_bytes(b"source")
        folder, entry = _artifact(tmp_path / "big", os.urandom(64 * 1024 * 1024))
        stopped = threading.Event()

        def stop_midway(sent: int) -> None:
            if sent > entry.bytes // 4 and not stopped.is_set():
                stopped.set()
                server.stop()

        with pytest.raises(RegistryError):
            registry.publish(_draft(source, entry), {"t": folder}, source, progress=stop_midway)
        assert stopped.is_set()
        server.start()
        registry = open_registry(f"s3://{server.bucket}/reg")
        assert registry.versions("m") == []
        assert registry.models() == []
        manifest = registry.publish(_draft(source, entry), {"t": folder}, source)
        assert manifest.version == 1
        _, files = registry.pull("m", "t", tmp_path / "out")
        assert hashlib.sha256(files[0].read_bytes()).hexdigest() == entry.sha256
    finally:
        server.stop()


def test_unusable_registry_fails_before_any_export(
    models: dict[str, Path], seaweed: Seaweed, home: Path
) -> None:
    result = run_cli(
        ["package", str(models["convnet"]), "--registry", "s3://no-such-bucket/x"],
        home,
        extra_env=seaweed.env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "registry not usable" in result.stderr and "no-such-bucket" in result.stderr
    assert not (home / "runs").exists()


@pytest.mark.parametrize("mb", [1, 40])  # one part, and a multipart upload
def test_a_file_changed_after_hashing_is_never_stored(
    s3_env: dict[str, str], tmp_path: Path, mb: int
) -> None:
    """The upload reuses the digest's read; S3 checks each part against the bytes that were hashed."""
    from shipyard.digests import file_digests
    from shipyard.errors import IntegrityError

    registry = open_registry(f"s3://shipyard/{unique_prefix()}")
    path = tmp_path / "model.bin"
    path.write_bytes(os.urandom(mb << 20))
    digest = file_digests(path).sha256
    stat = path.stat()
    with path.open("r+b") as fh:  # same size, same mtime, different bytes in the last part
        fh.seek(stat.st_size - 100)
        fh.write(os.urandom(100))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(IntegrityError, match="changed while uploading"):
        registry.put_blob(path, digest)
    assert not registry.backend.exists(registry.blob_key(digest))
    assert not list(registry.backend.list("blobs/"))


def test_a_prefix_is_a_folder(s3_env: dict[str, str], tmp_path: Path) -> None:
    """s3://b/reg must never list or collect what lives under s3://b/reg2."""
    from datetime import timedelta

    from registry import GcReport

    base = unique_prefix()
    near, far = open_registry(f"s3://shipyard/{base}"), open_registry(f"s3://shipyard/{base}2")
    source = tmp_path / "s.bin"
    source.write_bytes(b"source")
    folder, entry = _artifact(tmp_path, os.urandom(1000))
    far.publish(_draft(source, entry), {"t": folder}, source)
    assert near.models() == [] and far.models() == ["m"]
    assert near.gc(timedelta(0)) == GcReport(dry_run=False)
    assert far.backend.exists(far.blob_key(entry.sha256))


def test_seaweedfs_own_listeners_refuse_anyone_without_its_certificate(seaweed, s3_env) -> None:
    """Only the S3 port is for clients. The master, volume and filer listeners (HTTP and gRPC)
    need SeaweedFS's own client certificate: a plain request gets no answer of use, a TLS client
    without the certificate no handshake, so nobody rewrites blobs behind the registry."""
    import socket
    import ssl

    registry = open_registry(f"s3://{seaweed.bucket}/{unique_prefix()}")
    registry.backend.create("probe.json", b"{}")  # the S3 port works, with the S3 keys
    assert registry.backend.read("probe.json")[0] == b"{}"
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    for component in ("master", "volume", "filer"):
        for port in (seaweed.ports[component], seaweed.ports[component] + 10000):  # HTTP, gRPC
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(
                    b"PUT /buckets/shipyard/evil HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nevil"
                )
                raw.settimeout(5)
                answer = raw.recv(200)
            assert not answer.startswith(b"HTTP/1.1 2"), (component, port, answer)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # noqa: SIM117
                with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                    with context.wrap_socket(raw) as tls:
                        tls.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
                        if not tls.recv(200):
                            raise ConnectionError("closed without an answer")


def test_a_pull_in_ranged_parts_writes_the_bytes_and_refuses_a_changed_part(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    """Parts land out of order at their offsets while the hash runs in order: the file is whole,
    and a blob whose last part was changed (same size) never appears at the destination."""
    from registry._transfer import DOWNLOAD_PART_BYTES
    from shipyard.errors import IntegrityError

    registry = open_registry(f"s3://shipyard/{unique_prefix()}")
    content = os.urandom(2 * DOWNLOAD_PART_BYTES + 12345)  # two whole ranges and a short one
    source = tmp_path / "s.bin"
    source.write_bytes(b"source")
    folder, entry = _artifact(tmp_path, content)
    registry.publish(_draft(source, entry), {"t": folder}, source)
    _, files = registry.pull("m", "t", tmp_path / "out")
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == entry.sha256

    changed = bytearray(content)
    changed[-5:] = b"evil!"
    key = registry.blob_key(entry.sha256)
    registry.backend.delete(key)
    registry.backend.client.put_object(Bucket="shipyard", Key=registry.backend._key(key), Body=bytes(changed))
    with pytest.raises(IntegrityError, match="refusing"):
        registry.pull("m", "t", tmp_path / "again")
    assert [p.name for p in (tmp_path / "again").rglob("*") if p.is_file()] == []
