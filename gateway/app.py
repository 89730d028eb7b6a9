"""The gateway's composition root: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import jobs
from gateway.adapters.llm import build_evolver
from gateway.adapters.ml_client import HttpMLClient
from gateway.adapters.prompt_export import PROMPTS_DIR, PromptExporter
from gateway.auth import TokenBackend, on_auth_error
from gateway.errors import STATUS_TABLE
from gateway.flows.evolution import EvolutionDeps
from gateway.flows.pictures import Pictures
from gateway.flows.prompts import export_library
from gateway.flows.unit_of_work import UnitOfWorkFactory
from gateway.providers.base import ImageProvider
from gateway.providers.selection import build_providers
from gateway.routes import ROUTES
from gateway.routes.training import MULTIPART_OVERHEAD, UPLOAD_PATHS
from gateway.state import GatewayState, Upstreams
from gateway.web.security import SecurityHeadersMiddleware
from gateway.web.session import COOKIE
from shared.aws.sigv4 import SigV4Auth
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
from shared.web_json import BodyLimit

log = logging.getLogger("latina.gateway")


KEEPALIVE_SECONDS = 3.0


def _client(
    base_url: str,
    timeout: float,
    headers: dict[str, str] | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
        # An idle connection is dropped before the server's idle timeout can close it under a
        # request being sent (uvicorn's is 5 s, httpx's default expiry too: under a burst
        # after a quiet spell, that race failed requests with an empty "unreachable").
        limits=httpx.Limits(
            max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_SECONDS
        ),
        headers=headers or {},
        auth=auth,
        event_hooks={"request": [forward_request_id]},
        follow_redirects=False,
    )


def ml_http_client(settings: Settings) -> httpx.AsyncClient:
    """The client for the ML service: bearer token, or SigV4 plus the token in its own header."""
    if settings.ml_service_auth == "iam":
        return _client(
            settings.ml_service_url,
            settings.ml_service_timeout,
            {"X-Latina-Service-Token": settings.ml_service_token},
            auth=SigV4Auth(settings.aws_region),
        )
    return _client(
        settings.ml_service_url,
        settings.ml_service_timeout,
        {"Authorization": f"Bearer {settings.ml_service_token}"},
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
        ml=ml_http_client(settings),
        leonardo=_client(settings.leonardo_base_url, settings.leonardo_timeout, leonardo_headers),
        replicate=_client(
            settings.replicate_base_url, settings.replicate_timeout, replicate_headers
        ),
        # Rendered images come from presigned URLs on other hosts: no credentials attached.
        downloads=_client("", max(settings.leonardo_timeout, settings.replicate_timeout)),
    )


def build_evolution_deps(
    settings: Settings, uows: UnitOfWorkFactory, store: ObjectStore
) -> EvolutionDeps:
    """What evolution rounds need (the web process and the worker each build one)."""
    return EvolutionDeps(
        uows=uows,
        evolver=build_evolver(settings),
        exporter=PromptExporter.from_settings(settings, store),
        ab_test_samples=settings.ab_test_samples,
        window=settings.evolution_window,
    )


async def _seed_prompts(uows: UnitOfWorkFactory) -> None:
    async with uows() as uow:
        imported = await uow.prompts.import_seed_versions(PROMPTS_DIR)
    if imported:
        log.info("imported prompt versions", extra={"versions": imported})


async def _worker(opened: Opened, stack: AsyncExitStack) -> None:
    """The job worker inside this process (local mode), stopped with the app."""
    conn = await connect(opened.dsn)
    state = opened.state
    pictures = Pictures(state.uows, state.store) if state.settings.ml_send_images else None
    manager = jobs.build_worker(conn, opened.ml, opened.evolution, pictures=pictures)
    task = asyncio.create_task(manager.run(dequeue_timeout=timedelta(seconds=5)))

    async def stop() -> None:
        manager.shutdown.set()
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            task.cancel()
        await conn.close()

    stack.push_async_callback(stop)


@dataclass(frozen=True)
class Opened:
    """What ``open_gateway`` opened: the request state and what a worker needs besides."""

    state: GatewayState
    dsn: str
    ml: HttpMLClient
    evolution: EvolutionDeps


async def open_gateway(
    settings: Settings,
    stack: AsyncExitStack,
    metrics: HttpMetrics,
    *,
    store: ObjectStore | None = None,
    providers: dict[str, ImageProvider] | None = None,
) -> Opened:
    """Open the pool, object store and upstream clients; ``stack`` closes them."""
    dsn = await database_dsn(settings)
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
    for client in (upstreams.ml, upstreams.leonardo, upstreams.replicate, upstreams.downloads):
        stack.push_async_callback(client.aclose)
    uows = UnitOfWorkFactory(pool)
    await _seed_prompts(uows)
    evolution = build_evolution_deps(settings, uows, object_store)
    stack.push_async_callback(evolution.aclose)
    async with uows.read() as uow:
        await export_library(uow, evolution.exporter)
    state = GatewayState(
        settings=settings,
        pool=pool,
        uows=uows,
        store=object_store,
        upstreams=upstreams,
        metrics=metrics,
        providers=providers or build_providers(settings, upstreams),
        search_space=load_search_space(settings.search_space_file),
        exporter=evolution.exporter,
    )
    return Opened(state, dsn, HttpMLClient(upstreams.ml, study=settings.ml_study), evolution)


class OpenOnFirstRequest:
    """ASGI middleware for Lambda, where Mangum runs with ``lifespan="off"``: the gateway's
    resources open on the first request and live as long as the container and its event loop."""

    def __init__(self, app: ASGIApp, open_state: Callable[[], Awaitable[GatewayState]]) -> None:
        self.app = app
        self._open_state = open_state
        self._state: GatewayState | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._state is None:
                async with self._lock:
                    if self._state is None:
                        self._state = await self._open_state()
            scope["state"] = {**scope.get("state", {}), "gateway": self._state}
        await self.app(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    store: ObjectStore | None = None,
    providers: dict[str, ImageProvider] | None = None,
    lazy: bool = False,
) -> Starlette:
    """Build the gateway. ``store`` and ``providers`` replace those from settings (tests).

    With ``lazy`` (the Lambda handler) nothing opens at start-up: the first request opens the
    resources and nothing closes them; otherwise the lifespan opens and closes them, and runs the
    job worker in this process when ``GATEWAY_WORKER`` says so.
    """
    metrics = HttpMetrics("latina_gateway")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, GatewayState]]:
        async with AsyncExitStack() as stack:
            opened = await open_gateway(settings, stack, metrics, store=store, providers=providers)
            if settings.gateway_worker:
                await _worker(opened, stack)
            log.info(
                "gateway ready",
                extra={"env": settings.latina_env, "object_store": settings.object_store},
            )
            yield {"gateway": opened.state}

    container_stack = AsyncExitStack()  # lazy mode: closed only when the container ends

    async def open_state() -> GatewayState:
        opened = await open_gateway(
            settings, container_stack, metrics, store=store, providers=providers
        )
        log.info("gateway resources opened", extra={"env": settings.latina_env})
        return opened.state

    first: list[Middleware] = [Middleware(OpenOnFirstRequest, open_state=open_state)]
    router = Router(routes=ROUTES)
    uploads = settings.upload_max_bytes + MULTIPART_OVERHEAD

    def body_limit(scope: Scope) -> int:
        return uploads if scope["path"] in UPLOAD_PATHS else settings.json_max_bytes

    app = Starlette(
        routes=ROUTES,
        lifespan=None if lazy else lifespan,
        exception_handlers=dict(exception_handlers(STATUS_TABLE)),
        middleware=[
            *(first if lazy else []),
            Middleware(BodyLimit, limit_for=body_limit),
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
    # Lazy mode: what the first request opened, closed when the container (or a test) ends.
    app.state.close_resources = container_stack.aclose
    return app


def app_from_environment(*, lazy: bool = False) -> Starlette:
    """Uvicorn factory (``--factory``) and the Lambda handler's app (``lazy``): settings from
    the environment, logging configured."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, lazy=lazy)
