"""Where GP fits and acquisitions run, apart from serving: worker processes or inline.

Serving (health, reads, the database) stays on the event loop; GP work goes through one bounded
queue to ``workers`` slots:

- ``processes``: a pool of worker processes, one torch thread each, each with its own
  optimizer (its own fitted-model cache; botorch and gpytorch keep settings and RNG state per
  process, so processes cannot disturb each other). The event loop never runs GP code, and the
  workers run at a lower CPU priority (``shared.priority``): when the cores are short, serving
  (both services' event loops, PostgreSQL) goes first and GP work takes what is left.
- ``inline``: one slot running in a thread of this process (Lambda: one request per container,
  so there is nothing to share a pool with and no process start-up to pay).

Work waits in the queue until a slot is free. A caller that goes away while its work waits
(the request was cancelled: the client disconnected or gave up) takes the work out of the
queue; work whose deadline passes while it waits is dropped when it reaches a slot. Work that
already runs finishes (a process cannot be interrupted mid-fit) and its result is kept by the
caller's flow only if someone still waits for it. When the queue is full, ``Busy`` is raised at
once: the route answers ``503`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from ml_service.errors import Busy, DeadlineExceeded
from ml_service.optimizer.facade import BayesianOptimizer, Best, Proposal
from ml_service.optimizer.gp import AcquisitionConfig
from ml_service.processes import background_worker, shut_down, spawn_pool
from shared.search_space import load_search_space

T = TypeVar("T")


@dataclass(frozen=True)
class OptimizerConfig:
    """What a worker process needs to build the same optimizer as the service's."""

    search_space_file: Path | None
    n_initial: int
    large_study: int

    def build(self) -> BayesianOptimizer:
        return BayesianOptimizer(
            load_search_space(self.search_space_file),
            n_initial=self.n_initial,
            acquisition=AcquisitionConfig(large_study=self.large_study),
        )


# --- in a worker process: one optimizer, built once by the pool's initializer

_WORKER_OPTIMIZER: BayesianOptimizer | None = None


def _start_worker(config: OptimizerConfig) -> None:
    global _WORKER_OPTIMIZER
    torch.set_num_threads(1)
    background_worker()
    _WORKER_OPTIMIZER = config.build()


def _worker_optimizer() -> BayesianOptimizer:
    assert _WORKER_OPTIMIZER is not None, "GP worker process not initialised"
    return _WORKER_OPTIMIZER


def _ready() -> int:
    _worker_optimizer()
    return os.getpid()


def call_in_worker(method: str, *args: Any) -> Any:
    """``method`` of this worker process's optimizer (what a pool job runs)."""
    return getattr(_worker_optimizer(), method)(*args)


# --- in the service


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class GPWork:
    """The bounded queue in front of the GP slots (see the module docstring)."""

    def __init__(
        self,
        optimizer: BayesianOptimizer,
        config: OptimizerConfig,
        *,
        workers: int,
        queue_limit: int,
        retry_after: float = 2.0,
    ) -> None:
        self.optimizer = optimizer  # inline mode's, and the facade's non-GP helpers
        self.mode = "processes" if workers > 0 else "inline"
        self.slots = max(1, workers)
        self.queue_limit = queue_limit
        self.retry_after = retry_after
        self._config = config
        self._executor: Executor | None = None
        self._free: asyncio.Semaphore | None = None
        self.queued = 0
        self.running = 0
        self.dropped = 0
        self.refused = 0
        self.completed = 0

    def _semaphore(self) -> asyncio.Semaphore:
        if self._free is None:
            self._free = asyncio.Semaphore(self.slots)
        return self._free

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = spawn_pool(self.slots, _start_worker, (self._config,))
        return self._executor

    async def start(self) -> None:
        """Start the worker processes and wait until each has built its optimizer, so the first
        request does not pay for the imports (no-op inline)."""
        if self.mode == "processes":
            loop = asyncio.get_running_loop()
            pool = self._pool()
            await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self.slots)))

    def saturated(self) -> bool:
        """Every slot is computing: work given now waits."""
        return self.running >= self.slots

    def idle(self) -> bool:
        """A slot is free and nothing waits: work given now starts at once."""
        return self.queued == 0 and self.running < self.slots

    def state(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "workers": self.slots,
            "running": self.running,
            "queued": self.queued,
            "queue_limit": self.queue_limit,
            "dropped": self.dropped,
            "refused": self.refused,
            "completed": self.completed,
        }

    async def propose(
        self,
        study: str,
        api: str,
        observations: Sequence[tuple[dict[str, Any], int]],
        pending: Sequence[dict[str, Any]],
        sequence_index: int,
        k: int = 1,
        *,
        thompson: bool = False,
        deadline: float | None = None,
    ) -> tuple[list[Proposal], Best | None]:
        """``k`` distinct proposals computed in one slot (``deadline``: ``time.monotonic()``;
        ``thompson``: all by Thompson sampling), and the best parameters by the same fitted
        model (None when none was fitted)."""
        result: tuple[list[Proposal], Best | None] = await self._call(
            "propose_with_best",
            study,
            api,
            observations,
            pending,
            sequence_index,
            k,
            thompson,
            deadline=deadline,
        )
        return result

    async def best(
        self,
        study: str,
        api: str,
        observations: Sequence[tuple[dict[str, Any], int]],
        *,
        deadline: float | None = None,
    ) -> Best:
        found: Best = await self._call("best", study, api, observations, deadline=deadline)
        return found

    async def _call(self, method: str, *args: Any, deadline: float | None) -> Any:
        """The optimizer's ``method``: this process's inline, a worker's otherwise."""
        if self.mode == "inline":
            return await self.run(getattr(self.optimizer, method), *args, deadline=deadline)
        return await self.run(call_in_worker, method, *args, deadline=deadline)

    async def run(self, fn: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """Run ``fn(*args)`` in a slot once one is free; see the module docstring."""
        if self.queued >= self.queue_limit:
            self.refused += 1
            raise Busy(
                f"the ML service is busy: {self.queued} computations are waiting",
                retry_after=self.retry_after,
                details={"queued": self.queued, "running": self.running},
            )
        free = self._semaphore()
        self.queued += 1
        try:
            await free.acquire()  # a cancelled caller leaves the queue here
        finally:
            self.queued -= 1
        if deadline is not None and time.monotonic() >= deadline:
            free.release()
            self.dropped += 1
            raise DeadlineExceeded("the caller's deadline passed while the work was queued")
        task = asyncio.ensure_future(self._in_slot(fn, *args))
        task.add_done_callback(_consume)  # a caller gone: nobody else reads its error
        # The slot stays taken until the computation ends, even when the caller goes away.
        return await asyncio.shield(task)

    async def _in_slot(self, fn: Callable[..., T], *args: Any) -> T:
        free = self._semaphore()
        self.running += 1
        try:
            if self.mode == "inline":
                result = await asyncio.to_thread(fn, *args)
            else:
                result = await asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)
            self.completed += 1
            return result
        finally:
            self.running -= 1
            free.release()

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        await shut_down(executor)
