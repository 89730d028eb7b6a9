"""The ML service's routes (``../shared/API.md``, "ML service")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ml_service import __version__
from ml_service.auth import require_service_token
from ml_service.resources import Resources
from shared.errors import DatabaseUnavailable


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def health(request: Request) -> Response:
    resources = _resources(request)
    database = "ok"
    try:
        pool = await resources.pool()
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
    except (DatabaseUnavailable, OSError) as exc:
        database = f"unreachable: {exc}"
    return JSONResponse(
        {
            "status": "ok" if database == "ok" else "degraded",
            "service": "latina-ml",
            "version": __version__,
            "database": database,
            "apis": resources.search_space.apis,
        },
        status_code=200 if database == "ok" else 503,
    )


async def search_space(request: Request) -> Response:
    resources = _resources(request)
    require_service_token(request, resources.settings.ml_service_token)
    return JSONResponse({"search_space": resources.search_space.to_json()})


ROUTES: list[BaseRoute] = [
    Route("/ml/health", health, methods=["GET"]),
    Route("/ml/search_space", search_space, methods=["GET"]),
]
