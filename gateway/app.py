"""The gateway's composition root: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Router

from gateway import jobs
from gateway.adapters.ml_client import HttpMLClient
from gateway.auth import TokenBackend, on_auth_error
from gateway.errors import STATUS_TABLE
from gateway.evolution import rounds
from gateway.providers.base import ImageProvider
from gateway.providers.selection import build_providers
from gateway.repositories import prompts
from gateway.routes import ROUTES
from gateway.state import GatewayState, Upstreams
from gateway.web.security import SecurityHeadersMiddleware
from gateway.web.session import COOKIE
from shared.db.pool import connect, create_pool
from shared.db.setup import database_dsn
from shared.observability import (
    HttpMetrics,
    RequestContextMiddleware,
    configure_logging,
    forward_request_id,
)
from shared.search_space import load_search_space
from shared.settings import Settings, get_settings
from shared.storage import ObjectStore
from shared.storage.factory import open_object_store
from shared.web_errors import exception_handlers

log = logging.getLogger("latina.gateway")


def _client(
    base_url: str, timeout: float, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
        headers=headers or {},
        event_hooks={"request": [forward_request_id]},
        follow_redirects=False,
    )


def _upstreams(settings: Settings) -> Upstreams:
    leonardo_headers = (
        {"Authorization": f"Bearer {settings.leonardo_api_key}"}
        if settings.leonardo_api_key
        else {}
    )
    replicate_headers = (
        {"Authorization": f"Bearer {settings.replicate_api_token}"}
        if settings.replicate_api_token
        else {}
    )
    return Upstreams(
        ml=_client(
            settings.ml_service_url,
            settings.ml_service_timeout,
            {"Authorization": f"Bearer {settings.ml_service_token}"},
        ),
        leonardo=_client(settings.leonardo_base_url, settings.leonardo_timeout, leonardo_headers),
        replicate=_client(
            settings.replicate_base_url, settings.replicate_timeout, replicate_headers
        ),
        # Rendered images come from presigned URLs on other hosts: no credentials attached.
        downloads=_client("", max(settings.leonardo_timeout, settings.replicate_timeout)),
    )


async def _seed_prompts(pool: asyncpg.Pool[Any]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        imported = await prompts.import_seed_versions(conn)
    if imported:
        log.info("imported prompt versions", extra={"versions": imported})


async def _worker(
    dsn: str, ml: HttpMLClient, evolution: rounds.EvolutionDeps, stack: AsyncExitStack
) -> None:
    """The job worker inside this process (local mode), stopped with the app."""
    conn = await connect(dsn)
    manager = jobs.build_worker(conn, ml, evolution)
    task = asyncio.create_task(manager.run(dequeue_timeout=timedelta(seconds=5)))

    async def stop() -> None:
        manager.shutdown.set()
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            task.cancel()
        await conn.close()

    stack.push_async_callback(stop)


def create_app(
    settings: Settings,
    *,
    store: ObjectStore | None = None,
    providers: dict[str, ImageProvider] | None = None,
) -> Starlette:
    """Build the gateway. ``store`` and ``providers`` replace those from settings (tests)."""
    metrics = HttpMetrics("latina_gateway")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, GatewayState]]:
        dsn = await database_dsn(settings)
        async with AsyncExitStack() as stack:
            pool = await create_pool(
                dsn,
                min_size=settings.database_pool_min,
                max_size=settings.database_pool_max,
                command_timeout=settings.database_command_timeout,
            )
            stack.push_async_callback(pool.close)
            object_store = store
            if object_store is None:
                object_store = await stack.enter_async_context(open_object_store(settings))
            upstreams = _upstreams(settings)
            for client in (
                upstreams.ml,
                upstreams.leonardo,
                upstreams.replicate,
                upstreams.downloads,
            ):
                stack.push_async_callback(client.aclose)
            await _seed_prompts(pool)
            evolution = rounds.build_deps(settings, pool, object_store)
            stack.push_async_callback(evolution.aclose)
            async with pool.acquire() as conn:
                await evolution.exporter.sync(conn)
            ml = HttpMLClient(upstreams.ml, study=settings.ml_study)
            if settings.gateway_worker:
                await _worker(dsn, ml, evolution, stack)
            log.info(
                "gateway ready",
                extra={"env": settings.latina_env, "object_store": settings.object_store},
            )
            yield {
                "gateway": GatewayState(
                    settings=settings,
                    pool=pool,
                    store=object_store,
                    upstreams=upstreams,
                    metrics=metrics,
                    providers=providers or build_providers(settings, upstreams),
                    search_space=load_search_space(settings.search_space_file),
                    exporter=evolution.exporter,
                )
            }

    router = Router(routes=ROUTES)
    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers=dict(exception_handlers(STATUS_TABLE)),
        middleware=[
            Middleware(RequestContextMiddleware, metrics=metrics, router=router),
            Middleware(SecurityHeadersMiddleware, settings=settings),
            Middleware(
                SessionMiddleware,
                secret_key=settings.latina_secret_key,
                session_cookie=COOKIE,
                max_age=settings.session_max_age_seconds,
                same_site="lax",
                https_only=settings.latina_env == "production",
            ),
            Middleware(AuthenticationMiddleware, backend=TokenBackend(), on_error=on_auth_error),
        ],
    )


def app_from_environment() -> Starlette:
    """Uvicorn factory (``--factory``): settings from the environment, logging configured."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
