"""A client for the webhook: signs each request the way flows/signing.py checks it."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from flows.signing import signed_headers

__all__ = ["StatusUnreadable", "WebhookClient", "WebhookRefused"]

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class WebhookRefused(Exception):
    """The webhook answered with an error status; the message is its one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class StatusUnreadable(Exception):
    """An accepted run whose status could not be read in time: the run goes on regardless."""

    def __init__(self, status_url: str, reason: str) -> None:
        super().__init__(reason)
        self.status_url = status_url


class WebhookClient:
    def __init__(self, url: str, secret: str, timeout_s: float = 600) -> None:
        self.url = url.rstrip("/")
        self.secret = secret
        self.timeout_s = timeout_s

    @staticmethod
    def _answer(response: httpx.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"error": response.text[:200]}
        if response.status_code >= 400:
            raise WebhookRefused(response.status_code, str(body.get("error", body)))
        return body

    def submit(
        self,
        model: Path,
        name: str,
        spec: str | None = None,
        targets: str | None = None,
        samples: Path | None = None,
    ) -> dict[str, Any]:
        """POST the model (and validation samples, an .npz); returns {run_id, status_url, source_sha256}.

        The multipart body is written once to a temporary file while its digest is computed, then
        streamed from there: memory stays small whatever the model's size. The headers are signed
        (they declare the digest), so the webhook refuses a bad request before the body is sent.
        """
        fields = {k: v for k, v in {"spec": spec, "targets": targets}.items() if v}
        url = f"{self.url}/v1/models/{name}"
        with contextlib.ExitStack() as files, tempfile.TemporaryFile() as body:
            upload = {"file": ("model", files.enter_context(model.open("rb")))}
            if samples is not None:
                upload["samples"] = ("samples.npz", files.enter_context(samples.open("rb")))
            request = httpx.Request("POST", url, files=upload, data=fields)
            digest = hashlib.sha256()
            for chunk in request.stream:  # type: ignore[union-attr]
                digest.update(chunk)
                body.write(chunk)
            size = body.tell()
            body.seek(0)
            path = request.url.raw_path.decode()
            signing = signed_headers(
                self.secret, "POST", path, digest.hexdigest(), size, request.headers["Content-Type"]
            )
            headers = {**request.headers, **signing}
            return self._answer(httpx.post(url, content=body, headers=headers, timeout=self.timeout_s))

    def status(self, status_url: str) -> dict[str, Any]:
        """The run's state, and its per-target results once it has ended (a signed GET)."""
        path = urlparse(status_url).path
        return self._answer(
            httpx.get(f"{self.url}{path}", headers=signed_headers(self.secret, "GET", path), timeout=60)
        )

    def wait(self, status_url: str, poll_s: float = 2.0) -> dict[str, Any]:
        """Poll until the run has ended (or timeout_s has passed; then the last answer). A status
        read that times out or meets a 5xx is tried again; StatusUnreadable once time is up."""
        deadline = time.monotonic() + self.timeout_s
        answer: dict[str, Any] = {}
        while True:
            try:
                answer = self.status(status_url)
            except (httpx.TransportError, WebhookRefused) as exc:
                if isinstance(exc, WebhookRefused) and exc.status < 500:
                    raise
                if time.monotonic() > deadline:
                    raise StatusUnreadable(status_url, str(exc) or type(exc).__name__) from None
            else:
                if answer.get("state") in FINAL_STATES or time.monotonic() > deadline:
                    return answer
            time.sleep(poll_s)
