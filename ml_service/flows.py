"""What the ML routes do: suggest, update, best, delete a study, precompute in the background."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
from typing import Any

import asyncpg
from PIL import Image

from ml_service import feature_extraction as features
from ml_service import observation_store as store
from ml_service.bayes import BayesianOptimizer, Proposal, observed_best
from ml_service.errors import Conflict, InvalidInput, NotFound
from ml_service.telemetry import record_timings
from ml_service.validation import check_api, check_observation
from shared.wire.ml import BestForApi, ObservationIn, Suggestion

log = logging.getLogger("latina.ml")


def new_suggestion_id() -> str:
    return "sug_" + secrets.token_hex(12)


class SuggestionWork:
    """Per-process coordination: one computation at a time per (study, api), background
    precomputation after each update, and the settings they need."""

    def __init__(self, optimizer: BayesianOptimizer, pending_ttl_seconds: float) -> None:
        self.optimizer = optimizer
        self.pending_ttl_seconds = pending_ttl_seconds
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: set[tuple[str, str]] = set()

    def lock(self, study: str, api: str) -> asyncio.Lock:
        return self._locks.setdefault((study, api), asyncio.Lock())

    def schedule_precompute(self, pool: asyncpg.Pool[Any], study: str, api: str) -> None:
        key = (study, api)
        task = self._tasks.get(key)
        if task and not task.done():
            self._again.add(key)
            return
        self._tasks[key] = asyncio.create_task(self._precompute_loop(pool, study, api))

    async def _precompute_loop(self, pool: asyncpg.Pool[Any], study: str, api: str) -> None:
        while True:
            self._again.discard((study, api))
            try:
                await precompute(pool, self, study, api)
            except Exception:  # background work: log, never crash the process
                log.exception("precompute failed", extra={"study": study, "api": api})
            if (study, api) not in self._again:
                return

    async def drain(self) -> None:
        """Wait for background precomputation (tests, shutdown)."""
        while any(not t.done() for t in self._tasks.values()):
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


async def _compute(
    conn: Any, work: SuggestionWork, study: str, api: str, n_obs: int, *, issued: bool
) -> Suggestion:
    observations = await store.load_observations(conn, study, api)
    pending = await store.pending_parameters(conn, study, api, work.pending_ttl_seconds)
    index = await store.next_sequence_index(conn, study, api)
    proposal: Proposal = await asyncio.to_thread(
        work.optimizer.propose, study, api, observations, pending, index
    )
    record_timings(proposal.fit_seconds, proposal.acquisition_seconds)
    suggestion = store.StoredSuggestion(
        new_suggestion_id(), api, dict(proposal.parameters), proposal.strategy, n_obs
    )
    await store.insert_suggestion(conn, study, suggestion, index, issued=issued)
    return Suggestion(
        suggestion_id=suggestion.id,
        api=api,
        strategy=proposal.strategy,
        parameters=proposal.parameters,
    )


async def suggest_one(
    pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, api: str
) -> tuple[Suggestion, bool]:
    """A suggestion for ``api``; ``True`` when it was precomputed for the current data."""
    async with work.lock(study, api), pool.acquire() as conn, conn.transaction():
        await store.ensure_study(conn, study)
        await store.lock_api(conn, study, api)
        n_obs = (await store.count_observations(conn, study)).get(api, 0)
        claimed = await store.claim_precomputed(conn, study, api, n_obs)
        if claimed is not None:
            hit = Suggestion(
                suggestion_id=claimed.id,
                api=api,
                strategy=claimed.strategy,
                parameters=claimed.parameters,
            )
            return hit, True
        return await _compute(conn, work, study, api, n_obs, issued=True), False


async def suggest_parameters(
    pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, apis: list[str]
) -> dict[str, Any]:
    for api in apis:
        check_api(work.optimizer.space, api)
    if len(set(apis)) != len(apis):
        raise InvalidInput("each api may be asked for once", code="duplicate_api")
    # Database work for the APIs overlaps; their GP work is serialised by the optimizer.
    answers = await asyncio.gather(*(suggest_one(pool, work, study, api) for api in apis))
    suggestions = [suggestion.model_dump() for suggestion, _ in answers]
    for api in apis:
        # the next request should find one ready, computed with this one as pending
        work.schedule_precompute(pool, study, api)
    async with pool.acquire() as conn:
        counts = await store.count_observations(conn, study)
    return {
        "suggestions": suggestions,
        "n_observations": {api: counts.get(api, 0) for api in work.optimizer.space.apis},
    }


async def precompute(pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, api: str) -> bool:
    """Compute and store the next suggestion for the current data unless one is ready."""
    async with work.lock(study, api), pool.acquire() as conn, conn.transaction():
        await store.ensure_study(conn, study)
        await store.lock_api(conn, study, api)
        n_obs = (await store.count_observations(conn, study)).get(api, 0)
        await store.discard_stale_precomputed(conn, study, api, n_obs)
        if await store.has_precomputed(conn, study, api, n_obs):
            return False
        await _compute(conn, work, study, api, n_obs, issued=False)
        return True


def _as_stored(obs: ObservationIn) -> store.Observation:
    return store.Observation(
        observation_id=obs.observation_id,
        suggestion_id=obs.suggestion_id,
        api=obs.api,
        parameters=dict(obs.parameters),
        rating=obs.rating,
        prompt_version=obs.prompt_version,
    )


def _same(a: store.Observation, b: store.Observation) -> bool:
    return (
        a.api == b.api
        and a.rating == b.rating
        and {k: float(v) for k, v in a.parameters.items()}
        == {k: float(v) for k, v in b.parameters.items()}
    )


def _image_features(observations: list[ObservationIn]) -> dict[str, Any]:
    """Features of the observations that carry their image (CPU work: run in a thread)."""
    out: dict[str, Any] = {}
    for obs in observations:
        if obs.image_b64 is None:
            continue
        where = {"observation_id": obs.observation_id}
        try:
            image = base64.b64decode(obs.image_b64, validate=True)
            original = (
                base64.b64decode(obs.original_b64, validate=True) if obs.original_b64 else None
            )
        except binascii.Error as exc:
            raise InvalidInput(
                "image_b64 and original_b64 must be base64", code="invalid_image", details=where
            ) from exc
        try:
            out[obs.observation_id] = features.extract_bytes(image, original)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InvalidInput(
                f"the image could not be read: {exc}", code="invalid_image", details=where
            ) from exc
    return out


async def update_model(
    pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, observations: list[ObservationIn]
) -> dict[str, Any]:
    """Store the observations (and the features of any images they carry) durably, in one
    transaction, before answering."""
    space = work.optimizer.space
    for obs in observations:
        check_observation(space, obs)
    ids = [o.observation_id for o in observations]
    if len(set(ids)) != len(ids):
        raise InvalidInput("observation_id repeats within the batch", code="duplicate_observation")
    incoming = {o.observation_id: _as_stored(o) for o in observations}
    vectors = await asyncio.to_thread(_image_features, observations)
    async with pool.acquire() as conn, conn.transaction():
        await store.ensure_study(conn, study)
        existing = await store.insert_observations(conn, study, list(incoming.values()))
        for obs in observations:
            if obs.observation_id in vectors:
                await store.insert_features(
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
        counts = await store.count_observations(conn, study)
        best = {}
        for api in space.apis:
            rows = await store.load_observations(conn, study, api)
            found = observed_best(rows) if rows else None
            best[api] = BestForApi(
                parameters=found.parameters if found else None,
                predicted_rating=found.predicted_rating if found else None,
                uncertainty=None,
                n_observations=len(rows),
                source="observed" if found else "none",
            ).model_dump()
    for api in {o.api for o in observations}:
        work.schedule_precompute(pool, study, api)
    return {
        "updated": True,
        "n_observations": {api: counts.get(api, 0) for api in space.apis},
        "best": best,
    }


async def best_parameters(
    pool: asyncpg.Pool[Any], work: SuggestionWork, study: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with pool.acquire() as conn:
        loaded = {
            api: await store.load_observations(conn, study, api)
            for api in work.optimizer.space.apis
        }
    for api, rows in loaded.items():
        found = await asyncio.to_thread(work.optimizer.best, study, api, rows)
        out[api] = BestForApi(
            parameters=found.parameters,
            predicted_rating=found.predicted_rating,
            uncertainty=found.uncertainty,
            n_observations=len(rows),
            source=found.source,
            importance=found.importance,
        ).model_dump()
    return {"study": study, "best": out}


async def delete_study(
    pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, *, force: bool
) -> dict[str, Any]:
    if study == "default" and not force:
        raise Conflict(
            "the default study holds the gateway's data; add ?force=true to delete it",
            code="default_study_protected",
        )
    async with pool.acquire() as conn, conn.transaction():
        deleted = await store.delete_study(conn, study)
    if not deleted:
        raise NotFound(f"no study named {study!r}", code="study_not_found")
    work.optimizer.forget(study)
    return {"deleted": study}
