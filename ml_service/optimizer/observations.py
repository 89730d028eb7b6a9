"""Recording observations (``update_model``): stored durably, with the features of any images
they carry, before the answer."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import asyncpg

from ml_service.errors import Conflict, InvalidInput
from ml_service.images import features
from ml_service.images.workers import Failure, ImageWork, Item
from ml_service.optimizer.facade import observed_best
from ml_service.optimizer.suggestion_work import SuggestionWork
from ml_service.optimizer.suggestions import precompute_later
from ml_service.optimizer.validation import check_observation
from ml_service.repositories import features as features_repo
from ml_service.repositories import observations as observations_repo
from ml_service.repositories import studies as studies_repo
from shared.wire.ml import BestForApi, ObservationIn, UpdateResponse


def _as_stored(obs: ObservationIn) -> observations_repo.Observation:
    return observations_repo.Observation(
        observation_id=obs.observation_id,
        suggestion_id=obs.suggestion_id,
        api=obs.api,
        parameters=dict(obs.parameters),
        rating=obs.rating,
        prompt_version=obs.prompt_version,
    )


def _same(a: observations_repo.Observation, b: observations_repo.Observation) -> bool:
    return (
        a.api == b.api
        and a.rating == b.rating
        and {k: float(v) for k, v in a.parameters.items()}
        == {k: float(v) for k, v in b.parameters.items()}
    )


async def _image_features(images: ImageWork, observations: list[ObservationIn]) -> dict[str, Any]:
    """Features of the observations that carry their image (in the image workers)."""
    carrying: list[ObservationIn] = []
    items: list[Item] = []
    for obs in observations:
        if obs.image_b64 is None:
            continue
        try:
            image = base64.b64decode(obs.image_b64, validate=True)
            original = (
                base64.b64decode(obs.original_b64, validate=True) if obs.original_b64 else None
            )
        except binascii.Error as exc:
            raise InvalidInput(
                "image_b64 and original_b64 must be base64",
                code="invalid_image",
                details={"observation_id": obs.observation_id},
            ) from exc
        carrying.append(obs)
        items.append((image, original))
    out: dict[str, Any] = {}
    for obs, vector in zip(carrying, await images.features(items), strict=True):
        if isinstance(vector, Failure):
            raise vector.error({"observation_id": obs.observation_id})
        out[obs.observation_id] = vector
    return out


async def update_model(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    images: ImageWork,
    study: str,
    observations: list[ObservationIn],
) -> UpdateResponse:
    """Store the observations (and the features of any images they carry) durably, in one
    transaction, before answering."""
    space = work.optimizer.space
    for obs in observations:
        check_observation(space, obs)
    ids = [o.observation_id for o in observations]
    if len(set(ids)) != len(ids):
        raise InvalidInput("observation_id repeats within the batch", code="duplicate_observation")
    incoming = {o.observation_id: _as_stored(o) for o in observations}
    vectors = await _image_features(images, observations)
    async with pool.acquire() as conn, conn.transaction():
        await studies_repo.ensure_study(conn, study)
        existing = await observations_repo.insert_observations(conn, study, list(incoming.values()))
        for obs in observations:
            if obs.observation_id in vectors:
                await features_repo.insert_features(
                    conn,
                    study,
                    obs.observation_id,
                    obs.group(),
                    features.FEATURE_VERSION,
                    [float(v) for v in vectors[obs.observation_id]],
                )
        for stored in existing:
            if not _same(stored, incoming[stored.observation_id]):
                raise Conflict(
                    f"observation {stored.observation_id!r} was already recorded with other values",
                    code="observation_conflict",
                    details={"observation_id": stored.observation_id},
                )
        counts = await observations_repo.count_observations(conn, study)
        best: dict[str, BestForApi] = {}
        for api in space.apis:
            rows = await observations_repo.load_observations(conn, study, api)
            found = observed_best(rows) if rows else None
            best[api] = BestForApi(
                parameters=found.parameters if found else None,
                predicted_rating=found.predicted_rating if found else None,
                uncertainty=None,
                n_observations=len(rows),
                source="observed" if found else "none",
            )
    for api in {o.api for o in observations}:
        precompute_later(pool, work, study, api)
    return UpdateResponse(
        updated=True,
        n_observations={api: counts.get(api, 0) for api in space.apis},
        best=best,
    )
