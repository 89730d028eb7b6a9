"""What the ML routes do: suggest, update, best, delete a study, precompute in the background."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from PIL import Image

from ml_service import feature_extraction as features
from ml_service import observation_store as store
from ml_service.bayes import BayesianOptimizer, Best, data_key, needs_model, observed_best
from ml_service.errors import Busy, Conflict, InvalidInput, NotFound
from ml_service.gp_work import GPWork
from ml_service.telemetry import record_timings
from ml_service.validation import check_api, check_observation
from shared.wire.ml import BestForApi, ObservationIn, Suggestion

log = logging.getLogger("latina.ml")


def new_suggestion_id() -> str:
    return "sug_" + secrets.token_hex(12)


MAX_BATCH = 16  # suggestions one computation makes for callers waiting on the same API


@dataclass(frozen=True)
class BestSnapshot:
    """What the last fit for (study, api) said was best, and for which data."""

    key: tuple[int, str]  # data_key of the observations fitted
    best: Best
    at: float  # time.monotonic()

    @property
    def fitted_observations(self) -> int:
        return self.key[0]


class SuggestionWork:
    """Per-process coordination: one computation at a time per (study, api) — made for every
    caller waiting on it at once — background precomputation after each update, the GP queue
    they run through, and their settings."""

    def __init__(
        self, optimizer: BayesianOptimizer, gp: GPWork, pending_ttl_seconds: float
    ) -> None:
        self.optimizer = optimizer
        self.gp = gp
        self.pending_ttl_seconds = pending_ttl_seconds
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._waiting: dict[tuple[str, str], int] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: set[tuple[str, str]] = set()
        self._best: dict[tuple[str, str], BestSnapshot] = {}
        self._refresh: dict[tuple[str, str], asyncio.Task[None]] = {}

    def remember_best(
        self, study: str, api: str, observations: list[tuple[dict[str, Any], int]], best: Best
    ) -> None:
        key = (study, api)
        known = self._best.get(key)
        if known is None or known.fitted_observations <= len(observations):
            self._best[key] = BestSnapshot(data_key(observations), best, time.monotonic())

    def last_best(self, study: str, api: str) -> BestSnapshot | None:
        return self._best.get((study, api))

    def forget(self, study: str) -> None:
        for key in [k for k in self._best if k[0] == study]:
            del self._best[key]

    def schedule_best_refresh(
        self, study: str, api: str, observations: list[tuple[dict[str, Any], int]]
    ) -> None:
        """Refit for ``best`` in the background (one at a time per API), when the GP is free."""
        key = (study, api)
        running = self._refresh.get(key)
        if running is not None and not running.done():
            return

        async def refresh() -> None:
            try:
                found = await self.gp.best(study, api, observations)
            except Busy:
                return
            except Exception:  # background work: log, never crash the process
                log.exception("best refresh failed", extra={"study": study, "api": api})
                return
            self.remember_best(study, api, observations, found)

        self._refresh[key] = asyncio.create_task(refresh())

    @asynccontextmanager
    async def turn(self, study: str, api: str) -> AsyncIterator[None]:
        """This process's turn to suggest for (study, api); ``waiting`` counts who queues."""
        key = (study, api)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            await lock.acquire()
        finally:
            self._waiting[key] -= 1
        try:
            yield
        finally:
            lock.release()

    def waiting(self, study: str, api: str) -> int:
        return self._waiting.get((study, api), 0)

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
            except Busy:
                log.info("precompute skipped: GP queue full", extra={"study": study, "api": api})
            except Exception:  # background work: log, never crash the process
                log.exception("precompute failed", extra={"study": study, "api": api})
            if (study, api) not in self._again:
                return

    async def drain(self) -> None:
        """Wait for background precomputation (tests, shutdown)."""
        while any(not t.done() for t in self._tasks.values()):
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *self._refresh.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _compute_and_store(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    api: str,
    n_obs: int,
    *,
    issue_first: bool,
    deadline: float | None = None,
) -> Suggestion:
    """Compute suggestions for this caller and everyone waiting behind it, holding no database
    connection while the GP works; store the first (issued when ``issue_first``) and the rest
    as precomputed for the waiting callers to claim. Each stays apart from the suggestions
    pending when it is stored (another process may have issued some meanwhile)."""
    async with pool.acquire() as conn:
        observations = await store.load_observations(conn, study, api)
        pending = await store.pending_parameters(conn, study, api, work.pending_ttl_seconds)
        index = await store.next_sequence_index(conn, study, api)
    k = min(MAX_BATCH, 1 + work.waiting(study, api))
    proposals, best = await work.gp.propose(
        study, api, observations, pending, index, k, deadline=deadline
    )
    if best is not None:
        work.remember_best(study, api, observations, best)
    async with pool.acquire() as conn, conn.transaction():
        await store.lock_api(conn, study, api)
        taken = await store.pending_parameters(conn, study, api, work.pending_ttl_seconds)
        index = await store.next_sequence_index(conn, study, api)
        stored: list[store.StoredSuggestion] = []
        for i, proposal in enumerate(proposals):
            record_timings(proposal.fit_seconds, proposal.acquisition_seconds)
            parameters, strategy = dict(proposal.parameters), proposal.strategy
            while work.optimizer.repeats(api, parameters, taken):
                parameters, strategy = work.optimizer.explore(study, api, index), "explore"
                index += 1
            suggestion = store.StoredSuggestion(
                new_suggestion_id(), api, parameters, strategy, n_obs
            )
            await store.insert_suggestion(
                conn, study, suggestion, index, issued=issue_first and i == 0
            )
            stored.append(suggestion)
            taken.append(parameters)
            index += 1
    first = stored[0]
    return Suggestion(
        suggestion_id=first.id, api=api, strategy=first.strategy, parameters=first.parameters
    )


async def suggest_one(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    api: str,
    deadline: float | None = None,
) -> tuple[Suggestion, bool]:
    """A suggestion for ``api``; ``True`` when it was precomputed for the current data."""
    async with work.turn(study, api):
        async with pool.acquire() as conn, conn.transaction():
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
        computed = await _compute_and_store(
            pool, work, study, api, n_obs, issue_first=True, deadline=deadline
        )
        return computed, False


async def suggest_parameters(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    apis: list[str],
    *,
    deadline: float | None = None,
) -> dict[str, Any]:
    """One suggestion per API. ``deadline`` (``time.monotonic()``): the caller's; GP work still
    queued when it passes is dropped (``DeadlineExceeded``)."""
    for api in apis:
        check_api(work.optimizer.space, api)
    if len(set(apis)) != len(apis):
        raise InvalidInput("each api may be asked for once", code="duplicate_api")
    # Database work for the APIs overlaps; their GP work goes through the GP queue.
    answers = await asyncio.gather(*(suggest_one(pool, work, study, api, deadline) for api in apis))
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
    async with work.turn(study, api):
        async with pool.acquire() as conn, conn.transaction():
            await store.ensure_study(conn, study)
            await store.lock_api(conn, study, api)
            n_obs = (await store.count_observations(conn, study)).get(api, 0)
            await store.discard_stale_precomputed(conn, study, api, n_obs)
            if await store.has_precomputed(conn, study, api, n_obs):
                return False
        await _compute_and_store(pool, work, study, api, n_obs, issue_first=False)
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
    pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, *, fresh: bool = False
) -> dict[str, Any]:
    """Per API, the best parameters tried by the model's posterior mean. Never waits behind GP
    work: the last fit's answer when it is for today's data; a fit now when the GP is idle;
    else the last fit's answer however old (or the observed best), a refit in the background,
    and ``fitted_observations`` / ``model_age_seconds`` say what it is based on. ``fresh``:
    wait for a fit on today's data instead, through the GP queue (``Busy`` when it is full)."""
    out: dict[str, Any] = {}
    async with pool.acquire() as conn:
        loaded = {
            api: await store.load_observations(conn, study, api)
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
    work.forget(study)
    return {"deleted": study}
