"""The job worker's resources and one bounded drain of the queue.

``latina worker`` keeps a worker running; on AWS a scheduled Lambda drains the queue once per
invocation and stops before the function's deadline (``drain_jobs``), so a job is never cut off
half-way by the runtime.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pgqueuer.types import QueueExecutionMode

from gateway import jobs
from gateway.adapters.ml_client import HttpMLClient
from gateway.app import build_evolution_deps, ml_http_client
from gateway.flows.evolution import EvolutionDeps
from gateway.flows.pictures import Pictures
from gateway.flows.unit_of_work import UnitOfWorkFactory
from shared.db.pool import connect, create_pool
from shared.db.setup import database_dsn
from shared.settings import Settings
from shared.storage.factory import open_object_store

log = logging.getLogger("latina.worker")
IDLE_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class WorkerDeps:
    dsn: str
    uows: UnitOfWorkFactory
    ml: HttpMLClient
    evolution: EvolutionDeps
    pictures: Pictures | None  # None: ML_SEND_IMAGES is off


@dataclass(frozen=True)
class DrainReport:
    """What one drain did: jobs per entrypoint before and after, and why it stopped."""

    queued_before: dict[str, int]
    queued_after: dict[str, int]
    seconds: float
    stopped_at_deadline: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued_before": self.queued_before,
            "queued_after": self.queued_after,
            "seconds": round(self.seconds, 3),
            "stopped_at_deadline": self.stopped_at_deadline,
        }


async def open_worker(settings: Settings, stack: AsyncExitStack) -> WorkerDeps:
    """Open the pool, object store and ML client a worker needs; ``stack`` closes them."""
    dsn = await database_dsn(settings)
    pool = await create_pool(
        dsn, min_size=1, max_size=3, command_timeout=settings.database_command_timeout
    )
    stack.push_async_callback(pool.close)
    store = await stack.enter_async_context(open_object_store(settings))
    http = ml_http_client(settings)
    stack.push_async_callback(http.aclose)
    uows = UnitOfWorkFactory(pool)
    evolution = build_evolution_deps(settings, uows, store)
    stack.push_async_callback(evolution.aclose)
    pictures = Pictures(uows, store) if settings.ml_send_images else None
    return WorkerDeps(dsn, uows, HttpMLClient(http, study=settings.ml_study), evolution, pictures)


@asynccontextmanager
async def worker_deps(settings: Settings) -> AsyncIterator[WorkerDeps]:
    async with AsyncExitStack() as stack:
        yield await open_worker(settings, stack)


async def _stop_when_idle(uows: UnitOfWorkFactory, shutdown: asyncio.Event) -> None:
    quiet = 0
    while not shutdown.is_set():
        await asyncio.sleep(IDLE_POLL_SECONDS)
        async with uows.read() as uow:
            busy = await uow.jobs.work_in_hand()
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:  # twice in a row: a job that just re-queued itself is not missed
            shutdown.set()


async def drain_jobs(deps: WorkerDeps, *, time_budget: float | None = None) -> DrainReport:
    """Process every ready job, stopping early once ``time_budget`` seconds have passed.

    Jobs already started when the budget runs out are finished; nothing new is picked. Jobs
    that fail are retried by later drains as their retry policy says.
    """
    started = time.monotonic()
    async with deps.uows.read() as uow:
        before = await uow.jobs.queued_by_entrypoint()
    queue_conn = await connect(deps.dsn)
    manager = jobs.build_worker(queue_conn, deps.ml, deps.evolution, pictures=deps.pictures)
    deadline_hit = asyncio.Event()

    def stop() -> None:
        deadline_hit.set()
        manager.shutdown.set()

    timer = (
        asyncio.get_running_loop().call_later(time_budget, stop)
        if time_budget is not None
        else None
    )
    # pgqueuer's drain mode waits for deferred jobs too (a retry due in five minutes would hold
    # the function until its deadline): stop once nothing is running or due.
    idle = asyncio.create_task(_stop_when_idle(deps.uows, manager.shutdown))
    try:
        await manager.run(dequeue_timeout=timedelta(seconds=1), mode=QueueExecutionMode.drain)
    finally:
        idle.cancel()
        if timer is not None:
            timer.cancel()
        await queue_conn.close()
    async with deps.uows.read() as uow:
        after = await uow.jobs.queued_by_entrypoint()
    report = DrainReport(before, after, time.monotonic() - started, deadline_hit.is_set())
    log.info("queue drained", extra=report.as_dict())
    return report
