"""Start a package-model flow run for each durable submission, in the background of the webhook.

The webhook answers 202 once a submission is in the registry (registry/_submissions.py); this
turns it into a Prefect flow run afterwards, so a slow or restarting Prefect server never holds
up an upload. While Prefect is away it retries with backoff; on start, and every RESCAN_S, it
picks up submissions left pending by a restart or by another webhook replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey
from prefect.client.schemas.objects import FlowRun
from starlette.concurrency import run_in_threadpool

from registry import (
    Registry,
    Submission,
    drop_pending,
    mark_dispatched,
    pending_run_ids,
    read_submission,
)

__all__ = ["Dispatcher"]

log = logging.getLogger("shipyard.webhook")

RESCAN_S = 30.0
MAX_BACKOFF_S = 30.0
ORPHAN_MARKER_AGE = timedelta(minutes=10)  # a marker whose record never came (a crash between writes)


class Dispatcher:
    """Pending submissions in, Prefect flow runs out; at least once, and idempotent."""

    def __init__(self, registry: Registry, deployment: str, concurrency: int = 4) -> None:
        self.registry = registry
        self.deployment = deployment
        self.concurrency = concurrency
        self.queue: asyncio.Queue[Submission] = asyncio.Queue()
        self.in_flight: set[str] = set()
        self._client: PrefectClient | None = None
        self._deployment_id: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def client(self) -> PrefectClient:
        if self._client is None:
            raise RuntimeError("the dispatcher is not started")
        return self._client

    async def start(self) -> None:
        self._client = await get_client().__aenter__()
        self._tasks = [asyncio.create_task(self._dispatch_forever()) for _ in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._rescan_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    def submit(self, submission: Submission) -> None:
        if submission.run_id not in self.in_flight:
            self.in_flight.add(submission.run_id)
            self.queue.put_nowait(submission)

    async def flow_run(self, run_id: str) -> FlowRun | None:
        """The flow run started for this submission, if it exists yet."""
        found = await self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[run_id])),
            limit=1,
        )
        return found[0] if found else None

    async def _dispatch_forever(self) -> None:
        while True:
            submission = await self.queue.get()
            delay = 0.5
            while True:
                try:
                    await self._dispatch(submission)
                    break
                except Exception as exc:  # Prefect away or restarting: keep it, try again
                    log.warning(
                        "starting run %s failed (%s); retrying in %.0f s", submission.run_id, exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF_S)
            self.in_flight.discard(submission.run_id)

    async def _dispatch(self, submission: Submission) -> None:
        if self._deployment_id is None:
            self._deployment_id = (await self.client.read_deployment_by_name(self.deployment)).id
        flow_run = await self.client.create_flow_run_from_deployment(
            self._deployment_id,
            parameters=submission.parameters,
            idempotency_key=submission.run_id,  # a second dispatch returns the same flow run
            tags=["webhook"],
        )
        await run_in_threadpool(mark_dispatched, self.registry, submission.run_id, str(flow_run.id))

    async def _rescan_forever(self) -> None:
        while True:
            try:
                await self._rescan()
            except Exception as exc:  # the registry away: next time
                log.warning("looking for pending submissions failed: %s", exc)
            await asyncio.sleep(RESCAN_S)

    async def _rescan(self) -> None:
        for run_id, marked_at in await run_in_threadpool(pending_run_ids, self.registry):
            if run_id in self.in_flight:
                continue
            submission = await run_in_threadpool(read_submission, self.registry, run_id)
            if submission is not None:
                self.submit(submission)
            elif datetime.now(UTC) - marked_at > ORPHAN_MARKER_AGE:
                await run_in_threadpool(drop_pending, self.registry, run_id)
