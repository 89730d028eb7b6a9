"""The job queue on PostgreSQL (pgqueuer): what the gateway puts on it and what it asks of it.

Jobs are enqueued inside the caller's transaction, so a job exists exactly when the rating (or
round) that asked for it was committed; a dedupe key per job makes concurrent requests enqueue
it once. ``gateway.jobs`` runs them.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, cast

import asyncpg
from pgqueuer import AsyncpgDriver, Queries

from shared.db.pool import Conn
from shared.wire.ml import ObservationIn

ML_UPDATE = "ml_update"
ML_FEATURES = "ml_features"
REWARD_TRAIN = "reward_train"
EVOLUTION = "prompt_evolution"


def _queries(conn: Conn) -> Queries:
    """pgqueuer's queries on the caller's connection (and so in its transaction). Its driver
    is typed for a plain connection; a pool's proxy forwards every call to one."""
    return Queries(AsyncpgDriver(cast("asyncpg.Connection[Any]", conn)))


async def enqueue_ml_update(
    conn: Conn,
    experiment_id: str,
    observations: list[ObservationIn],
    *,
    delay_seconds: float,
) -> int:
    """Put the update on the queue inside the caller's transaction; return the job id."""
    payload = json.dumps([o.model_dump(exclude_none=True) for o in observations]).encode()
    queries = _queries(conn)
    ids = await queries.enqueue(
        ML_UPDATE,
        payload,
        execute_after=timedelta(seconds=delay_seconds),
        dedupe_key=f"{ML_UPDATE}:{experiment_id}",
    )
    return int(ids[0])


async def enqueue_ml_features(
    conn: Conn, experiment_id: str, observations: list[ObservationIn]
) -> None:
    """The worker will send these observations again with their images (their features)."""
    payload = json.dumps(
        {
            "experiment_id": experiment_id,
            "observations": [o.model_dump(exclude_none=True) for o in observations],
        }
    ).encode()
    await _queries(conn).enqueue(ML_FEATURES, payload, dedupe_key=f"{ML_FEATURES}:{experiment_id}")


async def enqueue_reward_training(conn: Conn, sample_number: int) -> None:
    """Retrain the reward model after this sample (once, whatever the concurrency)."""
    await _queries(conn).enqueue(
        REWARD_TRAIN, str(sample_number).encode(), dedupe_key=f"{REWARD_TRAIN}:{sample_number}"
    )


async def enqueue_evolution(conn: Conn, sample_number: int) -> None:
    """Run the evolution round of this sample (once, whatever the concurrency)."""
    await _queries(conn).enqueue(
        EVOLUTION, str(sample_number).encode(), dedupe_key=f"{EVOLUTION}:{sample_number}"
    )


async def forget_job(conn: Conn, job_id: int) -> None:
    """The update arrived on the request path: the worker need not deliver it."""
    await conn.execute("DELETE FROM pgqueuer WHERE id = $1 AND status = 'queued'", job_id)


async def features_before(conn: Conn, job_id: int) -> int:
    """Image-feature jobs enqueued before ``job_id`` and not done yet."""
    value = await conn.fetchval(
        "SELECT count(*) FROM pgqueuer WHERE entrypoint = $1 AND id < $2"
        " AND status IN ('queued', 'picked')",
        ML_FEATURES,
        job_id,
    )
    return int(value)


async def pending_jobs(conn: Conn, entrypoint: str) -> int:
    return (await queued_by_entrypoint(conn)).get(entrypoint, 0)


async def queued_by_entrypoint(conn: Conn) -> dict[str, int]:
    """Jobs waiting or running, per entrypoint (what a drain reports before and after)."""
    rows = await conn.fetch(
        "SELECT entrypoint, count(*) AS n FROM pgqueuer"
        " WHERE status IN ('queued', 'picked') GROUP BY entrypoint"
    )
    return {str(row["entrypoint"]): int(row["n"]) for row in rows}


async def work_in_hand(conn: Conn) -> int:
    """Jobs running now or due now (a job deferred to later does not count)."""
    value = await conn.fetchval(
        "SELECT count(*) FROM pgqueuer WHERE status = 'picked'"
        " OR (status = 'queued' AND execute_after <= now())"
    )
    return int(value)
