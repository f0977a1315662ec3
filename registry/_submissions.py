"""Durable webhook submissions, kept in the registry so any webhook replica or restart can finish them.

    submissions/<run_id>.json         the submission: its package-model parameters (written once)
    submissions/pending/<run_id>      present until its Prefect flow run exists
    submissions/dispatched/<run_id>   the id of that flow run, once it exists

`registry gc` keeps every submission whose run has not finished (pending, or dispatched and no
report recorded under `runs/` yet, for at most `UNFINISHED_KEPT`) or that is younger than its
grace period, and the uploads those submissions need; it removes the others.

A submission's run id is derived from its content and attempt number, so the same upload
delivered twice is one submission (the second `create` finds the first). The flow run made for
it carries the run id as its idempotency key, so dispatching twice starts it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from shipyard.errors import AlreadyExists, NotFound

if TYPE_CHECKING:
    from registry._registry import Registry

__all__ = [
    "Submission",
    "drop_pending",
    "kept_submissions",
    "mark_dispatched",
    "pending_run_ids",
    "read_submission",
    "record_submission",
    "submission_key",
    "uploads_needed",
]

PENDING = "submissions/pending/"
DISPATCHED = "submissions/dispatched/"
# A run unfinished this long is dead (crashed past its retries); its upload is not kept for it.
UNFINISHED_KEPT = timedelta(days=7)
_NAMESPACE = uuid.UUID("6f1c1a4e-5d0b-4a43-9a0e-2b7d3c1f0a11")


class Submission(BaseModel):
    """One accepted upload: what package-model will be started with."""

    run_id: str
    key: str  # digest of the parameters: equal for redeliveries of the same upload
    attempt: int
    parameters: dict[str, Any]
    received_at: str


def submission_key(parameters: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()


def run_id_for(key: str, attempt: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{key}.{attempt}"))


def _record_key(run_id: str) -> str:
    return f"submissions/{run_id}.json"


def record_submission(registry: Registry, parameters: dict[str, Any], attempt: int) -> Submission | None:
    """Write attempt `attempt` of this upload durably; None if it was written before (a redelivery).

    The pending marker goes first: a crash between the two writes leaves a marker whose
    record is missing, which the dispatcher drops, never a record nobody will start.
    """
    key = submission_key(parameters)
    run_id = run_id_for(key, attempt)
    submission = Submission(
        run_id=run_id,
        key=key,
        attempt=attempt,
        parameters=parameters,
        received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    with contextlib.suppress(AlreadyExists):
        registry.backend.create(PENDING + run_id, b"")
    try:
        registry.backend.create(_record_key(run_id), submission.model_dump_json().encode())
    except AlreadyExists:
        return None
    return submission


def read_submission(registry: Registry, run_id: str) -> Submission | None:
    try:
        data, _ = registry.backend.read(_record_key(run_id))
    except NotFound:
        return None
    return Submission.model_validate_json(data)


def pending_run_ids(registry: Registry) -> list[tuple[str, datetime]]:
    """Run ids whose flow run may not exist yet, with when they were marked, oldest first."""
    found = sorted(registry.backend.list(PENDING), key=lambda item: item[1])
    return [(key.rsplit("/", 1)[-1], marked_at) for key, marked_at in found]


def mark_dispatched(registry: Registry, run_id: str, flow_run_id: str) -> None:
    """The submission's flow run exists: record its id, then drop the pending marker."""
    with contextlib.suppress(AlreadyExists):
        registry.backend.create(DISPATCHED + run_id, flow_run_id.encode())
    drop_pending(registry, run_id)


def drop_pending(registry: Registry, run_id: str) -> None:
    with contextlib.suppress(NotFound):
        registry.backend.delete(PENDING + run_id)


def _finished(registry: Registry, run_id: str) -> bool:
    """Its flow run exists and has recorded its report (a run that never dispatched: False)."""
    try:
        flow_run_id, _ = registry.backend.read(DISPATCHED + run_id)
    except NotFound:
        return False
    return registry.backend.exists(f"runs/{flow_run_id.decode()}.json")


def kept_submissions(
    registry: Registry, now: datetime, grace: timedelta
) -> tuple[set[str], list[tuple[str, datetime]]]:
    """(run ids of the submissions gc keeps, the records it may delete with their times).

    Kept: pending ones, those younger than `grace`, and those whose run has not finished, up to
    UNFINISHED_KEPT. A new submission of an upload already stored keeps that upload for its own
    lifetime, however old the upload's object is.
    """
    pending = {run_id for run_id, _ in pending_run_ids(registry)}
    kept, expired = set(pending), []
    for key, modified in registry.backend.list("submissions/"):
        if key.startswith((PENDING, DISPATCHED)):
            continue
        run_id, age = key.rsplit("/", 1)[-1].removesuffix(".json"), now - modified
        young = age <= grace
        if run_id in pending or young or (age <= UNFINISHED_KEPT and not _finished(registry, run_id)):
            kept.add(run_id)
        else:
            expired.append((key, modified))
    return kept, expired


def uploads_needed(registry: Registry, run_ids: set[str]) -> set[str]:
    """Digests under incoming/ that these submissions' runs read (or will)."""
    digests = set()
    for run_id in sorted(run_ids):
        submission = read_submission(registry, run_id)
        for field in ("source", "samples"):
            uri = submission.parameters.get(field) if submission else None
            if isinstance(uri, str) and "/incoming/" in uri:
                digests.add(uri.rsplit("/", 1)[-1])
    return digests
