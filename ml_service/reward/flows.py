"""Phase 2 flows: train the reward model on observations with image features, score candidate
images, report its state. The model's bytes live in the object store, one object per version;
``ml.reward_models`` says which version is current. Processes load the current one on demand
and keep it while it stays current."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from ml_service.errors import InvalidInput, NotFound
from ml_service.images import features as fx
from ml_service.images.workers import Failure, Item
from ml_service.repositories import features as features_repo
from ml_service.resources import Resources
from ml_service.reward import model as rm

log = logging.getLogger("latina.ml.reward")
Progress = Callable[[int, int, float], None]


async def _samples(pool: asyncpg.Pool[Any], study: str) -> list[rm.Sample]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT f.features, f.group_id, o.api, o.parameters, o.rating
            FROM ml.observation_features f
            JOIN ml.observations o USING (study, observation_id)
            WHERE f.study = $1 AND f.feature_version = $2
            ORDER BY o.id
            """,
            study,
            fx.FEATURE_VERSION,
        )
    return [
        rm.Sample(
            features=_array(r["features"]),
            api=r["api"],
            parameters=dict(r["parameters"]),
            rating=float(r["rating"]),
            group=r["group_id"],
        )
        for r in rows
    ]


def _array(values: list[float]) -> Any:
    import numpy as np

    return np.asarray(values, dtype=np.float32)


def _key(study: str, version: str) -> str:
    return f"reward-models/{study}/{version}.pt"


async def train(
    resources: Resources, study: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Fit a new version on every observation with features and make it current."""
    pool = await resources.pool()
    async with resources.reward_lock:
        samples = await _samples(pool, study)
        config = rm.TrainConfig(
            members=resources.settings.reward_members, epochs=resources.settings.reward_epochs
        )
        try:
            model = await asyncio.to_thread(
                rm.train, samples, resources.search_space, config, progress
            )
        except ValueError as exc:
            raise InvalidInput(
                f"cannot train the reward model yet: {exc}",
                code="not_enough_reward_data",
                details={"samples_with_features": len(samples)},
            ) from exc
        objects = await resources.store()
        key = _key(study, model.version)
        await objects.put(
            resources.settings.reward_model_bucket,
            key,
            await asyncio.to_thread(model.to_bytes),
            "application/octet-stream",
        )
        metrics = dataclasses.asdict(model.metrics)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE ml.reward_models SET is_current = false WHERE study = $1 AND is_current",
                study,
            )
            await conn.execute(
                """
                INSERT INTO ml.reward_models
                    (study, version, object_key, n_samples, metrics, is_current)
                VALUES ($1, $2, $3, $4, $5, true)
                ON CONFLICT (study, version) DO UPDATE SET is_current = true, trained_at = now()
                """,
                study,
                model.version,
                key,
                len(samples),
                metrics,
            )
        resources.reward_cache[study] = (model.version, model)
    log.info("reward model trained", extra={"study": study, "version": model.version, **metrics})
    return {"study": study, "version": model.version, "n_samples": len(samples), **metrics}


async def _current(resources: Resources, study: str) -> rm.RewardModel:
    pool = await resources.pool()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT version, object_key FROM ml.reward_models WHERE study = $1 AND is_current",
            study,
        )
    if row is None:
        raise NotFound(
            "no reward model trained for this study yet (POST /ml/reward/train)",
            code="reward_model_not_trained",
        )
    cached = resources.reward_cache.get(study)
    if cached and cached[0] == row["version"]:
        model: rm.RewardModel = cached[1]
        return model
    objects = await resources.store()
    data = await objects.get(resources.settings.reward_model_bucket, row["object_key"])
    model = await asyncio.to_thread(rm.RewardModel.from_bytes, data)
    resources.reward_cache[study] = (model.version, model)
    return model


def _candidate(raw: Any, index: int) -> tuple[str, str, dict[str, Any], Item]:
    """A candidate's id, API, parameters and (decoded from base64) images."""
    if not isinstance(raw, dict):
        raise InvalidInput("each candidate must be an object", code="invalid_candidate")
    where = {"index": index}
    try:
        image = base64.b64decode(str(raw["image_b64"]), validate=True)
        original = (
            base64.b64decode(str(raw["original_b64"]), validate=True)
            if raw.get("original_b64")
            else None
        )
        return (
            str(raw.get("id", index)),
            str(raw["api"]),
            dict(raw["parameters"]),
            (image, original),
        )
    except KeyError as exc:
        raise InvalidInput(
            f"candidate is missing {exc}", code="invalid_candidate", details=where
        ) from exc
    except binascii.Error as exc:
        raise InvalidInput("image_b64 must be base64", code="invalid_image", details=where) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"candidate parameters must be an object: {exc}",
            code="invalid_candidate",
            details=where,
        ) from exc


async def score(resources: Resources, study: str, candidates: list[Any]) -> dict[str, Any]:
    if not 1 <= len(candidates) <= 50:
        raise InvalidInput("send 1 to 50 candidates", code="invalid_candidates")
    model = await _current(resources, study)
    parsed = [_candidate(c, i) for i, c in enumerate(candidates)]
    vectors = await resources.images.features([item for *_, item in parsed])
    scored: list[rm.Candidate] = []
    for index, ((_, api, parameters, _), vector) in enumerate(zip(parsed, vectors, strict=True)):
        if isinstance(vector, Failure):
            raise vector.error({"index": index})
        scored.append(rm.Candidate(features=vector, api=api, parameters=parameters))
    try:
        predictions = await asyncio.to_thread(model.predict, scored)
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_candidate") from exc
    return {
        "study": study,
        "version": model.version,
        "scores": [
            {
                "id": cid,
                "predicted_rating": round(p.rating, 3),
                "uncertainty": round(p.uncertainty, 3),
            }
            for (cid, *_), p in zip(parsed, predictions, strict=True)
        ],
    }


async def status(resources: Resources, study: str) -> dict[str, Any]:
    pool = await resources.pool()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT version, n_samples, metrics, trained_at FROM ml.reward_models"
            " WHERE study = $1 AND is_current",
            study,
        )
        with_features = await features_repo.count_features(conn, study, fx.FEATURE_VERSION)
    return {
        "study": study,
        "trained": row is not None,
        "version": row["version"] if row else None,
        "trained_at": row["trained_at"].isoformat() if row else None,
        "samples": row["n_samples"] if row else 0,
        "samples_with_features": int(with_features),
        "pairwise_accuracy": row["metrics"].get("pairwise_accuracy") if row else None,
        "mae": row["metrics"].get("mae") if row else None,
        "metrics": dict(row["metrics"]) if row else None,
        "feature_version": fx.FEATURE_VERSION,
    }
