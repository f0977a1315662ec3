"""The REST webhook: a signed model upload starts a package-model run; runs can be polled.

POST /v1/models/{name}   multipart: file (the model), optional spec (YAML/JSON), targets (a,b),
                         samples (an .npz of validation inputs) -> 202 {run_id, status_url, source_sha256}
GET  /v1/runs/{run_id}   -> {run_id, state, ...}; when the run is done, `targets` as in the CLI's --json
GET  /healthz            -> {"ok": true}

Both /v1 routes are signed (flows/signing.py): the MAC covers the timestamp, method, path,
Content-Length, Content-Type and the body's declared X-Shipyard-Content-SHA256, so a request is
authenticated from its headers alone (401) before any of its body is read or a slot is taken;
the body is then checked against its declared digest as it streams in, within a deadline and
above a minimum rate (408). A signed POST is taken once (409 when sent again). At most
SHIPYARD_WEBHOOK_MAX_UPLOADS large (or chunked) uploads and SHIPYARD_WEBHOOK_MAX_SMALL_UPLOADS
uploads of at most 8 MiB are received at once (503 with Retry-After beyond that); requests with
the deprecated body signature have 4 slots of their own. The upload is written to disk once, its
kind told from headers and listings only (the bounded prepare step checks it whole); the folder
is removed on every exit, a client disconnect included. GET /v1/runs answers only for runs this
webhook was given, with server paths dropped from what it returns.

Run: python -m flows.webhook (127.0.0.1:$SHIPYARD_WEBHOOK_PORT, default 8000). Settings come from
the environment (shipyard/settings.py): SHIPYARD_WEBHOOK_SECRET (required, at least 16 characters),
SHIPYARD_REGISTRY, SHIPYARD_WEBHOOK_MAX_MB, SHIPYARD_WEBHOOK_MAX_UPLOADS, SHIPYARD_WEBHOOK_SPOOL_DIR,
SHIPYARD_WEBHOOK_READ_TIMEOUT_S, SHIPYARD_WEBHOOK_MIN_KBPS, SHIPYARD_WEBHOOK_BODY_SIGNATURES, PREFECT_API_URL.
The handler checks the upload, stores it and the submission in the registry, and answers 202:
from then on the submission is durable (a webhook or Prefect restart loses nothing accepted).
A background dispatcher (flows/_dispatcher.py) starts its package-model flow run; the work
happens on a Prefect worker. The run id names the submission before and after its flow run
exists. Nothing in an upload is ever executed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from flows._dispatcher import Dispatcher
from flows._upload import Upload, UploadRefused, receive_upload
from flows.signing import BodySigner, SeenSignatures, header_problem, matches, sign_body, sign_request
from registry import Registry, read_submission, record_submission, run_id_for, submission_key
from shipyard.digests import sha256_file
from shipyard.errors import ShipyardError, SpecError
from shipyard.settings import settings as env_settings
from shipyard.spec import MODEL_NAME_RE, parse_spec, parse_spec_text

__all__ = ["WebhookSettings", "create_app"]

DEPLOYMENT = "package-model/package-model"
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_AGAIN_STATES = {"FAILED", "CRASHED", "CANCELLED"}  # a redelivery after these starts a new run
MAX_RUN_ATTEMPTS = 1000
RETRY_AFTER_S = 5
SMALL_UPLOAD_BYTES = 8 * 1024 * 1024  # uploads up to this size have slots of their own


@dataclass
class WebhookSettings:
    secret: str
    registry: str | None = None
    max_bytes: int = 2048 * 1024 * 1024
    public_url: str = "http://127.0.0.1:8000"
    deployment: str = DEPLOYMENT
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    max_uploads: int = 4  # large or chunked uploads spooled at once
    max_small_uploads: int = 64  # uploads that declare at most SMALL_UPLOAD_BYTES, spooled at once
    max_body_signed_uploads: int = 4  # uploads with the deprecated body signature, at once
    body_signatures: bool = True  # accept the deprecated body signature (one release)
    read_grace_s: float = 30.0  # longest gap between two body chunks, and the deadline's slack
    min_rate_bytes_s: float = 64 * 1024  # the body's deadline: grace + its size at this rate

    @classmethod
    def from_env(cls) -> WebhookSettings:
        env = env_settings()
        if len(env.webhook_secret) < 16:
            raise SystemExit("SHIPYARD_WEBHOOK_SECRET must be set (at least 16 characters)")
        public_url = env.webhook_public_url
        return cls(
            secret=env.webhook_secret,
            registry=env.registry,
            max_bytes=int(env.webhook_max_mb * 1024 * 1024),
            public_url=f"http://127.0.0.1:{env.webhook_port}" if public_url is None else public_url,
            spool_dir=env.webhook_spool_dir,
            max_uploads=env.webhook_max_uploads,
            max_small_uploads=env.webhook_max_small_uploads,
            body_signatures=env.webhook_body_signatures,
            read_grace_s=env.webhook_read_timeout_s,
            min_rate_bytes_s=env.webhook_min_kbps * 1024,
        )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _raw_path(request: Request) -> str:
    """The path as the client sent it (what it signed), not as routing decoded it."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    return raw.decode("latin-1")


@dataclass(frozen=True)
class _Signed:
    """A request's signing headers, checked for form (and, when it signs its headers, its MAC)."""

    timestamp: str
    signature: str
    content_sha256: str | None  # declared body digest; None: the deprecated body signature

    @property
    def signs_headers(self) -> bool:
        return self.content_sha256 is not None


def _authenticate(request: Request, settings: WebhookSettings) -> _Signed | JSONResponse:
    """The request's signature as far as its headers can prove it, or the 401 that refuses it."""
    headers = request.headers
    timestamp, signature = headers.get("x-shipyard-timestamp"), headers.get("x-shipyard-signature")
    declared = headers.get("x-shipyard-content-sha256")
    problem = header_problem(timestamp, signature, declared)
    if problem:
        return _error(401, f"bad signature: {problem}")
    assert timestamp is not None and signature is not None
    if declared is None:
        if not settings.body_signatures:
            return _error(401, "bad signature: sign the headers (X-Shipyard-Content-SHA256); see the README")
        return _Signed(timestamp, signature, None)
    expected = sign_request(
        settings.secret,
        timestamp,
        request.method,
        _raw_path(request),
        headers.get("content-length", ""),
        headers.get("content-type", ""),
        declared,
    )
    if not matches(expected, signature):
        return _error(401, "bad signature: signature does not match")
    return _Signed(timestamp, signature, declared)


def _too_large(settings: WebhookSettings) -> UploadRefused:
    return UploadRefused(413, f"upload is larger than {settings.max_bytes // (1024 * 1024)} MB")


def _busy(count: int) -> JSONResponse:
    busy = _error(503, f"{count} uploads of this size are being received; try again shortly")
    busy.headers["Retry-After"] = str(RETRY_AFTER_S)
    return busy


async def submit_model(request: Request) -> JSONResponse:
    state: WebhookState = request.app.state.shipyard
    settings = state.settings
    name = request.path_params["name"]
    if not MODEL_NAME_RE.fullmatch(name):
        return _error(400, "model name must be lowercase letters, digits, '.', '_' or '-' (at most 64)")
    signed = _authenticate(request, settings)
    if isinstance(signed, JSONResponse):
        return signed
    declared = request.headers.get("content-length")
    size = int(declared) if declared and declared.isdigit() else None
    if size is not None and size > settings.max_bytes:
        return _error(413, str(_too_large(settings)))
    small = size is not None and size <= SMALL_UPLOAD_BYTES
    if not signed.signs_headers:  # unproven until its whole body is in: slots of its own
        slots, count = state.body_signed_slots, settings.max_body_signed_uploads
    else:
        slots = state.small_upload_slots if small else state.upload_slots
        count = settings.max_small_uploads if small else settings.max_uploads
    if slots.locked():
        return _busy(count)
    if signed.signs_headers:
        claimed = state.seen.claim(signed.signature)
        if claimed is None:
            return _busy(state.seen.capacity)
        if not claimed:
            return _error(409, "this signed request was sent before; sign a new one to send it again")
    answer = _error(500, "the upload was not handled")
    async with slots:
        folder = Path(tempfile.mkdtemp(prefix="shipyard-upload-", dir=settings.spool_dir))
        try:
            answer = await _receive(request, state, name, folder, signed, size)
        except ClientDisconnect:
            answer = _error(400, "the client went away before the upload was complete")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if answer.status_code != 202 and signed.signs_headers:
                state.seen.release(signed.signature)  # not taken: the client may send it again
    return answer


async def _receive(
    request: Request, state: WebhookState, name: str, folder: Path, signed: _Signed, size: int | None
) -> JSONResponse:
    settings = state.settings
    body_signer = None
    if not signed.signs_headers:
        body_signer = BodySigner(settings.secret, signed.timestamp, request.method, _raw_path(request))
    small = size is not None and size <= SMALL_UPLOAD_BYTES
    try:
        upload = await receive_upload(
            request,
            folder,
            cap=size if small and size is not None else settings.max_bytes,
            over_cap=UploadRefused(400, "body exceeds its length") if small else _too_large(settings),
            grace_s=settings.read_grace_s,
            min_rate=settings.min_rate_bytes_s,
            on_chunk=body_signer.update if body_signer else None,
        )
    except UploadRefused as refused:
        return _error(refused.status, str(refused))
    if body_signer is not None and not matches(body_signer.signature(), signed.signature):
        return _error(401, "bad signature: signature does not match")
    if signed.content_sha256 is not None and upload.sha256 != signed.content_sha256:
        return _error(401, "bad signature: the body does not match X-Shipyard-Content-SHA256")
    if "file" not in upload.files:
        return _error(422, "missing multipart field 'file' (the model)")
    try:
        return await _accept(state, name, upload)
    except ShipyardError as exc:  # say what is wrong, not where the server keeps the upload
        message = str(exc).replace(str(folder.resolve() / "source"), "the uploaded file")
        return _error(422, message.replace(str(folder.resolve() / "samples"), "the uploaded samples"))


async def _accept(state: WebhookState, name: str, upload: Upload) -> JSONResponse:
    from registry import store_incoming
    from targets.pipeline import check_request

    settings = state.settings
    spec_text = upload.fields.get("spec", "")
    spec = parse_spec(parse_spec_text(spec_text, "spec") if spec_text.strip() else None)
    if spec.samples:
        raise SpecError(
            "spec field samples: not accepted over the webhook (it would name a file on the server); "
            "upload the .npz as the multipart field 'samples'"
        )
    path = upload.files["file"]
    samples_path = upload.files.get("samples")
    checked = spec.model_copy(update={"samples": str(samples_path)}) if samples_path else spec
    targets = upload.fields.get("targets", "")
    request = await run_in_threadpool(check_request, path, checked, targets, name, sniff=True)
    registry = state.registry
    source_uri = await run_in_threadpool(store_incoming, registry, path, request.source_sha256)
    parameters = {
        "source": source_uri,
        "targets": request.asked_targets(),
        "name": name,
        "registry": settings.registry,
        "spec": spec.model_dump(mode="json", exclude_defaults=True),
    }
    if samples_path:
        digest = await run_in_threadpool(sha256_file, samples_path)
        parameters["samples"] = await run_in_threadpool(store_incoming, registry, samples_path, digest)
    run_id = await _submit(state, parameters)
    return JSONResponse(
        {
            "run_id": run_id,
            "status_url": f"{settings.public_url}/v1/runs/{run_id}",
            "source_sha256": request.source_sha256,
        },
        status_code=202,
    )


async def _submit(state: WebhookState, parameters: dict[str, Any]) -> str:
    """The run id for these parameters: a new durable submission, or the earlier one of a redelivery.

    The same upload with the same spec and targets, delivered twice, is one run; delivered again
    after that run failed, crashed or was cancelled, it is a new one (the next attempt).
    """
    key = submission_key(parameters)
    for attempt in range(MAX_RUN_ATTEMPTS):
        submission = await run_in_threadpool(record_submission, state.registry, parameters, attempt)
        if submission is not None:
            state.dispatcher.submit(submission)
            return submission.run_id
        run_id = run_id_for(key, attempt)
        try:
            flow_run = await state.dispatcher.flow_run(run_id)
        except Exception:  # Prefect away: it may be running; never start a twin on a guess
            return run_id
        if flow_run and flow_run.state and flow_run.state.type.value in RUN_AGAIN_STATES:
            continue
        return run_id
    raise ShipyardError(f"this upload has failed {MAX_RUN_ATTEMPTS} times; not starting it again")


_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)+(?=[\w.@+-])")


def _without_server_paths(value: Any) -> Any:
    """The value with every absolute path's folders dropped (`/srv/x/steps/log.txt` -> `log.txt`)."""
    if isinstance(value, str):
        return _SERVER_PATH.sub("", value)
    if isinstance(value, dict):
        return {k: _without_server_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_server_paths(v) for v in value]
    return value


async def run_status(request: Request) -> JSONResponse:
    state: WebhookState = request.app.state.shipyard
    signed = _authenticate(request, state.settings)
    if isinstance(signed, JSONResponse):
        return signed
    if not signed.signs_headers:
        expected = sign_body(state.settings.secret, signed.timestamp, "GET", _raw_path(request))
        if not matches(expected, signed.signature):
            return _error(401, "bad signature: signature does not match")
    try:
        run_id = str(uuid.UUID(request.path_params["run_id"]))
    except ValueError:
        return _error(400, "run id must be a UUID")
    submission = await run_in_threadpool(read_submission, state.registry, run_id)
    if submission is None:  # only runs this webhook was given; others are the Prefect API's business
        return _error(404, f"no run {run_id} was submitted here")
    flow_run = await state.dispatcher.flow_run(run_id)
    if flow_run is None:  # accepted, its Prefect run not started yet
        return JSONResponse({"run_id": run_id, "state": "PENDING", "state_name": "Submitted"})
    kind = flow_run.state.type.value if flow_run.state else "PENDING"
    body: dict[str, Any] = {
        "run_id": run_id,
        "state": kind,
        "state_name": flow_run.state.name if flow_run.state else None,
    }
    if kind in FINAL_STATES:
        report = await run_in_threadpool(state.registry.run_report, str(flow_run.id))
        if report:
            fields = {"model", "version", "source_sha256", "toolchain", "targets"}
            body.update(_without_server_paths(report.model_dump(mode="json", include=fields)))
        elif kind != "COMPLETED":  # e.g. the prepare step found the upload damaged
            message = flow_run.state.message if flow_run.state else None
            said = _without_server_paths(message.strip().splitlines()[-1][:500]) if message else ""
            body["error"] = said or f"the run ended {kind.lower()} without a report; the service logs say why"
    return JSONResponse(body)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@dataclass
class WebhookState:
    """What the handlers share: settings, one registry client, the dispatcher, the upload slots."""

    settings: WebhookSettings
    registry: Registry
    dispatcher: Dispatcher
    upload_slots: asyncio.Semaphore
    small_upload_slots: asyncio.Semaphore
    body_signed_slots: asyncio.Semaphore
    seen: SeenSignatures


def create_app(settings: WebhookSettings) -> Starlette:
    from registry import open_registry

    registry = open_registry(settings.registry)
    state = WebhookState(
        settings=settings,
        registry=registry,
        dispatcher=Dispatcher(registry, settings.deployment),
        upload_slots=asyncio.Semaphore(settings.max_uploads),
        small_upload_slots=asyncio.Semaphore(settings.max_small_uploads),
        body_signed_slots=asyncio.Semaphore(settings.max_body_signed_uploads),
        seen=SeenSignatures(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.dispatcher.start()
        try:
            yield
        finally:
            await state.dispatcher.stop()

    app = Starlette(
        routes=[
            Route("/v1/models/{name}", submit_model, methods=["POST"]),
            Route("/v1/runs/{run_id}", run_status, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.shipyard = state
    return app


def main() -> None:
    import uvicorn

    settings = WebhookSettings.from_env()
    env = env_settings()  # containers set SHIPYARD_WEBHOOK_HOST=0.0.0.0
    uvicorn.run(create_app(settings), host=env.webhook_host, port=env.webhook_port, log_level="info")


if __name__ == "__main__":
    main()
