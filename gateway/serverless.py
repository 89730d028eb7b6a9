"""What the gateway's Lambda functions do (``gateway/handler.py`` only wires them up).

- ``http``: the whole gateway behind a function URL, through Mangum with ``lifespan="off"``;
  resources open on the first request (``create_app(lazy=True)``).
- ``worker``: a scheduled function that drains the job queue once per invocation and stops
  ``WORKER_STOP_MARGIN_SECONDS`` before the function's deadline.
- ``migrate``: applies pending migrations (gateway and ML schemas) against the stage's
  database; ``make deploy`` invokes it after every deploy.

Each function's resources are opened once per container, on the runtime's event loop (the one
Mangum also uses), and live as long as the container.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from aws_lambda_powertools.metrics import MetricUnit

from gateway.adapters import job_queue
from gateway.worker import WorkerDeps, drain_jobs, open_worker
from shared.aws.lambda_entry import lambda_metrics
from shared.db.migrations import apply_migrations
from shared.db.pool import connect
from shared.db.setup import database_dsn
from shared.settings import Settings

log = logging.getLogger("latina.lambda")
WORKER_SERVICE = "latina-worker"
T = TypeVar("T")


def run_on_runtime_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on this thread's event loop, which survives between invocations."""
    with warnings.catch_warnings():
        # Python 3.12+ warns when get_event_loop() has to create the loop (first invocation).
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = asyncio.get_event_loop()
    return loop.run_until_complete(coro)


def remaining_seconds(context: Any) -> float | None:
    """Seconds left before the runtime stops this invocation (None without a Lambda context)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return None if remaining is None else remaining() / 1000.0


class ScheduledWorker:
    """The worker function: one bounded drain of the job queue per scheduled event."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()  # closed only when the container ends
        self._deps: WorkerDeps | None = None

    async def drain(self, context: Any) -> dict[str, Any]:
        if self._deps is None:
            self._deps = await open_worker(self.settings, self._stack)
        left = remaining_seconds(context)
        budget = None if left is None else max(1.0, left - self.settings.worker_stop_margin_seconds)
        report = await drain_jobs(self._deps, time_budget=budget)
        if self.settings.aws_lambda_function_name is not None:
            # Alarm on these: a queue that keeps growing means the ML service or LLM is failing.
            metrics = lambda_metrics(WORKER_SERVICE)
            metrics.add_metric(
                name="QueuedJobs", unit=MetricUnit.Count, value=sum(report.queued_after.values())
            )
            metrics.add_metric(
                name="QueuedMLUpdates",
                unit=MetricUnit.Count,
                value=report.queued_after.get(job_queue.ML_UPDATE, 0),
            )
        return report.as_dict()

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._deps = None

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("source") not in (None, "aws.events", "aws.scheduler", "latina"):
            log.warning("worker invoked by an unexpected event", extra={"event": event})
        return run_on_runtime_loop(self.drain(context))


class Migrator:
    """The migrate function: apply pending migrations and say what it did."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def migrate(self) -> dict[str, Any]:
        dsn = await database_dsn(self.settings, migrate=False)
        conn = await connect(dsn)
        try:
            report = await apply_migrations(conn)
        finally:
            await conn.close()
        result = {
            "applied": list(report.applied),
            "already_applied": report.already_applied,
            "changed_after_applied": list(report.changed),
        }
        log.info("migrations applied", extra=result)
        return result

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return run_on_runtime_loop(self.migrate())
