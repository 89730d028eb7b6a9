"""The service's health (``GET /ml/health``): the database, the observations, the models this
process holds and its GP queue."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ml_service import __version__
from ml_service.optimizer.suggestion_work import SuggestionWork
from ml_service.repositories import observations as observations_repo
from shared.errors import DatabaseUnavailable
from shared.wire.ml import GPState, HealthResponse

log = logging.getLogger("latina.ml.health")


async def service_health(
    open_pool: Callable[[], Awaitable[asyncpg.Pool[Any]]], work: SuggestionWork
) -> HealthResponse:
    """Never raises for a database that is down: it says so (``status: degraded``)."""
    database, counts = "ok", 0
    try:
        pool = await open_pool()
        async with pool.acquire() as conn:
            counts = await observations_repo.total_observations(conn)
    except (DatabaseUnavailable, OSError) as exc:
        # the reason goes to the log only: its text names hosts and users
        log.warning("health: database unreachable: %s", exc)
        database = "unreachable"
    return HealthResponse(
        status="ok" if database == "ok" else "degraded",
        service="latina-ml",
        version=__version__,
        database=database,
        apis=work.optimizer.space.apis,
        n_observations=counts,
        models=work.optimizer.model_state(),
        gp=GPState.model_validate(work.gp.state()),
    )
