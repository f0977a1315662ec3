"""The per-worker limit on export steps: a Prefect global concurrency limit named after the worker.

Every step of every run on one worker takes a slot, so two runs on a worker queue for its cores
instead of oversubscribing them. The worker's name and slot count come from its environment
(infra/worker.py sets them; a bare `prefect worker start` gets the host name and its cores).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from shipyard.settings import settings

__all__ = ["LEASE_SECONDS", "ensure_step_limit", "step_limit_name", "step_slot", "worker_slots"]

LEASE_SECONDS = 60.0  # a slot held by a killed worker frees itself after this
SERVER_AWAY_S = 600.0  # how long a step waits for an unreachable Prefect server

log = logging.getLogger("shipyard.concurrency")


def worker_name() -> str:
    return settings().worker_name or socket.gethostname()


def worker_slots() -> int:
    explicit = settings().worker_slots
    return max(1, (os.cpu_count() or 1) if explicit is None else explicit)


def step_limit_name() -> str:
    return f"shipyard-steps-{worker_name()}"


def ensure_step_limit() -> str:
    """Create (or resize) this worker's limit; returns its name."""
    name = step_limit_name()
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.upsert_global_concurrency_limit_by_name(name, worker_slots())  # may race a twin run
    return name


def _unreachable(exc: BaseException) -> bool:
    """The Prefect server is away (restarting, a network blip), as opposed to a real refusal.

    Prefect wraps the transport error (ConcurrencySlotAcquisitionError from ConnectError): look
    down the chain of causes.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, httpx.TransportError):
            return True
        if isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code >= 500:
            return True
        cause = cause.__cause__
    return False


@contextmanager
def step_slot(limit: str) -> Iterator[None]:
    """Hold one slot of `limit` while a step runs (waits for a free one, and for the server).

    While the Prefect server is unreachable, taking the slot is retried for up to
    SERVER_AWAY_S; giving it back is left to the lease when the server is away then.
    """
    deadline = time.monotonic() + SERVER_AWAY_S
    delay = 1.0
    while True:
        slot = concurrency(
            limit,
            occupy=1,
            lease_duration=LEASE_SECONDS,
            strict=True,  # the flow created the limit; its absence would be a bug
            raise_on_lease_renewal_failure=False,  # a Prefect server restart must not kill the step
        )
        try:
            slot.__enter__()
            break
        except Exception as exc:
            if not _unreachable(exc) or time.monotonic() > deadline:
                raise
            log.warning("Prefect unreachable while taking a step slot (%s); retrying in %.0f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    try:
        yield
    finally:
        try:
            slot.__exit__(None, None, None)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            log.warning("could not give the step slot back (%s); its lease will expire", exc)
