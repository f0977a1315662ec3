"""The registry on both backends (local folder, real SeaweedFS S3): one suite, same semantics."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from registry import (
    Registry,
    RunInfo,
    SourceInfo,
    VersionDraft,
    VersionManifest,
    fetch_source,
    open_registry,
    parse_ref,
)
from shipyard.digests import sha256_file
from shipyard.errors import AlreadyExists, Conflict, InputError, IntegrityError, NotFound, RegistryError
from shipyard.report import FileEntry, RunReport, Status, TargetReport
from shipyard.signature import Signature, TensorSpec
from tests.conftest import unique_prefix


def _artifact(tmp: Path, content: bytes) -> tuple[Path, FileEntry]:
    folder = tmp / "artifact"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    path = folder / "sub" / "model.bin"
    path.write_bytes(content)
    return folder, FileEntry(path="sub/model.bin", sha256=sha256_file(path), bytes=len(content))


def _draft(source: Path, entry: FileEntry, model: str = "m", spec: dict | None = None) -> VersionDraft:
    return VersionDraft(
        model=model,
        source=SourceInfo(
            sha256=sha256_file(source), kind="torch-export", bytes=source.stat().st_size, filename=source.name
        ),
        spec=spec or {},
        signature=Signature(
            inputs=[TensorSpec(name="x", dtype="float32", shape=[1])],
            outputs=[TensorSpec(name="y", dtype="float32", shape=[1])],
        ),
        toolchain={"torch": "2.13.0"},
        run=RunInfo(run_id="r", shipyard_version="0"),
        targets={
            "t": TargetReport(status=Status.PASSED, files=[entry]),
            "bad": TargetReport(status=Status.FAILED, error="gate max_abs_err failed"),
        },
    )


@pytest.fixture(params=["local", "s3"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return (tmp_path / "reg").as_uri()
    request.getfixturevalue("s3_env")
    return f"s3://shipyard/{unique_prefix()}"


@pytest.fixture
def setup(tmp_path: Path, registry_url: str):
    source = tmp_path / "model.pt2"
    source.write_bytes(b"source-bytes")
    folder, entry = _artifact(tmp_path, b"artifact-bytes" * 100)
    return open_registry(registry_url), source, folder, entry


def _tamper(registry, digest: str) -> None:
    key = registry.blob_key(digest)
    registry.backend.delete(key)
    registry.backend.create(key, b"evil")


def test_publish_layout_and_pull(setup, tmp_path: Path) -> None:
    registry, source, folder, entry = setup
    manifest = registry.publish(_draft(source, entry), {"t": folder, "bad": folder}, source)
    assert manifest.version == 1
    keys = {key for key, _ in registry.backend.list("")}
    assert {
        f"blobs/sha256/{entry.sha256}",
        f"blobs/sha256/{manifest.source.sha256}",
        "models/m/versions/1.json",
        "models/m/aliases/latest.json",
    } <= keys
    assert registry.backend.read(f"blobs/sha256/{entry.sha256}")[0] == b"artifact-bytes" * 100
    assert registry.aliases("m") == {"latest": 1}
    _, files = registry.pull("m", "t", tmp_path / "out")
    assert files == [tmp_path / "out/sub/model.bin"]
    assert files[0].read_bytes() == b"artifact-bytes" * 100
    with pytest.raises(NotFound, match="target 'bad' failed"):
        registry.pull("m:1", "bad", tmp_path / "out2")


def test_versions_are_immutable_and_increase(setup) -> None:
    registry, source, folder, entry = setup
    v1 = registry.publish(_draft(source, entry), {"t": folder}, source)
    v2 = registry.publish(_draft(source, entry, spec={"seed": 1}), {"t": folder}, source)
    assert (v1.version, v2.version) == (1, 2)
    with pytest.raises(AlreadyExists):
        registry.backend.create(registry.version_key("m", 1), b"{}")
    assert registry.resolve("m").version == 2
    assert registry.resolve("m:1").version == 1


def test_alias_compare_and_swap(setup) -> None:
    registry, source, folder, entry = setup
    registry.publish(_draft(source, entry), {"t": folder}, source)
    registry.publish(_draft(source, entry, spec={"seed": 1}), {"t": folder}, source)
    registry.set_alias("m", "prod", 1)
    assert registry.resolve("m@prod").version == 1
    key = registry.alias_key("m", "prod")
    _, etag = registry.backend.read(key)
    registry.set_alias("m", "prod", 2)
    with pytest.raises(Conflict):
        registry.backend.replace(key, b"{}", etag)  # stale ETag loses
    with pytest.raises(NotFound):
        registry.set_alias("m", "prod", 9)


def test_tampered_blob_is_refused(setup, tmp_path: Path) -> None:
    registry, source, folder, entry = setup
    registry.publish(_draft(source, entry), {"t": folder}, source)
    _tamper(registry, entry.sha256)
    with pytest.raises(IntegrityError, match="refusing"):
        registry.pull("m", "t", tmp_path / "out")
    assert not (tmp_path / "out/sub/model.bin").exists()


def test_a_changed_source_blob_is_refused_when_fetched_for_a_rerun(setup, tmp_path: Path) -> None:
    """The nightly packages a version's source again from blobs/: fetched, it is hashed first."""
    registry, source, folder, entry = setup
    manifest = registry.publish(_draft(source, entry), {"t": folder}, source)
    uri = f"{registry.url.rstrip('/')}/{registry.blob_key(manifest.source.sha256)}"
    assert fetch_source(uri, tmp_path / "ok").read_bytes() == b"source-bytes"
    _tamper(registry, manifest.source.sha256)
    with pytest.raises(IntegrityError, match="does not match its digest name"):
        fetch_source(uri, tmp_path / "tampered")


def test_manifest_with_path_escape_is_refused(setup, tmp_path: Path) -> None:
    registry, source, folder, entry = setup
    evil = entry.model_copy(update={"path": "../../escaped.bin"})
    with pytest.raises(IntegrityError, match="unsafe path"):
        registry.publish(_draft(source, evil), {"t": folder}, source)
    assert registry.models() == []
    # A manifest written behind the registry's back is refused on pull too.
    registry.put_blob(folder / entry.path, entry.sha256)
    draft = _draft(source, evil)
    manifest = VersionManifest(
        **draft.model_dump(), version=1, created_at="2026-11-25", identity=draft.identity_digest()
    )
    registry.backend.create(registry.version_key("m", 1), manifest.model_dump_json().encode())
    with pytest.raises(IntegrityError, match="unsafe path"):
        registry.pull("m:1", "t", tmp_path / "deep/out")
    assert not (tmp_path / "escaped.bin").exists()


def test_bad_refs() -> None:
    assert parse_ref("m") == ("m", None, "latest")
    assert parse_ref("m:3") == ("m", 3, None)
    assert parse_ref("m@prod") == ("m", None, "prod")
    assert parse_ref("ConvNet:2") == ("convnet", 2, None)  # names are lowercased, as everywhere
    for ref in ("../m", "m:x", "m@../x", "m:1@a", "m@prod\n", "m\n", " m"):
        with pytest.raises(InputError):
            parse_ref(ref)


def test_keys_cannot_escape_root(registry_url: str) -> None:
    registry = open_registry(registry_url)
    with pytest.raises(RegistryError):
        registry.backend.read("../outside.json")


def test_registry_url_forms(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        open_registry("file://host/path")
    with pytest.raises(InputError):
        open_registry("ftp://x/y")


def _publish_once(
    root: str, source: str, folder: str, entry_json: str, seed: int, out: multiprocessing.Queue
) -> None:
    registry = open_registry(root)
    entry = FileEntry.model_validate_json(entry_json)
    draft = _draft(Path(source), entry, spec={"seed": seed})
    out.put(registry.publish(draft, {"t": Path(folder)}, Path(source)).version)


def test_concurrent_publishers_get_distinct_versions(setup) -> None:
    registry, source, folder, entry = setup
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_publish_once,
            args=(registry.url, str(source), str(folder), entry.model_dump_json(), seed, queue),
        )
        for seed in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    versions = sorted(queue.get(timeout=10) for _ in procs)
    assert versions == [1, 2, 3, 4, 5, 6]
    assert registry.versions("m") == versions
    assert registry.aliases("m") == {"latest": 6}


def test_same_publish_twice_returns_the_existing_version(setup) -> None:
    registry, source, folder, entry = setup
    first = registry.publish(_draft(source, entry), {"t": folder}, source)
    again = registry.publish(_draft(source, entry), {"t": folder}, source)
    assert again.version == first.version == 1
    assert registry.versions("m") == [1]
    other = registry.publish(_draft(source, entry, spec={"seed": 9}), {"t": folder}, source)
    assert other.version == 2


def test_a_target_that_passes_after_crashing_makes_a_new_version(setup) -> None:
    """Run 1: "bad" crashed (crashes are not cached); run 2: it passes. Run 2 is a new version
    that holds it, so `pull --target bad` finds it; run 2 again is the same version."""
    registry, source, folder, entry = setup
    first = registry.publish(_draft(source, entry), {"t": folder}, source)
    passed = _draft(source, entry)
    passed.targets["bad"] = TargetReport(status=Status.PASSED, files=[entry])
    second = registry.publish(passed, {"t": folder, "bad": folder}, source)
    assert (first.version, second.version) == (1, 2)
    assert second.targets["bad"].status is Status.PASSED
    assert registry.publish(passed, {"t": folder, "bad": folder}, source).version == 2


def _keys(items) -> list[str]:
    return [i.key for i in items]


def test_gc_removes_only_old_unreferenced_blobs(setup, tmp_path: Path) -> None:
    registry, source, folder, entry = setup
    registry.publish(_draft(source, entry), {"t": folder}, source)
    orphan = tmp_path / "orphan.bin"
    orphan.write_bytes(b"left by a publisher that crashed")
    digest = sha256_file(orphan)
    registry.put_blob(orphan, digest)
    assert registry.gc(timedelta(hours=1)).trashed == []  # too young: a publish may still be in progress
    time.sleep(1.5)
    dry = registry.gc(timedelta(seconds=0), dry_run=True)
    assert _keys(dry.trashed) == [registry.blob_key(digest)]
    assert registry.backend.exists(registry.blob_key(digest))
    assert _keys(registry.gc(timedelta(seconds=0)).trashed) == [registry.blob_key(digest)]
    assert not registry.backend.exists(registry.blob_key(digest))
    assert registry.backend.exists(registry.trash_key(digest))  # not gone yet: a publish may want it
    assert registry.gc(timedelta(hours=1)).deleted == []  # in the trash for less than the grace period
    time.sleep(1.5)
    assert _keys(registry.gc(timedelta(seconds=0)).deleted) == [registry.trash_key(digest)]
    assert not list(registry.backend.list("trash/"))
    _, files = registry.pull("m", "t", tmp_path / "out")  # referenced blobs survive
    assert files[0].read_bytes() == b"artifact-bytes" * 100


class GcWhenReused:
    """The real backend, and a real gc (of another registry object) at the worst moment: right
    after a publish found that a blob it needs is there already, so it will not upload it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.collected = None

    def exists(self, key: str) -> bool:
        found = self.inner.exists(key)
        if found and key.startswith("blobs/") and self.collected is None:
            self.collected = Registry(self.inner).gc(timedelta(0))
        return found

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_gc_racing_a_publish_loses_nothing(setup, tmp_path: Path) -> None:
    registry, source, folder, entry = setup
    registry.put_blob(folder / entry.path, entry.sha256)  # an orphan, e.g. from a crashed publish
    registry.put_blob(source, sha256_file(source))
    time.sleep(1.5)
    racing = Registry(GcWhenReused(registry.backend))
    manifest = racing.publish(_draft(source, entry), {"t": folder}, source)
    assert racing.backend.collected is not None
    assert registry.blob_key(entry.sha256) in _keys(racing.backend.collected.trashed)  # it did race
    for digest in (entry.sha256, manifest.source.sha256):  # the publish brought them back
        assert registry.backend.exists(registry.blob_key(digest))
    assert registry.gc(timedelta(0)).deleted == []
    _, files = registry.pull("m:1", "t", tmp_path / "out")
    assert sha256_file(files[0]) == entry.sha256


def test_a_reader_restores_a_blob_from_the_trash(setup, tmp_path: Path) -> None:
    """A version that references a trashed blob (what a racing gc leaves) still pulls."""
    registry, source, folder, entry = setup
    registry.publish(_draft(source, entry), {"t": folder}, source)
    registry.backend.move(registry.blob_key(entry.sha256), registry.trash_key(entry.sha256))
    _, files = registry.pull("m", "t", tmp_path / "out")
    assert sha256_file(files[0]) == entry.sha256
    assert registry.backend.exists(registry.blob_key(entry.sha256))
    registry.backend.move(registry.blob_key(entry.sha256), registry.trash_key(entry.sha256))
    assert registry.gc(timedelta(0)).restored == [entry.sha256]  # gc puts referenced ones back too
    assert registry.backend.exists(registry.blob_key(entry.sha256))


def test_gc_deletes_unreferenced_uploaded_sources(setup, tmp_path: Path) -> None:
    from registry import store_incoming

    registry, source, folder, entry = setup
    waiting = tmp_path / "waiting.pt2"
    waiting.write_bytes(b"uploaded, never packaged")
    store_incoming(registry, waiting, sha256_file(waiting))
    store_incoming(registry, source, sha256_file(source))
    registry.publish(_draft(source, entry), {"t": folder}, source)  # this one was packaged
    assert registry.gc(timedelta(hours=1)).deleted == []
    time.sleep(1.5)
    report = registry.gc(timedelta(0))
    assert _keys(report.deleted) == [f"incoming/{sha256_file(waiting)}"]
    assert [k for k, _ in registry.backend.list("incoming/")] == [f"incoming/{sha256_file(source)}"]


def test_gc_keeps_what_an_unfinished_webhook_submission_needs(setup, tmp_path: Path) -> None:
    """Pending, then dispatched but running: its upload and record stay; once its run has recorded
    its report, both go. An old upload submitted again is kept for the new submission."""
    from registry import mark_dispatched, record_submission, store_incoming

    registry, *_ = setup
    upload = tmp_path / "queued.pt2"
    upload.write_bytes(b"uploaded, its run not started yet")
    source = store_incoming(registry, upload, sha256_file(upload))
    submission = record_submission(registry, {"source": source, "name": "queued"}, attempt=0)
    assert submission is not None
    assert record_submission(registry, {"source": source, "name": "queued"}, attempt=0) is None  # redelivery
    time.sleep(1.5)
    assert registry.gc(timedelta(0)).deleted == []  # pending: its upload and its record stay
    mark_dispatched(registry, submission.run_id, "flow-run-1")  # its flow run exists, still running
    assert registry.gc(timedelta(0)).deleted == []
    finished = RunReport(
        model="queued", version=None, source_sha256=sha256_file(upload), toolchain={}, targets={}
    )
    registry.save_run_report("flow-run-1", finished)  # the run has finished
    report = registry.gc(timedelta(0))
    assert sorted(_keys(report.deleted)) == [
        f"incoming/{sha256_file(upload)}",
        f"submissions/{submission.run_id}.json",
    ]
    assert [k for k, _ in registry.backend.list("submissions/")] == []

    # an upload whose object is older than the grace period, stored again by a new submission
    store_incoming(registry, upload, sha256_file(upload))
    time.sleep(1.5)
    store_incoming(registry, upload, sha256_file(upload))  # the object is reused, not rewritten
    again = record_submission(registry, {"source": source, "name": "again"}, attempt=0)
    assert again is not None
    mark_dispatched(registry, again.run_id, "flow-run-2")  # queued on the pool, not finished
    assert registry.gc(timedelta(seconds=1)).deleted == []  # the new submission keeps it
    assert registry.backend.exists(f"incoming/{sha256_file(upload)}")


class FailsOnce:
    """The real backend, except that its Nth write fails: before it reached storage (a crash) or
    after (the answer was lost)."""

    WRITES = ("create", "replace", "upload_file", "move", "delete")

    def __init__(self, inner, fail_at: int = 0, after: bool = False) -> None:
        self.inner, self.fail_at, self.after = inner, fail_at, after
        self.writes: list[str] = []

    def __getattr__(self, name: str):
        method = getattr(self.inner, name)
        if name not in self.WRITES:
            return method

        def write(*args, **kwargs):
            self.writes.append(f"{name} {args[0]}")
            failing = len(self.writes) == self.fail_at
            if failing and not self.after:
                raise RegistryError(f"injected failure before {name}")
            result = method(*args, **kwargs)
            if failing:
                raise RegistryError(f"injected failure after {name}")
            return result

        return write


def test_publish_resumes_after_a_failure_at_any_point(registry_url: str, tmp_path: Path) -> None:
    source = tmp_path / "model.pt2"
    source.write_bytes(b"source-bytes")
    folder, entry = _artifact(tmp_path, b"artifact-bytes" * 100)
    recording = FailsOnce(open_registry(f"{registry_url}/clean").backend)
    Registry(recording).publish(_draft(source, entry), {"t": folder}, source)
    steps = recording.writes
    assert len(steps) >= 5, steps  # source, artifact, identity claim, manifest, latest
    for at in range(1, len(steps) + 1):
        for after in (False, True):
            registry = open_registry(f"{registry_url}/fail-{at}-{int(after)}")
            with pytest.raises(RegistryError, match="injected"):
                Registry(FailsOnce(registry.backend, at, after)).publish(
                    _draft(source, entry), {"t": folder}, source
                )
            again = registry.publish(_draft(source, entry), {"t": folder}, source)  # the retry
            where = f"failing {'after' if after else 'before'} {steps[at - 1]}"
            assert again.version == 1, where
            assert registry.versions("m") == [1], where
            assert registry.aliases("m") == {"latest": 1}, where
            _, files = registry.pull("m", "t", tmp_path / "out" / f"{at}-{after}")
            assert sha256_file(files[0]) == entry.sha256, where
            other = registry.publish(_draft(source, entry, spec={"seed": 1}), {"t": folder}, source)
            assert other.version == 2, where


def _publish_and_die_midway(url: str, source: str, folder: str, entry_json: str) -> None:
    """Publish, and SIGKILL this very process once a third of the big artifact is sent."""
    registry = open_registry(url)
    entry = FileEntry.model_validate_json(entry_json)

    def progress(sent: int) -> None:
        if sent > entry.bytes // 3:
            os.kill(os.getpid(), signal.SIGKILL)

    registry.publish(_draft(Path(source), entry, model="big"), {"t": Path(folder)}, Path(source), progress)


def test_publisher_killed_mid_upload_leaves_no_version(setup, tmp_path: Path) -> None:
    registry, source, _, _ = setup
    folder, entry = _artifact(tmp_path / "big", os.urandom(48 * 1024 * 1024))
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=_publish_and_die_midway, args=(registry.url, str(source), str(folder), entry.model_dump_json())
    )
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    time.sleep(1.1)
    assert registry.backend.sweep_partial_uploads(timedelta(0)) >= 1  # the half-sent upload
    assert registry.versions("big") == []
    assert registry.aliases("big") == {}
    with pytest.raises(NotFound):
        registry.resolve("big")
    manifest = registry.publish(_draft(source, entry, model="big"), {"t": folder}, source)
    assert manifest.version == 1
    _, files = registry.pull("big", "t", tmp_path / "out")
    assert sha256_file(files[0]) == entry.sha256
