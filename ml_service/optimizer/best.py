"""The best parameters per API (``GET /ml/best``), answered without waiting behind GP work."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from ml_service.optimizer.facade import data_key, needs_model, observed_best
from ml_service.optimizer.suggestion_work import SuggestionWork
from ml_service.repositories import observations as observations_repo
from shared.wire.ml import BestForApi, BestResponse


async def best_parameters(
    pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, *, fresh: bool = False
) -> BestResponse:
    """Per API, the best parameters tried by the model's posterior mean. Never waits behind GP
    work: the last fit's answer when it is for today's data; a fit now when the GP is idle;
    else the last fit's answer however old (or the observed best), a refit in the background,
    and ``fitted_observations`` / ``model_age_seconds`` say what it is based on. ``fresh``:
    wait for a fit on today's data instead, through the GP queue (``Busy`` when it is full)."""
    out: dict[str, BestForApi] = {}
    async with pool.acquire() as conn:
        loaded = {
            api: await observations_repo.load_observations(conn, study, api)
            for api in work.optimizer.space.apis
        }
    for api, rows in loaded.items():
        snapshot = work.last_best(study, api)
        if not needs_model(rows):
            found, fitted, age = work.optimizer.best(study, api, rows), None, None
        elif snapshot is not None and snapshot.key == data_key(rows):
            found, fitted = snapshot.best, snapshot.fitted_observations
            age = time.monotonic() - snapshot.at
        elif fresh or work.gp.idle():
            found, fitted, age = await work.gp.best(study, api, rows), len(rows), 0.0
            work.remember_best(study, api, rows, found)
        else:
            work.schedule_best_refresh(study, api, rows)
            if snapshot is not None:
                found, fitted = snapshot.best, snapshot.fitted_observations
                age = time.monotonic() - snapshot.at
            else:
                found, fitted, age = observed_best(rows), None, None
        out[api] = BestForApi(
            parameters=found.parameters,
            predicted_rating=found.predicted_rating,
            uncertainty=found.uncertainty,
            n_observations=len(rows),
            source=found.source,
            importance=found.importance,
            fitted_observations=fitted,
            model_age_seconds=None if age is None else round(age, 3),
        )
    return BestResponse(study=study, best=out)
