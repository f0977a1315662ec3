"""Durable webhook submissions, kept in the registry so any webhook replica or restart can finish them.

    submissions/<run_id>.json        the submission: its package-model parameters (written once)
    submissions/pending/<run_id>     present until its Prefect flow run exists

`registry gc` keeps the uploads a pending submission needs and removes records older than its
grace period once they are no longer pending.

A submission's run id is derived from its content and attempt number, so the same upload
delivered twice is one submission (the second `create` finds the first). The flow run made for
it carries the run id as its idempotency key, so dispatching twice starts it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from shipyard.errors import AlreadyExists, NotFound

if TYPE_CHECKING:
    from registry._registry import Registry

__all__ = [
    "Submission",
    "mark_dispatched",
    "pending_run_ids",
    "read_submission",
    "record_submission",
    "submission_key",
    "waiting_sources",
]

PENDING = "submissions/pending/"
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


def mark_dispatched(registry: Registry, run_id: str) -> None:
    with contextlib.suppress(NotFound):
        registry.backend.delete(PENDING + run_id)


def waiting_sources(registry: Registry, pending: list[str]) -> set[str]:
    """Digests under incoming/ that these pending submissions will need once their run starts."""
    digests = set()
    for run_id in pending:
        submission = read_submission(registry, run_id)
        for field in ("source", "samples"):
            uri = submission.parameters.get(field) if submission else None
            if isinstance(uri, str) and "/incoming/" in uri:
                digests.add(uri.rsplit("/", 1)[-1])
    return digests
