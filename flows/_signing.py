"""Webhook request signing: HMAC-SHA256 over "<timestamp>.<raw body>" with a shared secret."""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["MAX_SKEW_S", "BodySigner", "sign"]

MAX_SKEW_S = 300  # a signed request older or newer than this is a replay or a wrong clock


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Shipyard-Signature header value for a request (what clients compute)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class BodySigner:
    """Computes the expected signature while the body streams in, then checks the header."""

    def __init__(self, secret: str, timestamp: str) -> None:
        self.timestamp = timestamp
        self._mac = hmac.new(secret.encode(), f"{timestamp}.".encode(), hashlib.sha256)

    def update(self, chunk: bytes) -> None:
        self._mac.update(chunk)

    def problem(self, header: str | None, now: float | None = None) -> str | None:
        """Why the request is not authentic, or None if it is."""
        if not header or not self.timestamp:
            return "missing X-Shipyard-Timestamp or X-Shipyard-Signature"
        try:
            sent = int(self.timestamp)
        except ValueError:
            return "X-Shipyard-Timestamp is not unix seconds"
        if abs((now or time.time()) - sent) > MAX_SKEW_S:
            return f"timestamp is more than {MAX_SKEW_S}s away from now (replay or clock skew)"
        expected = f"sha256={self._mac.hexdigest()}"
        if not hmac.compare_digest(expected, header):
            return "signature does not match"
        return None
