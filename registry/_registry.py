"""The artifact registry: content-addressed blobs, immutable version manifests, movable aliases."""

from __future__ import annotations

import contextlib
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from registry._backend import Backend, Progress
from registry._local import temp_file_beside
from registry._manifest import AliasRecord, GcItem, GcReport, VersionDraft, VersionManifest
from registry._submissions import DISPATCHED, kept_submissions, uploads_needed
from shipyard.errors import AlreadyExists, Conflict, InputError, IntegrityError, NotFound, RegistryError
from shipyard.report import RunReport, Status
from shipyard.spec import MODEL_NAME_RE, normalize_model_name

__all__ = ["Registry", "parse_ref"]

ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REF_RE = re.compile(r"^(?P<name>[^:@]+)(?::(?P<version>\d+)|@(?P<alias>[^:@]+))?$")
MAX_VERSION_TRIES = 1000


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """NAME, NAME:VERSION or NAME@ALIAS -> (name, version, alias); bare NAME means @latest.

    The name is normalised like every model name (`Convnet` is `convnet`)."""
    m = REF_RE.fullmatch(ref)
    name = normalize_model_name(m["name"]) if m else ""
    if not m or not MODEL_NAME_RE.fullmatch(name):
        raise InputError(f"bad model reference {ref!r}: use NAME, NAME:VERSION or NAME@ALIAS")
    if m["alias"] and not ALIAS_RE.fullmatch(m["alias"]):
        raise InputError(f"bad alias {m['alias']!r}")
    version = int(m["version"]) if m["version"] else None
    alias = m["alias"] or (None if version is not None else "latest")
    return name, version, alias


def _safe_relpath(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise IntegrityError(f"manifest names an unsafe path {rel!r}")
    return path


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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

    @staticmethod
    def identity_key(model: str, identity: str) -> str:
        return f"models/{model}/identities/{identity}.json"

    @staticmethod
    def report_key(model: str, version: int) -> str:
        return f"models/{model}/reports/{version}.html"

    @staticmethod
    def trash_key(digest: str) -> str:
        return f"trash/sha256/{digest}"

    @staticmethod
    def deleted_key(model: str, version: int) -> str:
        return f"models/{model}/deleted/{version}.json"

    # writing --------------------------------------------------------------
    def put_blob(self, path: Path, digest: str, progress: Progress | None = None) -> bool:
        """Upload a file under its digest unless it is already there; True if it was already there."""
        key = self.blob_key(digest)
        if self.backend.exists(key):
            return True
        self.backend.upload_file(key, path, digest, progress)
        return False

    def published(self, model: str, identity: str) -> VersionManifest | None:
        """The version already published with this identity, if any."""
        claimed = self._identity_claim(model, identity)[0]
        found = self._manifest_if_any(model, claimed) if claimed is not None else None
        return found if found is not None and found.identity == identity else None

    def publish(
        self,
        draft: VersionDraft,
        artifact_dirs: dict[str, Path],
        source: Path,
        progress: Progress | None = None,
        samples: Path | None = None,
    ) -> VersionManifest:
        """Upload blobs, then write the manifest as the next free version, then move `latest`.

        Every step can be repeated: after a failure at any point, the same publish again ends in
        exactly one version with `latest` moved (and publishing the same source, spec, toolchain
        and targets again returns that version). A crash before the manifest is written leaves
        only unreferenced blobs (removed by `gc`); readers never see a partial version.
        """
        identity = draft.identity_digest()
        manifest = self.published(draft.model, identity)
        if manifest is None:
            reused = [draft.source.sha256] if self.put_blob(source, draft.source.sha256) else []
            if (
                draft.samples is not None
                and samples is not None
                and self.put_blob(samples, draft.samples.sha256)
            ):
                reused.append(draft.samples.sha256)
            for name, report in draft.targets.items():
                if report.status is not Status.PASSED:
                    continue
                for entry in report.files:
                    path = artifact_dirs[name] / _safe_relpath(entry.path)
                    if self.put_blob(path, entry.sha256, progress):
                        reused.append(entry.sha256)
            manifest = self._version_for(draft, identity)
            for digest in reused:  # gc may have moved one to the trash after we found it
                if not self.backend.exists(self.blob_key(digest)):
                    self._restore(digest)
        self.set_alias(draft.model, "latest", manifest.version)
        return manifest

    def _identity_claim(self, model: str, identity: str) -> tuple[int | None, str | None]:
        """The version number a publish of this identity took or is about to take, and the record's ETag."""
        try:
            data, etag = self.backend.read(self.identity_key(model, identity))
        except NotFound:
            return None, None
        return int(json.loads(data)["version"]), etag

    def _manifest_if_any(self, model: str, version: int) -> VersionManifest | None:
        try:
            return self.manifest(model, version)
        except NotFound:
            return None

    def _version_for(self, draft: VersionDraft, identity: str) -> VersionManifest:
        """The manifest of this identity: the one an earlier attempt or a twin wrote, else a new one.

        Before it creates manifest n, a publish records "identity -> n"; a retry after a crash
        between the two finds that manifest instead of making a second version. A number that
        another identity took, or that newer versions have passed, is not reused.
        """
        model = draft.model
        record = self.identity_key(model, identity)
        for _ in range(MAX_VERSION_TRIES):
            claimed, etag = self._identity_claim(model, identity)
            newest = self._newest(model)
            version = None
            if claimed is not None:
                found = self._manifest_if_any(model, claimed)
                if found is not None and found.identity == identity:
                    return found
                if found is None and claimed == newest + 1:  # an attempt that crashed, or a twin
                    version = claimed
            if version is None:
                version = newest + 1
                try:
                    self.backend.replace(record, json.dumps({"version": version}).encode(), etag)
                except Conflict:
                    continue  # another attempt claimed a number meanwhile: look again
            manifest = VersionManifest(
                **draft.model_dump(), version=version, created_at=_now(), identity=identity
            )
            try:
                self.backend.create(
                    self.version_key(model, version), manifest.model_dump_json(indent=2).encode()
                )
                return manifest
            except AlreadyExists:
                continue  # taken, by a twin of this publish (found next time round) or by another
        raise RegistryError(f"could not find a free version for {model}")

    def referenced_blobs(self) -> set[str]:
        """Every digest a version manifest points at (sources and target files)."""
        digests = set()
        for model in self.models():
            for version in self.versions(model):
                manifest = self.manifest(model, version)
                digests.add(manifest.source.sha256)
                if manifest.samples is not None:
                    digests.add(manifest.samples.sha256)
                digests.update(f.sha256 for t in manifest.targets.values() for f in t.files)
        return digests

    def gc(self, grace: timedelta, dry_run: bool = False) -> GcReport:
        """Collect what no version references, in two steps, so that no publish loses a blob.

        An unreferenced blob older than `grace` is moved to trash/; a trash entry is deleted for
        good once it has been there longer than `grace` and still no version references it. A
        publish that chose to reuse a blob just before gc moved it brings it back, and so do
        readers and the next gc. Uploaded sources (incoming/) that neither a version nor a kept
        webhook submission (registry._submissions.kept_submissions: pending, unfinished, or
        younger than `grace`) references, the other submission records, and unfinished uploads
        are deleted once older than `grace`. This holds as long as no publish takes longer than
        `grace` (default 24 h).
        """
        referenced = self.referenced_blobs()
        now = datetime.now(UTC)
        report = GcReport(dry_run=dry_run)
        for key, modified in self.backend.list("trash/sha256/"):
            digest, age = key.rsplit("/", 1)[-1], now - modified
            if digest in referenced:
                report.restored.append(digest)
                if not dry_run:
                    self._restore(digest)
            elif age > grace:
                report.deleted.append(GcItem(key=key, age_s=int(age.total_seconds())))
                if not dry_run:
                    self.backend.delete(key)
        collect = (
            ("blobs/sha256/", report.trashed, self._to_trash),
            ("incoming/", report.deleted, lambda key, _: self.backend.delete(key)),
        )
        kept, expired = kept_submissions(self, now, grace)
        needed = referenced | uploads_needed(self, kept)
        for prefix, done, action in collect:
            for key, modified in self.backend.list(prefix):
                digest, age = key.rsplit("/", 1)[-1], now - modified
                if digest not in needed and age > grace:
                    done.append(GcItem(key=key, age_s=int(age.total_seconds())))
                    if not dry_run:
                        action(key, digest)
        report.deleted += self._delete_submissions(expired, now, dry_run)
        if not dry_run:
            report.partial_uploads = self.backend.sweep_partial_uploads(grace)
        return report

    def _delete_submissions(
        self, records: list[tuple[str, datetime]], now: datetime, dry_run: bool
    ) -> list[GcItem]:
        """Delete these submission records and their dispatch markers."""
        deleted = [GcItem(key=key, age_s=int((now - modified).total_seconds())) for key, modified in records]
        for item in [] if dry_run else deleted:
            run_id = item.key.rsplit("/", 1)[-1].removesuffix(".json")
            self.backend.delete(item.key)
            self.backend.delete(DISPATCHED + run_id)
        return deleted

    def _to_trash(self, key: str, digest: str) -> None:
        self.backend.move(key, self.trash_key(digest))

    def _restore(self, digest: str) -> bool:
        """Put a blob gc moved to the trash back into blobs/; False if it is in neither place."""
        try:
            self.backend.move(self.trash_key(digest), self.blob_key(digest))
        except NotFound:
            return self.backend.exists(self.blob_key(digest))
        return True

    def _newest(self, model: str) -> int:
        """The highest version number ever given, deleted ones included: numbers are never reused."""
        return max([*self.versions(model), *self._numbers(f"models/{model}/deleted/")], default=0)

    def delete_version(self, model: str, version: int, force: bool = False) -> list[str]:
        """Remove a version (its manifest moves to deleted/, its blobs are left to gc); returns the
        aliases that pointed at it. Refused while an alias points at it, unless `force`: then those
        aliases are removed, and `latest` moves to the newest version left."""
        manifest = self.manifest(model, version)
        pointing = sorted(a for a, v in self.aliases(model).items() if v == version)
        if pointing and not force:
            raise InputError(
                f"{model}:{version} is what {', '.join('@' + a for a in pointing)} point(s) at; "
                "move the alias with `shipyard promote`, or use --force"
            )
        if self._identity_claim(model, manifest.identity)[0] == version:  # publishing it again: anew
            self.backend.delete(self.identity_key(model, manifest.identity))
        self.backend.move(self.version_key(model, version), self.deleted_key(model, version))
        self.backend.delete(self.report_key(model, version))  # missing is fine
        left = self.versions(model)
        for alias in pointing:
            if alias == "latest" and left:
                self.set_alias(model, alias, max(left), move_back=True)
            else:
                self.backend.delete(self.alias_key(model, alias))
        return pointing

    def set_alias(self, model: str, alias: str, version: int, move_back: bool = False) -> AliasRecord:
        """Point `alias` at `version`, retrying while another writer moves it concurrently. `latest`
        never moves to an older version (publishers racing), unless `move_back` says so."""
        if not ALIAS_RE.fullmatch(alias):
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
            if alias == "latest" and not move_back and existing is not None and existing > version:
                return AliasRecord.model_validate_json(current)
            record = AliasRecord(model=model, alias=alias, version=version, updated_at=_now())
            try:
                self.backend.replace(key, record.model_dump_json(indent=2).encode(), etag)
                return record
            except Conflict:
                continue
        raise RegistryError(f"alias {model}@{alias} kept changing; gave up")

    def save_run_report(self, run_id: str, report: RunReport) -> None:
        """Keep a run's report (also when nothing was published) for status queries."""
        with contextlib.suppress(AlreadyExists):
            # json.dumps, not model_dump_json: a metric that is inf (an artifact that gave non-finite
            # outputs) must read back as inf, not as a null its model refuses
            text = json.dumps(report.model_dump(mode="json"), indent=2)
            self.backend.create(f"runs/{run_id}.json", text.encode())

    def save_version_report(self, model: str, version: int, html: str) -> str:
        """Keep a version's HTML report beside its manifest (the first one written stays, as the
        manifest does); returns where it is."""
        with contextlib.suppress(AlreadyExists):
            self.backend.create(self.report_key(model, version), html.encode())
        return self.report_location(model, version)

    def save_nightly_report(self, name: str, html: str) -> str:
        """Keep a nightly re-export's HTML drift report under nightly/<name>.html; where it is."""
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name) or name.startswith("."):
            raise ValueError(f"not a report name: {name!r}")
        key = f"nightly/{name}.html"
        with contextlib.suppress(AlreadyExists):
            self.backend.create(key, html.encode())
        return f"{self.url.rstrip('/')}/{key}"

    def has_version_report(self, model: str, version: int) -> bool:
        return self.backend.exists(self.report_key(model, version))

    def previous_version(self, model: str, version: int) -> VersionManifest | None:
        """The newest version of `model` below `version`, if any."""
        older = [v for v in self.versions(model) if v < version]
        return self.manifest(model, max(older)) if older else None

    def version_report(self, model: str, version: int) -> bytes | None:
        try:
            return self.backend.read(self.report_key(model, version))[0]
        except NotFound:
            return None

    def report_location(self, model: str, version: int) -> str:
        """The report's URL: file:///... or s3://bucket/prefix/..."""
        return f"{self.url.rstrip('/')}/{self.report_key(model, version)}"

    def run_report(self, run_id: str) -> RunReport | None:
        try:
            data, _ = self.backend.read(f"runs/{run_id}.json")
        except NotFound:
            return None
        try:
            return RunReport.model_validate(json.loads(data))
        except ValueError as exc:  # pydantic's ValidationError too: a report this release cannot read
            raise RegistryError(f"runs/{run_id}.json is not a run report this version reads: {exc}") from None

    def check_access(self) -> None:
        """Fail now, not after an hour of exports, if the registry cannot be listed."""
        next(iter(self.backend.list("models/")), None)

    def require_existing(self) -> None:
        """NotFound, with a hint, when there is no registry here (a typo in a path or bucket)."""
        if not self.backend.located():
            raise NotFound(f"no registry at {self.url}: check the URL (`shipyard package` creates one)")

    # reading --------------------------------------------------------------
    def models(self) -> list[str]:
        names = {key.split("/")[1] for key, _ in self.backend.list("models/") if key.count("/") >= 3}
        return sorted(names)

    def versions(self, model: str) -> list[int]:
        return self._numbers(f"models/{model}/versions/")

    def _numbers(self, prefix: str) -> list[int]:
        out = []
        for key, _ in self.backend.list(prefix):
            stem = key.rsplit("/", 1)[-1].removesuffix(".json")
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def aliases(self, model: str) -> dict[str, int]:
        out = {}
        for key, _ in self.backend.list(f"models/{model}/aliases/"):
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
        have = ", ".join(sorted(n for n, r in manifest.targets.items() if r.status is Status.PASSED))
        where = f"{manifest.model}:{manifest.version}"
        if report is None:
            raise NotFound(f"{where} was not packaged for {target!r} (passed: {have or 'none'})")
        if report.status is not Status.PASSED:
            raise NotFound(f"{where}: target {target!r} {report.status.value} (passed: {have or 'none'})")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for entry in report.files:
            dest = out_dir / _safe_relpath(entry.path)
            self.download_blob(entry.sha256, dest, label=entry.path)
            written.append(dest)
        return manifest, written

    def download_blob(self, digest: str, dest: Path, label: str = "") -> Path:
        """Write blob `digest` to dest; the file appears only once its sha256 matched."""
        tmp = temp_file_beside(dest, ".pull-")
        try:
            try:
                got = self.backend.download_file(self.blob_key(digest), tmp)
            except NotFound:  # gc moved it after a publish chose to reuse it: bring it back
                if not self._restore(digest):
                    raise NotFound(f"{label or digest}: blob {digest[:12]}... is missing") from None
                got = self.backend.download_file(self.blob_key(digest), tmp)
            if got != digest:
                raise IntegrityError(
                    f"{label or digest}: stored blob has sha256 {got[:12]}..., "
                    f"manifest says {digest[:12]}...; refusing it"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest
