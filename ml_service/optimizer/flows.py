"""What the ML routes do: suggest, update, best, delete a study, precompute in the background."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from ml_service.errors import Busy, Conflict, InvalidInput, NotFound
from ml_service.images import features
from ml_service.images.workers import Failure, ImageWork, Item
from ml_service.optimizer.facade import (
    BayesianOptimizer,
    Best,
    data_key,
    needs_model,
    observed_best,
)
from ml_service.optimizer.validation import check_api, check_observation
from ml_service.optimizer.workers import GPWork
from ml_service.store import observations as store
from ml_service.telemetry import record_timings
from shared.db.pool import Conn
from shared.wire.ml import MAX_SUGGESTIONS_PER_API, BestForApi, ObservationIn, Suggestion

log = logging.getLogger("latina.ml")


def new_suggestion_id() -> str:
    return "sug_" + secrets.token_hex(12)


MAX_BATCH = MAX_SUGGESTIONS_PER_API  # suggestions one computation makes for waiting callers
DEMAND_WINDOW = 60.0  # seconds of handed-out suggestions that size the reserve
TURN_POLL = 0.02  # seconds between looks at a taken turn, for a caller with some patience


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
        self,
        optimizer: BayesianOptimizer,
        gp: GPWork,
        pending_ttl_seconds: float,
        *,
        stale_observations: int = 20,
        patience: float = 0.5,
    ) -> None:
        self.optimizer = optimizer
        self.gp = gp
        self.pending_ttl_seconds = pending_ttl_seconds
        self.stale_observations = stale_observations
        self.patience = patience  # seconds a caller waits for today's before taking an older one
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._waiting: dict[tuple[str, str], int] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: set[tuple[str, str]] = set()
        self._issued: dict[tuple[str, str], deque[float]] = {}
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
        for known in (self._best, self._issued):
            for key in [k for k in known if k[0] == study]:
                del known[key]

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
    async def turn(self, study: str, api: str, *, caller: bool = True) -> AsyncIterator[None]:
        """This process's turn to suggest for (study, api); ``waiting`` counts the callers
        that queue for it (background precomputation is not a caller)."""
        key = (study, api)
        lock = self._locks.setdefault(key, asyncio.Lock())
        counted = 1 if caller else 0
        self._waiting[key] = self._waiting.get(key, 0) + counted
        try:
            await lock.acquire()
        finally:
            self._waiting[key] -= counted
        try:
            yield
        finally:
            lock.release()

    async def turn_free_within(self, study: str, api: str, seconds: float) -> bool:
        """Whether this API's turn is (or within ``seconds`` becomes) free; the wait counts as
        waiting for it."""
        key = (study, api)
        lock = self._locks.setdefault(key, asyncio.Lock())
        if not lock.locked():
            return True
        # Polled rather than wait_for(lock.acquire()): on Python 3.11 a timeout that races the
        # acquisition can leave the lock taken by nobody.
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            for _ in range(max(1, math.ceil(seconds / TURN_POLL))):
                if not lock.locked():
                    return True
                await asyncio.sleep(TURN_POLL)
            return not lock.locked()
        finally:
            self._waiting[key] -= 1

    def waiting(self, study: str, api: str) -> int:
        return self._waiting.get((study, api), 0)

    def _recent(self, study: str, api: str) -> deque[float]:
        """When this process handed out suggestions for the API in the last DEMAND_WINDOW."""
        handed = self._issued.setdefault((study, api), deque())
        while handed and handed[0] < time.monotonic() - DEMAND_WINDOW:
            handed.popleft()
        return handed

    def note_issued(self, study: str, api: str, n: int) -> None:
        self._recent(study, api).extend([time.monotonic()] * n)

    def reserve(self, study: str, api: str) -> int:
        """How many suggestions a computation leaves ready for the callers to come: as many as
        this process handed out for the API in the last ``DEMAND_WINDOW`` seconds (at least
        one, at most ``MAX_BATCH``), so a burst finds most of its answers computed."""
        return max(1, min(MAX_BATCH, len(self._recent(study, api))))

    def oldest_claimable(self, n_obs: int) -> int:
        """In a burst: the fewest observations a handed-out suggestion may have been computed
        with (never a start-design point once the model has taken over)."""
        return max(n_obs - self.stale_observations, min(n_obs, self.optimizer.n_initial))

    def crowded(self, study: str, api: str) -> bool:
        """A burst: others already wait for this API's turn, or its turn is taken while every
        GP slot is busy (a fresh computation would queue behind other work). Then a suggestion
        computed a few observations ago (``stale_observations``) is handed out rather than
        waited for; one caller at a time, with a GP slot free, gets one for today's data."""
        if self.waiting(study, api) > 0:
            return True
        lock = self._locks.get((study, api))
        return lock is not None and lock.locked() and self.gp.saturated()

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
    issue: int,
    deadline: float | None = None,
) -> list[Suggestion]:
    """Compute suggestions for this caller (``issue`` of them, handed out), for everyone
    waiting behind it and a reserve for the next callers (stored as precomputed for them to
    claim; the extra points of a batch cost little), holding no database connection while the
    GP works. Each stays apart from the suggestions pending when it is stored
    (another process may have issued some meanwhile)."""
    async with pool.acquire() as conn:
        observations = await store.load_observations(conn, study, api)
        pending = await store.pending_parameters(conn, study, api, work.pending_ttl_seconds)
        index = await store.next_sequence_index(conn, study, api)
    waiting = work.waiting(study, api)
    k = max(issue, min(MAX_BATCH, issue + waiting + work.reserve(study, api)))
    # A crowd of callers (this one and others, or several behind a precomputation), or a
    # caller whose computation must queue for a GP slot: every point by Thompson sampling, no
    # acquisition optimisation to wait for. One caller at a time, with a slot free, gets the
    # acquisition's point first.
    crowd = (1 if issue else 0) + waiting >= 2 or (
        issue > 0 and (work.gp.saturated() or work.gp.queued > 0)
    )
    proposals, best = await work.gp.propose(
        study, api, observations, pending, index, k, thompson=crowd, deadline=deadline
    )
    if best is not None:
        work.remember_best(study, api, observations, best)
    async with pool.acquire() as conn, conn.transaction():
        await store.lock_api(conn, study, api)
        taken = await store.pending_parameters(conn, study, api, work.pending_ttl_seconds)
        index = await store.next_sequence_index(conn, study, api)
        rows: list[tuple[store.StoredSuggestion, int, bool]] = []
        for i, proposal in enumerate(proposals):
            record_timings(proposal.fit_seconds, proposal.acquisition_seconds)
            parameters, strategy = dict(proposal.parameters), proposal.strategy
            while work.optimizer.repeats(api, parameters, taken):
                parameters, strategy = work.optimizer.explore(study, api, index), "explore"
                index += 1
            suggestion = store.StoredSuggestion(
                new_suggestion_id(), api, parameters, strategy, n_obs
            )
            rows.append((suggestion, index, i < issue))
            taken.append(parameters)
            index += 1
        await store.insert_suggestions(conn, study, rows)
    return [_wire(s) for s, _, _ in rows[:issue]]


def _wire(stored: store.StoredSuggestion) -> Suggestion:
    return Suggestion(
        suggestion_id=stored.id,
        api=stored.api,
        strategy=stored.strategy,
        parameters=stored.parameters,
    )


async def _lock_and_count(conn: Conn, study: str, api: str) -> int:
    """In a transaction: the study exists, (study, api) is locked across processes until
    commit, and how many observations the API has."""
    await store.ensure_study(conn, study)
    await store.lock_api(conn, study, api)
    return (await store.count_observations(conn, study)).get(api, 0)


async def _claim(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    api: str,
    count: int,
    *,
    stale_ok: bool,
) -> tuple[int, list[Suggestion]]:
    """The API's observation count, and up to ``count`` precomputed suggestions handed out:
    computed for today's data, or (``stale_ok``) for data at most ``stale_observations``
    older, freshest first. One that would repeat a pending suggestion (computed before it was
    issued) is dropped."""
    async with pool.acquire() as conn, conn.transaction():
        n_obs = await _lock_and_count(conn, study, api)
        oldest = work.oldest_claimable(n_obs) if stale_ok else n_obs
        found = await store.unissued(conn, study, api, oldest, limit=count + 4)
        if not found:
            return n_obs, []
        taken = await store.pending_parameters(conn, study, api, work.pending_ttl_seconds)
        chosen: list[store.StoredSuggestion] = []
        repeated: list[str] = []
        for candidate in found:
            if len(chosen) == count:
                break
            if work.optimizer.repeats(api, candidate.parameters, taken):
                repeated.append(candidate.id)
                continue
            chosen.append(candidate)
            taken.append(candidate.parameters)
        await store.mark_issued(conn, [c.id for c in chosen])
        await store.delete_suggestions(conn, repeated)
    return n_obs, [_wire(c) for c in chosen]


async def suggest_for(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    api: str,
    count: int = 1,
    deadline: float | None = None,
) -> list[Suggestion]:
    """``count`` distinct suggestions for ``api``: precomputed ones when there are (in a burst,
    or when the API's turn is still taken after ``patience``, without waiting for it), else
    computed in one batch with everyone waiting."""
    got: list[Suggestion] = []
    if work.crowded(study, api) or not await work.turn_free_within(study, api, work.patience):
        # a burst, or the turn still taken after ``patience``: one a few observations old
        _, got = await _claim(pool, work, study, api, count, stale_ok=True)
        if len(got) == count:
            work.note_issued(study, api, count)
            return got
    async with work.turn(study, api):
        n_obs, more = await _claim(
            pool, work, study, api, count - len(got), stale_ok=work.crowded(study, api)
        )
        got += more
        if len(got) < count:
            got += await _compute_and_store(
                pool, work, study, api, n_obs, issue=count - len(got), deadline=deadline
            )
    work.note_issued(study, api, count)
    return got


async def suggest_parameters(
    pool: asyncpg.Pool[Any],
    work: SuggestionWork,
    study: str,
    apis: list[str],
    *,
    count: dict[str, int] | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """``count[api]`` (default 1) distinct suggestions per API, grouped by API in the order of
    ``apis``. ``deadline`` (``time.monotonic()``): the caller's; GP work still queued when it
    passes is dropped (``DeadlineExceeded``)."""
    for api in apis:
        check_api(work.optimizer.space, api)
    if len(set(apis)) != len(apis):
        raise InvalidInput("each api may be asked for once", code="duplicate_api")
    counts = count or {}
    for api in counts:
        if api not in apis:
            raise InvalidInput(
                f"count names {api!r}, which is not among the apis asked for",
                code="invalid_count",
                details={"api": api},
            )
    # Database work for the APIs overlaps; their GP work goes through the GP queue.
    answers = await asyncio.gather(
        *(suggest_for(pool, work, study, api, counts.get(api, 1), deadline) for api in apis)
    )
    suggestions = [s.model_dump() for batch in answers for s in batch]
    for api in apis:
        # the next request should find one ready, computed with these as pending
        work.schedule_precompute(pool, study, api)
    async with pool.acquire() as conn:
        n = await store.count_observations(conn, study)
    return {
        "suggestions": suggestions,
        "n_observations": {api: n.get(api, 0) for api in work.optimizer.space.apis},
    }


async def precompute(pool: asyncpg.Pool[Any], work: SuggestionWork, study: str, api: str) -> bool:
    """Compute and store the next suggestion for the current data unless one is ready; drop
    precomputed ones too old to be handed out even in a burst."""
    async with work.turn(study, api, caller=False):
        async with pool.acquire() as conn, conn.transaction():
            n_obs = await _lock_and_count(conn, study, api)
            await store.discard_precomputed_before(conn, study, api, work.oldest_claimable(n_obs))
            if await store.has_precomputed(conn, study, api, n_obs):
                return False
        await _compute_and_store(pool, work, study, api, n_obs, issue=0)
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
    vectors = await _image_features(images, observations)
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
