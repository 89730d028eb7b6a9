"""The worker's side of the job queue: each entrypoint and the work it does, and the worker
that runs them (``gateway.adapters.job_queue`` puts the jobs on the queue).

A rating's ML update is enqueued in the rating's own transaction, so it is never lost; the
gateway then tries to deliver it at once, and only when that fails does the worker pick it up
(after ``ML_DELIVERY_RETRY_DELAY`` seconds, then with exponential backoff) until the ML service
has it. Delivery is idempotent on the ML side (``observation_id``), so a race between the
immediate attempt and the worker can never count an observation twice.

The images of a rating (``ML_SEND_IMAGES``) go by the worker only (``ml_features``, see
``gateway.flows.pictures``); reward-model training first waits for the features of the ratings
before it. Prompt evolution runs ``gateway.flows.evolution.run_round``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

import asyncpg
from pgqueuer import AsyncpgDriver, DatabaseRetryEntrypointExecutor, Job, Queries, QueueManager
from pgqueuer.executors import EntrypointExecutorParameters
from pgqueuer.types import QueueExecutionMode

from gateway.adapters.job_queue import (
    EVOLUTION,
    ML_FEATURES,
    ML_UPDATE,
    REWARD_TRAIN,
)
from gateway.adapters.ml_client import MLClient
from gateway.errors import UpstreamError
from gateway.flows.evolution import EvolutionDeps, run_round
from gateway.flows.pictures import Pictures
from shared.wire.ml import ObservationIn

log = logging.getLogger("latina.jobs")

DELIVERY_TIMEOUT = 30.0  # the worker is in no hurry; the request path uses a shorter one
FEATURES_WAIT = 120.0  # how long reward training waits for earlier ratings' images
FEATURES_POLL = 0.5


def build_worker(
    conn: asyncpg.Connection[Any],
    ml: MLClient,
    evolution: EvolutionDeps | None = None,
    *,
    pictures: Pictures | None = None,
    max_delay_seconds: float = 300.0,
) -> QueueManager:
    """A queue manager on its own connection, with the gateway's entrypoints registered
    (``ml_features`` jobs need ``pictures``: without it they are dropped with a warning)."""
    manager = QueueManager(Queries(AsyncpgDriver(conn)))

    def retrying(params: EntrypointExecutorParameters) -> DatabaseRetryEntrypointExecutor:
        # An update must arrive eventually: retry for days rather than give up.
        return DatabaseRetryEntrypointExecutor(
            parameters=params,
            max_attempts=10_000,
            initial_delay=timedelta(seconds=2),
            max_delay=timedelta(seconds=max_delay_seconds),
        )

    @manager.entrypoint(ML_UPDATE, executor_factory=retrying)
    async def deliver_ml_update(job: Job) -> None:
        assert job.payload is not None
        observations = [ObservationIn.model_validate(o) for o in json.loads(job.payload)]
        await ml.update(observations, timeout=DELIVERY_TIMEOUT)
        log.info(
            "ml update delivered by the worker", extra={"job_id": job.id, "attempts": job.attempts}
        )

    # One at a time: reading and downscaling images is CPU work that nobody waits for, and a
    # burst of ratings must not find the cores taken by their own images.
    @manager.entrypoint(ML_FEATURES, concurrency_limit=1, executor_factory=retrying)
    async def deliver_ml_features(job: Job) -> None:
        assert job.payload is not None
        if pictures is None:
            log.warning("image features dropped: this worker cannot read images")
            return
        body = json.loads(job.payload)
        observations = [ObservationIn.model_validate(o) for o in body["observations"]]
        with_images = await pictures.attach(body["experiment_id"], observations)
        if not with_images:
            return
        try:
            await ml.update(with_images, timeout=DELIVERY_TIMEOUT)
        except UpstreamError as exc:
            status = (exc.details or {}).get("status")
            if isinstance(status, int) and 400 <= status < 500 and status != 429:
                # refused for good (an image it cannot read, a conflict): no retry helps
                log.warning(
                    "image features refused by the ML service: %s",
                    exc.message,
                    extra={"experiment": body["experiment_id"], "status": status},
                )
                return
            raise

    def reward_retries(params: EntrypointExecutorParameters) -> DatabaseRetryEntrypointExecutor:
        return DatabaseRetryEntrypointExecutor(
            parameters=params,
            max_attempts=5,
            initial_delay=timedelta(seconds=30),
            max_delay=timedelta(seconds=max_delay_seconds),
        )

    @manager.entrypoint(REWARD_TRAIN, executor_factory=reward_retries)
    async def train_reward_model(job: Job) -> None:
        if pictures is not None:  # the features of the ratings before it come first
            for _ in range(int(FEATURES_WAIT / FEATURES_POLL)):
                async with pictures.uows.read() as uow:
                    earlier = await uow.jobs.features_before(job.id)
                if not earlier:
                    break
                await asyncio.sleep(FEATURES_POLL)
        try:
            result = await ml.reward_train()
        except UpstreamError as exc:
            if (exc.details or {}).get("status") == 422:  # not enough data yet: nothing to retry
                log.info("reward model not trained yet", extra={"reason": exc.message})
                return
            raise
        log.info(
            "reward model retrained",
            extra={"version": result.version, "n_samples": result.n_samples},
        )

    if evolution is not None:

        def few_retries(params: EntrypointExecutorParameters) -> DatabaseRetryEntrypointExecutor:
            # Evolvers fall back on their own; retries here cover the database going away.
            return DatabaseRetryEntrypointExecutor(
                parameters=params,
                max_attempts=5,
                initial_delay=timedelta(seconds=5),
                max_delay=timedelta(seconds=max_delay_seconds),
            )

        @manager.entrypoint(EVOLUTION, executor_factory=few_retries)
        async def evolve_prompt(job: Job) -> None:
            assert job.payload is not None
            await run_round(evolution, int(job.payload.decode()))

    return manager


async def run_worker(
    conn: asyncpg.Connection[Any],
    ml: MLClient,
    evolution: EvolutionDeps | None = None,
    *,
    pictures: Pictures | None = None,
    drain: bool = False,
) -> QueueManager:
    """Process jobs until shut down (``manager.shutdown.set()``), or until none are ready."""
    manager = build_worker(conn, ml, evolution, pictures=pictures)
    mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
    await manager.run(dequeue_timeout=timedelta(seconds=5), mode=mode)
    return manager
