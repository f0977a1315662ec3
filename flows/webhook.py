"""The REST webhook: a signed model upload starts a package-model run; runs can be polled.

POST /v1/models/{name}   multipart: file (the model), optional spec (YAML/JSON), targets (a,b),
                         samples (an .npz of validation inputs) -> 202 {run_id, status_url, source_sha256}
GET  /v1/runs/{run_id}   -> {run_id, state, ...}; when the run is done, `targets` as in the CLI's --json
GET  /healthz            -> {"ok": true}

Both /v1 routes are signed (flows/_signing.py: timestamp, method, path and raw body; a GET signs an
empty body). Missing, malformed or stale signature headers are refused (401) before any of the
body is read; at most SHIPYARD_WEBHOOK_MAX_UPLOADS large (or chunked) uploads and
SHIPYARD_WEBHOOK_MAX_SMALL_UPLOADS uploads of at most 8 MiB are spooled at once (503 with
Retry-After beyond that); the spool is removed on every exit, a client disconnect included.

Run: python -m flows.webhook (127.0.0.1:$SHIPYARD_WEBHOOK_PORT, default 8000). Settings come from
the environment: SHIPYARD_WEBHOOK_SECRET (required, at least 16 characters), SHIPYARD_REGISTRY,
SHIPYARD_WEBHOOK_MAX_MB, SHIPYARD_WEBHOOK_MAX_UPLOADS, SHIPYARD_WEBHOOK_SPOOL_DIR, PREFECT_API_URL.
The handler checks the upload, stores it and the submission in the registry, and answers 202:
from then on the submission is durable (a webhook or Prefect restart loses nothing accepted).
A background dispatcher (flows/_dispatcher.py) starts its package-model flow run; the work
happens on a Prefect worker. The run id names the submission before and after its flow run
exists. Nothing in an upload is ever executed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from flows._dispatcher import Dispatcher
from flows._signing import RequestSigner, header_problem
from registry import Registry, read_submission, record_submission, run_id_for, submission_key
from shipyard.digests import sha256_file
from shipyard.errors import ShipyardError, SpecError
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

    @classmethod
    def from_env(cls) -> WebhookSettings:
        secret = os.environ.get("SHIPYARD_WEBHOOK_SECRET", "")
        if len(secret) < 16:
            raise SystemExit("SHIPYARD_WEBHOOK_SECRET must be set (at least 16 characters)")
        port = int(os.environ.get("SHIPYARD_WEBHOOK_PORT", "8000"))
        return cls(
            secret=secret,
            registry=os.environ.get("SHIPYARD_REGISTRY"),
            max_bytes=int(float(os.environ.get("SHIPYARD_WEBHOOK_MAX_MB", "2048")) * 1024 * 1024),
            public_url=os.environ.get("SHIPYARD_WEBHOOK_PUBLIC_URL", f"http://127.0.0.1:{port}"),
            spool_dir=Path(os.environ.get("SHIPYARD_WEBHOOK_SPOOL_DIR", tempfile.gettempdir())),
            max_uploads=int(os.environ.get("SHIPYARD_WEBHOOK_MAX_UPLOADS", "4")),
            max_small_uploads=int(os.environ.get("SHIPYARD_WEBHOOK_MAX_SMALL_UPLOADS", "64")),
        )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _raw_path(request: Request) -> str:
    """The path as the client sent it (what it signed), not as routing decoded it."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    return raw.decode("latin-1")


def _signer(request: Request, settings: WebhookSettings) -> RequestSigner:
    """The signature this request must carry, computed as its body arrives (after _refused_headers)."""
    timestamp = request.headers["x-shipyard-timestamp"]
    return RequestSigner(settings.secret, timestamp, request.method, _raw_path(request))


def _refused_headers(request: Request) -> JSONResponse | None:
    problem = header_problem(
        request.headers.get("x-shipyard-timestamp"), request.headers.get("x-shipyard-signature")
    )
    return _error(401, f"bad signature: {problem}") if problem else None


def _too_large(settings: WebhookSettings) -> JSONResponse:
    return _error(413, f"upload is larger than {settings.max_bytes // (1024 * 1024)} MB")


async def _spool_signed_body(
    request: Request, settings: WebhookSettings, spool: Any, cap: int
) -> JSONResponse | None:
    """Stream the body to disk, at most `cap` bytes, checking the signature over the raw bytes."""
    signer = _signer(request, settings)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return (
                _too_large(settings) if cap == settings.max_bytes else _error(400, "body exceeds its length")
            )
        signer.update(chunk)
        spool.write(chunk)
    if not signer.matches(request.headers["x-shipyard-signature"]):
        return _error(401, "bad signature: signature does not match")
    spool.seek(0)
    return None


async def _form_from(request: Request, spool: Any) -> Any:
    async def receive() -> dict[str, Any]:
        chunk = spool.read(1 << 16)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

    replay = Request(request.scope, receive)
    return await replay.form(max_files=2, max_fields=4, max_part_size=1024 * 1024)


def _save_upload(upload: UploadFile, path: Path) -> Path:
    """Copy an uploaded file out of the form (its name is never used: content decides)."""
    upload.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return path


async def submit_model(request: Request) -> JSONResponse:
    state: WebhookState = request.app.state.shipyard
    settings = state.settings
    name = request.path_params["name"]
    if not MODEL_NAME_RE.fullmatch(name):
        return _error(400, "model name must be lowercase letters, digits, '.', '_' or '-' (at most 64)")
    refused = _refused_headers(request)
    if refused:
        return refused
    declared = request.headers.get("content-length")
    size = int(declared) if declared and declared.isdigit() else None
    if size is not None and size > settings.max_bytes:
        return _too_large(settings)
    small = size is not None and size <= SMALL_UPLOAD_BYTES
    cap = size if size is not None and small else settings.max_bytes
    slots = state.small_upload_slots if small else state.upload_slots
    if slots.locked():
        count = settings.max_small_uploads if small else settings.max_uploads
        busy = _error(503, f"{count} uploads of this size are being received; try again shortly")
        busy.headers["Retry-After"] = str(RETRY_AFTER_S)
        return busy
    async with slots:
        folder = Path(tempfile.mkdtemp(prefix="shipyard-upload-", dir=settings.spool_dir))
        try:
            return await _receive(request, settings, name, folder, cap=cap)
        except ClientDisconnect:
            return _error(400, "the client went away before the upload was complete")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


async def _receive(
    request: Request, settings: WebhookSettings, name: str, folder: Path, cap: int
) -> JSONResponse:
    with (folder / "body").open("w+b") as spool:
        refused = await _spool_signed_body(request, settings, spool, cap)
        if refused:
            return refused
        form = await _form_from(request, spool)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return _error(422, "missing multipart field 'file' (the model)")
        try:
            return await _accept(request.app.state.shipyard, name, form, upload, folder)
        except ShipyardError as exc:  # say what is wrong, not where the server keeps the upload
            message = str(exc).replace(str(folder.resolve() / "source"), "the uploaded file")
            return _error(422, message.replace(str(folder.resolve() / "samples"), "the uploaded samples"))


async def _accept(
    state: WebhookState, name: str, form: Any, upload: UploadFile, folder: Path
) -> JSONResponse:
    from registry import store_incoming
    from targets.pipeline import check_request

    settings = state.settings
    spec_text = form.get("spec") or ""
    spec = parse_spec(parse_spec_text(spec_text, "spec") if str(spec_text).strip() else None)
    if spec.samples:
        raise SpecError(
            "spec field samples: not accepted over the webhook (it would name a file on the server); "
            "upload the .npz as the multipart field 'samples'"
        )
    path = await run_in_threadpool(_save_upload, upload, folder / "source")
    samples = form.get("samples")
    if samples is not None and not isinstance(samples, UploadFile):
        raise SpecError("samples: send the .npz as a file field")
    samples_path = await run_in_threadpool(_save_upload, samples, folder / "samples") if samples else None
    checked = spec.model_copy(update={"samples": str(samples_path)}) if samples_path else spec
    request = await run_in_threadpool(check_request, path, checked, str(form.get("targets") or ""), name)
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


async def run_status(request: Request) -> JSONResponse:
    from prefect.exceptions import ObjectNotFound

    state: WebhookState = request.app.state.shipyard
    refused = _refused_headers(request)
    if refused:
        return refused
    signer = _signer(request, state.settings)
    if not signer.matches(request.headers["x-shipyard-signature"]):
        return _error(401, "bad signature: signature does not match")
    try:
        run_id = str(uuid.UUID(request.path_params["run_id"]))
    except ValueError:
        return _error(400, "run id must be a UUID")
    submission = await run_in_threadpool(read_submission, state.registry, run_id)
    if submission is not None:
        flow_run = await state.dispatcher.flow_run(run_id)
        if flow_run is None:  # accepted, its Prefect run not started yet
            return JSONResponse({"run_id": run_id, "state": "PENDING", "state_name": "Submitted"})
    else:  # a run started another way (the UI, the CLI)
        try:
            flow_run = await state.dispatcher.client.read_flow_run(uuid.UUID(run_id))
        except ObjectNotFound:
            return _error(404, f"no run {run_id}")
    kind = flow_run.state.type.value if flow_run.state else "PENDING"
    body: dict[str, Any] = {
        "run_id": run_id,
        "state": kind,
        "state_name": flow_run.state.name if flow_run.state else None,
    }
    if kind in FINAL_STATES:
        report = await run_in_threadpool(state.registry.run_report, str(flow_run.id))
        if report:
            body.update({k: report[k] for k in ("model", "version", "source_sha256", "toolchain", "targets")})
        elif kind != "COMPLETED":  # the details stay in the service's logs
            body["error"] = f"the run ended {kind.lower()} without a report; the service logs say why"
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


def create_app(settings: WebhookSettings) -> Starlette:
    from registry import open_registry

    registry = open_registry(settings.registry)
    state = WebhookState(
        settings=settings,
        registry=registry,
        dispatcher=Dispatcher(registry, settings.deployment),
        upload_slots=asyncio.Semaphore(settings.max_uploads),
        small_upload_slots=asyncio.Semaphore(settings.max_small_uploads),
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
    port = int(os.environ.get("SHIPYARD_WEBHOOK_PORT", "8000"))
    host = os.environ.get("SHIPYARD_WEBHOOK_HOST", "127.0.0.1")  # containers set 0.0.0.0
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


if __name__ == "__main__":
    main()
