"""What the ML service holds per process: settings, the pool, the optimizer and its work.

On Lambda, Mangum runs with ``lifespan="off"``, so nothing can be opened in a startup hook: the
pool is opened on first use and then lives as long as the container (and its event loop). Under
uvicorn the lifespan closes it at shutdown.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import torch

from ml_service.images.workers import ImageWork
from ml_service.optimizer.facade import BayesianOptimizer
from ml_service.optimizer.gp import AcquisitionConfig
from ml_service.optimizer.suggestion_work import SuggestionWork
from ml_service.optimizer.workers import GPWork, OptimizerConfig
from ml_service.processes import default_workers
from ml_service.reward.flows import RewardModels
from ml_service.reward.model import TrainConfig
from shared.db.pool import create_pool
from shared.db.setup import database_dsn
from shared.search_space import SearchSpace, load_search_space
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.storage.factory import open_object_store


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        torch.set_num_threads(settings.torch_num_threads)
        self.search_space: SearchSpace = load_search_space(settings.search_space_file)
        self.optimizer = BayesianOptimizer(
            self.search_space,
            n_initial=settings.ml_initial_samples,
            acquisition=AcquisitionConfig(large_study=settings.ml_large_study),
        )
        self.gp = GPWork(
            self.optimizer,
            OptimizerConfig(
                settings.search_space_file, settings.ml_initial_samples, settings.ml_large_study
            ),
            workers=default_workers(
                settings.ml_gp_workers, on_lambda=settings.aws_lambda_function_name is not None
            ),
            queue_limit=settings.ml_gp_queue_limit,
        )
        self.images = ImageWork(
            default_workers(
                settings.ml_image_workers,
                on_lambda=settings.aws_lambda_function_name is not None,
            )
        )
        self.work = SuggestionWork(
            self.optimizer,
            self.gp,
            settings.ml_pending_ttl_seconds,
            stale_observations=settings.ml_stale_suggestion_observations,
            patience=settings.ml_suggest_patience_seconds,
        )
        self._pool: asyncpg.Pool[Any] | None = None
        self._lock: asyncio.Lock | None = None
        self._store: ObjectStore | None = None
        self._store_stack = AsyncExitStack()
        self.reward = RewardModels(
            self.search_space,
            TrainConfig(members=settings.reward_members, epochs=settings.reward_epochs),
            settings.reward_model_bucket,
            self.store,
        )

    async def store(self) -> ObjectStore:
        """The object store holding reward models, opened on first use."""
        if self._store is None:
            store = await self._store_stack.enter_async_context(open_object_store(self.settings))
            ensure = getattr(store, "ensure_buckets", None)
            if ensure is not None and self.settings.s3_create_buckets:
                await ensure(self.settings.reward_model_bucket)
            self._store = store
        return self._store

    async def pool(self) -> asyncpg.Pool[Any]:
        if self._pool is not None:
            return self._pool
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._pool is None:
                s = self.settings
                dsn = await database_dsn(s)
                self._pool = await create_pool(
                    dsn,
                    min_size=min(1, s.database_pool_min),
                    max_size=s.database_pool_max,
                    command_timeout=s.database_command_timeout,
                )
        return self._pool

    async def close(self) -> None:
        await self.work.close()
        await self.gp.close()
        await self.images.close()
        await self._store_stack.aclose()
        self._store = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
