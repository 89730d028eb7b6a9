"""Per-process coordination of suggestion work: turns per (study, api), the callers waiting
for them, recent demand, the last fit's best, and background precomputation."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ml_service.errors import Busy
from ml_service.optimizer.facade import BayesianOptimizer, Best, data_key
from ml_service.optimizer.workers import GPWork
from shared.wire.ml import MAX_SUGGESTIONS_PER_API

log = logging.getLogger("latina.ml")

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

    def schedule_precompute(
        self, study: str, api: str, job: Callable[[], Awaitable[object]]
    ) -> None:
        """Run ``job``, the precomputation for (study, api), in the background: one at a time
        per API; asked for again while it runs, it runs once more when it is done."""
        key = (study, api)
        task = self._tasks.get(key)
        if task and not task.done():
            self._again.add(key)
            return
        self._tasks[key] = asyncio.create_task(self._precompute_loop(study, api, job))

    async def _precompute_loop(
        self, study: str, api: str, job: Callable[[], Awaitable[object]]
    ) -> None:
        while True:
            self._again.discard((study, api))
            try:
                await job()
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
