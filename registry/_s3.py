"""S3 backend (boto3, path-style): conditional writes, streamed multipart uploads, checksums.

Endpoint and keys come from the standard AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY. Transient errors (5xx, throttling, resets) are retried by botocore
with backoff; 4xx are not retried and surface as one plain RegistryError.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from registry._backend import Progress
from registry._transfer import download_hashed, upload_checked
from shipyard.errors import AlreadyExists, Conflict, IntegrityError, NotFound, RegistryError

__all__ = ["S3Backend"]

DEFAULT_MAX_ATTEMPTS = 6  # botocore's standard retry mode, with backoff; AWS_MAX_ATTEMPTS overrides

_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Backend:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        config = Config(
            s3={"addressing_style": "path"},
            retries={
                "mode": "standard",
                "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)),
            },
            connect_timeout=5,
            read_timeout=60,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = client or boto3.client("s3", config=config)

    def located(self) -> bool:
        """A listing, not HEAD: a HEAD error has no body, so it could not say which credential failed."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._folder_prefix(), MaxKeys=1)
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                return False
            raise self._fail(exc, "") from None
        except BotoCoreError as exc:
            raise self._fail(exc, "") from None
        return True

    def _folder_prefix(self) -> str:
        """The prefix as a folder: s3://b/reg never lists s3://b/reg2."""
        return f"{self.prefix}/" if self.prefix else ""

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise RegistryError(f"key {key!r} escapes the registry prefix")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception, key: str) -> RegistryError:
        """One plain error for everything S3 refused that retrying will not fix."""
        from botocore.exceptions import ClientError, EndpointConnectionError

        if isinstance(exc, EndpointConnectionError):
            return RegistryError(f"cannot reach the S3 endpoint for {self.url}: {exc}")
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in _CREDENTIAL_CODES:
                return RegistryError(
                    f"S3 refused the credentials for {self.url} ({code}); "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                )
            if code == "NoSuchBucket":
                return RegistryError(f"bucket {self.bucket!r} does not exist at the S3 endpoint")
            return RegistryError(f"S3 error {code or 'unknown'} on {key}: {exc}")
        return RegistryError(f"S3 request for {key} failed: {exc}")

    def _call(self, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, Key=self._key(key), **kwargs)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(key) from None
            if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):  # 412, or 409 in a race
                raise Conflict(key) from None
            raise self._fail(exc, key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, key) from None

    def read(self, key: str) -> tuple[bytes, str]:
        response = self._call(key, self.client.get_object)
        return response["Body"].read(), str(response["ETag"])

    def create(self, key: str, data: bytes) -> None:
        try:
            self._call(key, self.client.put_object, Body=data, IfNoneMatch="*")
        except Conflict:
            raise AlreadyExists(key) from None

    def replace(self, key: str, data: bytes, etag: str | None) -> None:
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        self._call(key, self.client.put_object, Body=data, **condition)

    def exists(self, key: str) -> bool:
        try:
            self._call(key, self.client.head_object)
        except NotFound:
            return False
        return True

    def upload_file(self, key: str, path: Path, sha256: str, progress: Progress | None = None) -> None:
        """Parts checked by S3 on arrival against the bytes that were hashed (registry._transfer)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = upload_checked(self.client, self.bucket, self._key(key), path, sha256, progress)
        except ClientError as exc:
            if _code(exc) == "BadDigest":
                raise IntegrityError(f"{path} changed while uploading (S3 refused a part)") from None
            raise self._fail(exc, key) from None
        except (BotoCoreError, OSError) as exc:
            raise self._fail(exc, key) from None
        if found is not None:
            raise IntegrityError(
                f"{path} changed while uploading (sha256 {found[:12]}..., expected {sha256[:12]}...)"
            )

    def download_file(self, key: str, path: Path) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        size = int(self._call(key, self.client.head_object)["ContentLength"])
        try:
            return download_hashed(self.client, self.bucket, self._key(key), path, size)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(key) from None
            raise self._fail(exc, key) from None
        except (BotoCoreError, OSError) as exc:
            raise self._fail(exc, key) from None

    def list(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix) if prefix else self._folder_prefix()
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"][strip:], item["LastModified"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, prefix) from None

    def sweep_partial_uploads(self, older_than: timedelta) -> int:
        """Abort multipart uploads under the prefix that were started before the cutoff."""
        from botocore.exceptions import BotoCoreError, ClientError

        cutoff = datetime.now(UTC) - older_than
        swept = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._folder_prefix()
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        swept += 1
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "multipart uploads") from None
        return swept

    def delete(self, key: str) -> None:
        self._call(key, self.client.delete_object)

    def move(self, key: str, dest: str) -> None:
        """A server-side copy (multipart for large objects), then the delete."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.copy({"Bucket": self.bucket, "Key": self._key(key)}, self.bucket, self._key(dest))
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(key) from None
            raise self._fail(exc, key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, key) from None
        self.delete(key)
