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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np

from ml_service.errors import InvalidInput, NotFound
from ml_service.images import features as fx
from ml_service.images.workers import Failure, ImageWork, Item
from ml_service.repositories import features as features_repo
from ml_service.repositories import reward_models as reward_models_repo
from ml_service.reward import model as rm
from shared.search_space import SearchSpace
from shared.storage import ObjectStore
from shared.wire.ml import (
    RewardScore,
    RewardScoreResponse,
    RewardStatusResponse,
    RewardTrainResponse,
)

log = logging.getLogger("latina.ml.reward")
Progress = Callable[[int, int, float], None]


@dataclass
class RewardModels:
    """This process's view of the reward models: how to train one, where their bytes go, and
    the current one per study once loaded (kept while it stays current)."""

    space: SearchSpace
    config: rm.TrainConfig
    bucket: str
    objects: Callable[[], Awaitable[ObjectStore]]  # the object store, opened on first use
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one training at a time
    loaded: dict[str, rm.RewardModel] = field(default_factory=dict)  # study -> model


async def _samples(pool: asyncpg.Pool[Any], study: str) -> list[rm.Sample]:
    async with pool.acquire() as conn:
        rows = await features_repo.labelled_features(conn, study, fx.FEATURE_VERSION)
    return [
        rm.Sample(
            features=np.asarray(r.features, dtype=np.float32),
            api=r.api,
            parameters=dict(r.parameters),
            rating=float(r.rating),
            group=r.group_id,
        )
        for r in rows
    ]


def _key(study: str, version: str) -> str:
    return f"reward-models/{study}/{version}.pt"


async def train(
    pool: asyncpg.Pool[Any], models: RewardModels, study: str, progress: Progress | None = None
) -> RewardTrainResponse:
    """Fit a new version on every observation with features and make it current."""
    async with models.lock:
        samples = await _samples(pool, study)
        try:
            model = await asyncio.to_thread(
                rm.train, samples, models.space, models.config, progress
            )
        except ValueError as exc:
            raise InvalidInput(
                f"cannot train the reward model yet: {exc}",
                code="not_enough_reward_data",
                details={"samples_with_features": len(samples)},
            ) from exc
        objects = await models.objects()
        key = _key(study, model.version)
        await objects.put(
            models.bucket,
            key,
            await asyncio.to_thread(model.to_bytes),
            "application/octet-stream",
        )
        metrics = dataclasses.asdict(model.metrics)
        async with pool.acquire() as conn, conn.transaction():
            await reward_models_repo.make_current(
                conn, study, model.version, key, len(samples), metrics
            )
        models.loaded[study] = model
    log.info("reward model trained", extra={"study": study, "version": model.version, **metrics})
    return RewardTrainResponse(
        study=study,
        version=model.version,
        n_samples=len(samples),
        n_train=model.metrics.n_train,
        n_test=model.metrics.n_test,
        pairwise_accuracy=model.metrics.pairwise_accuracy,
        mae=model.metrics.mae,
        pairs_tested=model.metrics.pairs_tested,
    )


async def _current(pool: asyncpg.Pool[Any], models: RewardModels, study: str) -> rm.RewardModel:
    async with pool.acquire() as conn:
        current = await reward_models_repo.current_version(conn, study)
    if current is None:
        raise NotFound(
            "no reward model trained for this study yet (POST /ml/reward/train)",
            code="reward_model_not_trained",
        )
    loaded = models.loaded.get(study)
    if loaded is not None and loaded.version == current.version:
        return loaded
    objects = await models.objects()
    data = await objects.get(models.bucket, current.object_key)
    model = await asyncio.to_thread(rm.RewardModel.from_bytes, data)
    models.loaded[study] = model
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


async def score(
    pool: asyncpg.Pool[Any],
    models: RewardModels,
    images: ImageWork,
    study: str,
    candidates: list[Any],
) -> RewardScoreResponse:
    """The current model's predicted rating and uncertainty for each candidate image."""
    if not 1 <= len(candidates) <= 50:
        raise InvalidInput("send 1 to 50 candidates", code="invalid_candidates")
    model = await _current(pool, models, study)
    parsed = [_candidate(c, i) for i, c in enumerate(candidates)]
    vectors = await images.features([item for *_, item in parsed])
    scored: list[rm.Candidate] = []
    for index, ((_, api, parameters, _), vector) in enumerate(zip(parsed, vectors, strict=True)):
        if isinstance(vector, Failure):
            raise vector.error({"index": index})
        scored.append(rm.Candidate(features=vector, api=api, parameters=parameters))
    try:
        predictions = await asyncio.to_thread(model.predict, scored)
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_candidate") from exc
    return RewardScoreResponse(
        study=study,
        version=model.version,
        scores=[
            RewardScore(
                id=cid,
                predicted_rating=round(p.rating, 3),
                uncertainty=round(p.uncertainty, 3),
            )
            for (cid, *_), p in zip(parsed, predictions, strict=True)
        ],
    )


async def status(pool: asyncpg.Pool[Any], study: str) -> RewardStatusResponse:
    """The current model's version and held-out quality, and how much data there is."""
    async with pool.acquire() as conn:
        current = await reward_models_repo.current_version(conn, study)
        with_features = await features_repo.count_features(conn, study, fx.FEATURE_VERSION)
    return RewardStatusResponse(
        study=study,
        trained=current is not None,
        version=current.version if current else None,
        trained_at=current.trained_at.isoformat() if current else None,
        samples=current.n_samples if current else 0,
        samples_with_features=int(with_features),
        pairwise_accuracy=current.metrics.get("pairwise_accuracy") if current else None,
        mae=current.metrics.get("mae") if current else None,
        metrics=dict(current.metrics) if current else None,
        feature_version=fx.FEATURE_VERSION,
    )
