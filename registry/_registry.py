"""The artifact registry: content-addressed blobs, immutable version manifests, movable aliases."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from registry._backend import Backend
from registry._manifest import AliasRecord, VersionManifest
from shipyard.errors import AlreadyExists, Conflict, InputError, IntegrityError, NotFound, RegistryError
from shipyard.report import Status
from shipyard.spec import MODEL_NAME_RE

__all__ = ["Registry", "parse_ref"]

ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REF_RE = re.compile(r"^(?P<name>[^:@]+)(?::(?P<version>\d+)|@(?P<alias>[^:@]+))?$")
MAX_VERSION_TRIES = 1000


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """NAME, NAME:VERSION or NAME@ALIAS -> (name, version, alias); bare NAME means @latest."""
    m = REF_RE.match(ref)
    if not m or not MODEL_NAME_RE.match(m["name"]):
        raise InputError(f"bad model reference {ref!r}: use NAME, NAME:VERSION or NAME@ALIAS")
    if m["alias"] and not ALIAS_RE.match(m["alias"]):
        raise InputError(f"bad alias {m['alias']!r}")
    version = int(m["version"]) if m["version"] else None
    alias = m["alias"] or (None if version is not None else "latest")
    return m["name"], version, alias


def _safe_relpath(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise IntegrityError(f"manifest names an unsafe path {rel!r}")
    return path


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Registry:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def url(self) -> str:
        return self.backend.url

    # keys -----------------------------------------------------------------
    @staticmethod
    def blob_key(digest: str) -> str:
        return f"blobs/sha256/{digest}"

    @staticmethod
    def version_key(model: str, version: int) -> str:
        return f"models/{model}/versions/{version}.json"

    @staticmethod
    def alias_key(model: str, alias: str) -> str:
        return f"models/{model}/aliases/{alias}.json"

    # writing --------------------------------------------------------------
    def put_blob(self, path: Path, digest: str) -> None:
        """Upload a file under its digest unless it is already there."""
        key = self.blob_key(digest)
        if not self.backend.exists(key):
            self.backend.upload_file(key, path, digest)

    def publish(
        self, draft: VersionManifest, artifact_dirs: dict[str, Path], source: Path
    ) -> VersionManifest:
        """Upload blobs, then write the manifest as the next free version, then move `latest`."""
        self.put_blob(source, draft.source.sha256)
        for name, report in draft.targets.items():
            if report.status is not Status.PASSED:
                continue
            for entry in report.files:
                self.put_blob(artifact_dirs[name] / _safe_relpath(entry.path), entry.sha256)
        version = max(self.versions(draft.model), default=0) + 1
        for _ in range(MAX_VERSION_TRIES):
            manifest = draft.model_copy(update={"version": version, "created_at": _now()})
            try:
                self.backend.create(
                    self.version_key(draft.model, version), manifest.model_dump_json(indent=2).encode()
                )
                break
            except AlreadyExists:
                version += 1
        else:
            raise RegistryError(f"could not find a free version for {draft.model}")
        self.set_alias(draft.model, "latest", version)
        return manifest

    def set_alias(self, model: str, alias: str, version: int) -> AliasRecord:
        """Point `alias` at `version`, retrying while another writer moves it concurrently."""
        if not ALIAS_RE.match(alias):
            raise InputError(f"bad alias {alias!r}")
        self.manifest(model, version)  # the version must exist
        key = self.alias_key(model, alias)
        for _ in range(MAX_VERSION_TRIES):
            etag: str | None
            try:
                current, etag = self.backend.read(key)
                existing: int | None = AliasRecord.model_validate_json(current).version
            except NotFound:
                etag, existing = None, None
            # `latest` never moves backwards when publishers race
            if alias == "latest" and existing is not None and existing > version:
                return AliasRecord.model_validate_json(current)
            record = AliasRecord(model=model, alias=alias, version=version, updated_at=_now())
            try:
                self.backend.replace(key, record.model_dump_json(indent=2).encode(), etag)
                return record
            except Conflict:
                continue
        raise RegistryError(f"alias {model}@{alias} kept changing; gave up")

    # reading --------------------------------------------------------------
    def models(self) -> list[str]:
        names = {key.split("/")[1] for key in self.backend.list("models/") if key.count("/") >= 3}
        return sorted(names)

    def versions(self, model: str) -> list[int]:
        out = []
        for key in self.backend.list(f"models/{model}/versions/"):
            stem = key.rsplit("/", 1)[-1].removesuffix(".json")
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def aliases(self, model: str) -> dict[str, int]:
        out = {}
        for key in self.backend.list(f"models/{model}/aliases/"):
            record = AliasRecord.model_validate_json(self.backend.read(key)[0])
            out[record.alias] = record.version
        return out

    def manifest(self, model: str, version: int) -> VersionManifest:
        try:
            data, _ = self.backend.read(self.version_key(model, version))
        except NotFound:
            raise NotFound(f"{model}:{version} does not exist in {self.url}") from None
        manifest = VersionManifest.model_validate_json(data)
        if manifest.model != model or manifest.version != version:
            raise IntegrityError(
                f"manifest at {model}:{version} claims to be {manifest.model}:{manifest.version}"
            )
        return manifest

    def resolve(self, ref: str) -> VersionManifest:
        model, version, alias = parse_ref(ref)
        if version is None:
            try:
                data, _ = self.backend.read(self.alias_key(model, alias or "latest"))
            except NotFound:
                raise NotFound(f"{model}@{alias} does not exist in {self.url}") from None
            version = AliasRecord.model_validate_json(data).version
        return self.manifest(model, version)

    def pull(self, ref: str, target: str, out_dir: Path) -> tuple[VersionManifest, list[Path]]:
        """Write a target's files into out_dir; every file's digest is checked before it appears."""
        manifest = self.resolve(ref)
        report = manifest.targets.get(target)
        if report is None or report.status is not Status.PASSED:
            have = sorted(n for n, r in manifest.targets.items() if r.status is Status.PASSED)
            raise NotFound(
                f"{manifest.model}:{manifest.version} has no passed target {target!r} "
                f"(passed: {', '.join(have) or 'none'})"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for entry in report.files:
            dest = out_dir / _safe_relpath(entry.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".pull-")
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                self.backend.download_file(self.blob_key(entry.sha256), tmp)
                got = sha256_path(tmp)
                if got != entry.sha256 or tmp.stat().st_size != entry.bytes:
                    raise IntegrityError(
                        f"{entry.path}: stored blob has sha256 {got[:12]}..., "
                        f"manifest says {entry.sha256[:12]}...; refusing it"
                    )
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(dest)
        return manifest, written
