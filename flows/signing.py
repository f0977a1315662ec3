"""Webhook request signing: the headers are signed, and they declare the body's digest.

A request is authenticated from its headers alone, before a byte of its body is read (and before
it may take an upload slot); the body is then checked against the digest it declared while it
streams in. Headers:

    X-Shipyard-Timestamp: <unix seconds>
    X-Shipyard-Content-SHA256: <64 lowercase hex: sha256 of the raw body; of b"" for a GET>
    X-Shipyard-Signature: sha256=<hex HMAC-SHA256(secret, CANONICAL)>

    CANONICAL = these seven lines, joined by "\\n" (no newline at the end):
        shipyard-v2
        <timestamp>
        <METHOD>
        <PATH>
        <Content-Length>
        <Content-Type>
        <the X-Shipyard-Content-SHA256 value>

PATH is the request path as sent (e.g. /v1/models/resnet), so a captured request cannot be
replayed to another model name or endpoint; Content-Length and Content-Type are the header
values as sent ("" when absent). A signature is accepted once (SeenSignatures): the same signed
upload sent again within the timestamp window is refused.

Deprecated, accepted for one release (unless SHIPYARD_WEBHOOK_BODY_SIGNATURES=0): a request
without X-Shipyard-Content-SHA256 is checked the old way, its MAC over
"<timestamp>.<METHOD>.<PATH>.<raw body>", which can only be verified once the whole body has
arrived; such uploads get slots of their own and can never hold up header-signed ones.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict

__all__ = [
    "EMPTY_SHA256",
    "MAX_SKEW_S",
    "BodySigner",
    "SeenSignatures",
    "header_problem",
    "matches",
    "sign_body",
    "sign_request",
    "signed_body_headers",
    "signed_headers",
]

MAX_SKEW_S = 300  # a signed request older or newer than this is a replay or a wrong clock
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _canonical(
    timestamp: str, method: str, path: str, content_length: str, content_type: str, content_sha256: str
) -> bytes:
    fields = ("shipyard-v2", timestamp, method.upper(), path, content_length, content_type, content_sha256)
    return "\n".join(fields).encode("latin-1")


def sign_request(
    secret: str,
    timestamp: str,
    method: str,
    path: str,
    content_length: str = "",
    content_type: str = "",
    content_sha256: str = EMPTY_SHA256,
) -> str:
    """The X-Shipyard-Signature header value of a header-signed request."""
    canonical = _canonical(timestamp, method, path, content_length, content_type, content_sha256)
    return f"sha256={hmac.new(secret.encode(), canonical, hashlib.sha256).hexdigest()}"


def signed_headers(
    secret: str,
    method: str,
    path: str,
    content_sha256: str = EMPTY_SHA256,
    content_length: int | None = None,
    content_type: str = "",
) -> dict[str, str]:
    """The signing headers for a request sent now, whose Content-Length (None: no such header) and
    Content-Type are the given ones; the client's HTTP library sends those two itself."""
    timestamp = str(int(time.time()))
    length = "" if content_length is None else str(content_length)
    return {
        "X-Shipyard-Timestamp": timestamp,
        "X-Shipyard-Content-SHA256": content_sha256,
        "X-Shipyard-Signature": sign_request(
            secret, timestamp, method, path, length, content_type, content_sha256
        ),
    }


def signed_body_headers(
    secret: str, method: str, path: str, body: bytes, content_type: str = ""
) -> dict[str, str]:
    """signed_headers for a body held in memory (tests, benches, small clients)."""
    digest = hashlib.sha256(body).hexdigest()
    return signed_headers(secret, method, path, digest, len(body), content_type)


def header_problem(
    timestamp: str | None, signature: str | None, content_sha256: str | None = None, now: float | None = None
) -> str | None:
    """Why the signing headers' form alone disqualifies a request (checked before any of its body)."""
    if not timestamp or not signature:
        return "missing X-Shipyard-Timestamp or X-Shipyard-Signature"
    if not _TIMESTAMP.fullmatch(timestamp):
        return "X-Shipyard-Timestamp is not unix seconds"
    if not _SIGNATURE.fullmatch(signature):
        return "X-Shipyard-Signature is not sha256=<64 lowercase hex digits>"
    if content_sha256 is not None and not _DIGEST.fullmatch(content_sha256):
        return "X-Shipyard-Content-SHA256 is not 64 lowercase hex digits"
    if abs((now or time.time()) - int(timestamp)) > MAX_SKEW_S:
        return f"timestamp is more than {MAX_SKEW_S}s away from now (replay or clock skew)"
    return None


def matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("latin-1"))


def sign_body(secret: str, timestamp: str, method: str, path: str, body: bytes = b"") -> str:
    """The deprecated body signature: HMAC over "<timestamp>.<METHOD>.<PATH>.<raw body>"."""
    signer = BodySigner(secret, timestamp, method, path)
    signer.update(body)
    return signer.signature()


class BodySigner:
    """The deprecated body signature, computed as the body streams in."""

    def __init__(self, secret: str, timestamp: str, method: str, path: str) -> None:
        prefix = f"{timestamp}.{method.upper()}.{path}.".encode()
        self._mac = hmac.new(secret.encode(), prefix, hashlib.sha256)

    def update(self, chunk: bytes) -> None:
        self._mac.update(chunk)

    def signature(self) -> str:
        return f"sha256={self._mac.hexdigest()}"


class SeenSignatures:
    """Signatures used within the timestamp window: each signed request is taken once.

    In memory, so per webhook process; a signature outlives the window by nothing, since a
    request older than MAX_SKEW_S is refused by its timestamp anyway. Bounded: at `capacity`
    live signatures a new request is refused (busy) rather than an old one forgotten.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._until: OrderedDict[str, float] = OrderedDict()

    def claim(self, signature: str, now: float | None = None) -> bool | None:
        """True: first use; False: seen before; None: too many live signatures to remember one more."""
        now = time.monotonic() if now is None else now
        while self._until and next(iter(self._until.values())) < now:
            self._until.popitem(last=False)
        if signature in self._until:
            return False
        if len(self._until) >= self.capacity:
            return None
        self._until[signature] = now + 2 * MAX_SKEW_S  # a timestamp may lie up to the skew ahead
        return True

    def release(self, signature: str) -> None:
        """Forget a signature whose request was not accepted, so the client may send it again."""
        self._until.pop(signature, None)
