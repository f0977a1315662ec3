"""Webhook request signing: HMAC-SHA256 over "<timestamp>.<METHOD>.<PATH>.<raw body>".

PATH is the request path as sent (e.g. /v1/models/resnet), so a captured request cannot be
replayed to another model name or endpoint; GET requests sign an empty body. Headers:

    X-Shipyard-Timestamp: <unix seconds>
    X-Shipyard-Signature: sha256=<64 lowercase hex digits>
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

__all__ = ["MAX_SKEW_S", "RequestSigner", "header_problem", "sign"]

MAX_SKEW_S = 300  # a signed request older or newer than this is a replay or a wrong clock
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _prefix(timestamp: str, method: str, path: str) -> bytes:
    return f"{timestamp}.{method.upper()}.{path}.".encode()


def sign(secret: str, timestamp: str, method: str, path: str, body: bytes = b"") -> str:
    """The X-Shipyard-Signature header value for a request (what clients compute)."""
    mac = hmac.new(secret.encode(), _prefix(timestamp, method, path) + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def header_problem(timestamp: str | None, signature: str | None, now: float | None = None) -> str | None:
    """Why the headers alone disqualify a request (checked before any of its body is read)."""
    if not timestamp or not signature:
        return "missing X-Shipyard-Timestamp or X-Shipyard-Signature"
    if not _TIMESTAMP.fullmatch(timestamp):
        return "X-Shipyard-Timestamp is not unix seconds"
    if not _SIGNATURE.fullmatch(signature):
        return "X-Shipyard-Signature is not sha256=<64 lowercase hex digits>"
    if abs((now or time.time()) - int(timestamp)) > MAX_SKEW_S:
        return f"timestamp is more than {MAX_SKEW_S}s away from now (replay or clock skew)"
    return None


class RequestSigner:
    """Computes a request's expected signature while its body streams in, then checks the header."""

    def __init__(self, secret: str, timestamp: str, method: str, path: str) -> None:
        self._mac = hmac.new(secret.encode(), _prefix(timestamp, method, path), hashlib.sha256)

    def update(self, chunk: bytes) -> None:
        self._mac.update(chunk)

    def signature(self) -> str:
        """The header value for what was hashed so far (for clients that stream their body)."""
        return f"sha256={self._mac.hexdigest()}"

    def matches(self, signature: str) -> bool:
        return hmac.compare_digest(self.signature().encode(), signature.encode("latin-1"))
