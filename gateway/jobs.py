"""The job queue on PostgreSQL (pgqueuer): ML-update delivery, image features, reward-model
training and prompt evolution.

A rating's ML update is enqueued in the rating's own transaction, so it is never lost; the
gateway then tries to deliver it at once, and only when that fails does the worker pick it up
(after ``ML_DELIVERY_RETRY_DELAY`` seconds, then with exponential backoff) until the ML service
has it. Delivery is idempotent on the ML side (``observation_id``), so a race between the
immediate attempt and the worker can never count an observation twice.

The images of a rating (``ML_SEND_IMAGES``) go by the worker only (``ml_features``, see
``gateway.flows.pictures``); reward-model training first waits for the features of the ratings
before it.
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

from gateway.adapters.ml_client import MLClient
from gateway.errors import UpstreamError
from gateway.flows.evolution import EVOLUTION, EvolutionDeps, run_round
from gateway.flows.pictures import Pictures
from shared.wire.ml import ObservationIn

log = logging.getLogger("latina.jobs")

ML_UPDATE = "ml_update"
ML_FEATURES = "ml_features"
REWARD_TRAIN = "reward_train"
DELIVERY_TIMEOUT = 30.0  # the worker is in no hurry; the request path uses a shorter one
FEATURES_WAIT = 120.0  # how long reward training waits for earlier ratings' images
FEATURES_POLL = 0.5


async def enqueue_ml_update(
    conn: asyncpg.Connection[Any] | Any,
    experiment_id: str,
    observations: list[ObservationIn],
    *,
    delay_seconds: float,
) -> int:
    """Put the update on the queue inside the caller's transaction; return the job id."""
    payload = json.dumps([o.model_dump(exclude_none=True) for o in observations]).encode()
    queries = Queries(AsyncpgDriver(conn))
    ids = await queries.enqueue(
        ML_UPDATE,
        payload,
        execute_after=timedelta(seconds=delay_seconds),
        dedupe_key=f"{ML_UPDATE}:{experiment_id}",
    )
    return int(ids[0])


async def enqueue_ml_features(
    conn: asyncpg.Connection[Any] | Any, experiment_id: str, observations: list[ObservationIn]
) -> None:
    """The worker will send these observations again with their images (their features)."""
    payload = json.dumps(
        {
            "experiment_id": experiment_id,
            "observations": [o.model_dump(exclude_none=True) for o in observations],
        }
    ).encode()
    await Queries(AsyncpgDriver(conn)).enqueue(
        ML_FEATURES, payload, dedupe_key=f"{ML_FEATURES}:{experiment_id}"
    )


async def _features_before(pool: asyncpg.Pool[Any], job_id: int) -> int:
    value = await pool.fetchval(
        "SELECT count(*) FROM pgqueuer WHERE entrypoint = $1 AND id < $2"
        " AND status IN ('queued', 'picked')",
        ML_FEATURES,
        job_id,
    )
    return int(value)


async def enqueue_reward_training(conn: asyncpg.Connection[Any] | Any, sample_number: int) -> None:
    """Retrain the reward model after this sample (once, whatever the concurrency)."""
    await Queries(AsyncpgDriver(conn)).enqueue(
        REWARD_TRAIN, str(sample_number).encode(), dedupe_key=f"{REWARD_TRAIN}:{sample_number}"
    )


async def forget_job(conn: asyncpg.Connection[Any] | Any, job_id: int) -> None:
    """The update arrived on the request path: the worker need not deliver it."""
    await conn.execute("DELETE FROM pgqueuer WHERE id = $1 AND status = 'queued'", job_id)


async def pending_jobs(conn: asyncpg.Connection[Any] | Any, entrypoint: str) -> int:
    return (await queued_by_entrypoint(conn)).get(entrypoint, 0)


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
                if not await _features_before(pictures.pool, job.id):
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
            extra={"version": result.get("version"), "n_samples": result.get("n_samples")},
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


async def queued_by_entrypoint(conn: asyncpg.Connection[Any] | Any) -> dict[str, int]:
    """Jobs waiting or running, per entrypoint (what a drain reports before and after)."""
    rows = await conn.fetch(
        "SELECT entrypoint, count(*) AS n FROM pgqueuer"
        " WHERE status IN ('queued', 'picked') GROUP BY entrypoint"
    )
    return {str(row["entrypoint"]): int(row["n"]) for row in rows}


async def work_in_hand(conn: asyncpg.Connection[Any] | Any) -> int:
    """Jobs running now or due now (a job deferred to later does not count)."""
    value = await conn.fetchval(
        "SELECT count(*) FROM pgqueuer WHERE status = 'picked'"
        " OR (status = 'queued' AND execute_after <= now())"
    )
    return int(value)
