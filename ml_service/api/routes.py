"""The ML service's routes (``../shared/API.md``, "ML service"): parse, call one flow, answer."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ml_service import __version__
from ml_service.api.auth import require_service_token
from ml_service.errors import InvalidInput, MalformedRequest
from ml_service.optimizer import flows
from ml_service.resources import Resources
from ml_service.reward import flows as reward
from ml_service.store import observations as store
from shared.errors import DatabaseUnavailable
from shared.wire.ml import DEADLINE_HEADER, SuggestRequest, UpdateRequest

_STUDY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CLIENT_GONE = 499  # never seen by anyone: the client has disconnected
T = TypeVar("T")


def _deadline(request: Request) -> float | None:
    """``X-Request-Deadline``: seconds the caller will still wait, as a ``time.monotonic()``."""
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 3600:
        raise InvalidInput(
            f"{DEADLINE_HEADER} must be the seconds the caller still waits (0-3600]",
            code="invalid_deadline",
            details={"header": DEADLINE_HEADER, "value": raw},
        )
    return time.monotonic() + seconds


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None when the client disconnects first: then ``work`` is
    cancelled, so what it still had queued leaves the queue."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and task.cancelled():
            return None
        raise
    finally:
        watcher.cancel()


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


def _authorized(request: Request) -> Resources:
    resources = _resources(request)
    require_service_token(request, resources.settings.ml_service_token)
    return resources


def _study(value: str | None) -> str:
    study = value or "default"
    if not _STUDY_RE.match(study):
        raise InvalidInput(
            "study must be 1-64 letters, digits, '-' or '_'",
            code="invalid_study",
            details={"study": study},
        )
    return study


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedRequest("request body must be a JSON object")
    return body


async def health(request: Request) -> Response:
    resources = _resources(request)
    database, counts = "ok", 0
    try:
        pool = await resources.pool()
        async with pool.acquire() as conn:
            counts = await store.total_observations(conn)
    except (DatabaseUnavailable, OSError) as exc:
        database = f"unreachable: {exc}"
    return JSONResponse(
        {
            "status": "ok" if database == "ok" else "degraded",
            "service": "latina-ml",
            "version": __version__,
            "database": database,
            "apis": resources.search_space.apis,
            "n_observations": counts,
            "models": resources.optimizer.model_state(),
            "gp": resources.gp.state(),
        },
        status_code=200 if database == "ok" else 503,
    )


async def search_space(request: Request) -> Response:
    resources = _authorized(request)
    return JSONResponse({"search_space": resources.search_space.to_json()})


async def suggest_parameters(request: Request) -> Response:
    resources = _authorized(request)
    if request.method == "POST":
        body = await _json_body(request)
        body.setdefault("apis", resources.search_space.apis)
        parsed = SuggestRequest.model_validate(body)
    else:
        apis = request.query_params.get("apis")
        parsed = SuggestRequest.model_validate(
            {
                "apis": [a.strip() for a in apis.split(",") if a.strip()]
                if apis
                else resources.search_space.apis,
                "study": _study(request.query_params.get("study")),
                "count": request.query_params.get("count", 1),
            }
        )
    deadline = _deadline(request)
    pool = await resources.pool()
    result = await _unless_disconnected(
        request,
        flows.suggest_parameters(
            pool,
            resources.work,
            parsed.study,
            parsed.apis,
            count=parsed.counts(),
            deadline=deadline,
        ),
    )
    if result is None:
        return Response(status_code=CLIENT_GONE)
    return JSONResponse(result)


async def update_model(request: Request) -> Response:
    resources = _authorized(request)
    parsed = UpdateRequest.model_validate(await _json_body(request))
    result = await flows.update_model(
        await resources.pool(), resources.work, resources.images, parsed.study, parsed.observations
    )
    return JSONResponse(result)


async def best(request: Request) -> Response:
    resources = _authorized(request)
    study = _study(request.query_params.get("study"))
    fresh = request.query_params.get("fresh", "").lower() in ("1", "true", "yes")
    result = await flows.best_parameters(await resources.pool(), resources.work, study, fresh=fresh)
    return JSONResponse(result)


async def delete_study(request: Request) -> Response:
    resources = _authorized(request)
    study = _study(request.path_params["study"])
    force = request.query_params.get("force", "").lower() in ("1", "true", "yes")
    result = await flows.delete_study(await resources.pool(), resources.work, study, force=force)
    return JSONResponse(result)


async def reward_train(request: Request) -> Response:
    resources = _authorized(request)
    body = await _json_body(request)
    study = _study(body.get("study") or request.query_params.get("study"))
    return JSONResponse(await reward.train(resources, study))


async def reward_score(request: Request) -> Response:
    resources = _authorized(request)
    body = await _json_body(request)
    study = _study(body.get("study") or request.query_params.get("study"))
    candidates = body.get("candidates")
    if not isinstance(candidates, list):
        raise InvalidInput("'candidates' must be a list", code="invalid_candidates")
    return JSONResponse(await reward.score(resources, study, candidates))


async def reward_status(request: Request) -> Response:
    resources = _authorized(request)
    study = _study(request.query_params.get("study"))
    return JSONResponse(await reward.status(resources, study))


ROUTES: list[BaseRoute] = [
    Route("/ml/health", health, methods=["GET"]),
    Route("/ml/search_space", search_space, methods=["GET"]),
    Route("/ml/suggest_parameters", suggest_parameters, methods=["GET", "POST"]),
    Route("/ml/update_model", update_model, methods=["POST"]),
    Route("/ml/best", best, methods=["GET"]),
    Route("/ml/studies/{study}", delete_study, methods=["DELETE"]),
    Route("/ml/reward/train", reward_train, methods=["POST"]),
    Route("/ml/reward/score", reward_score, methods=["POST"]),
    Route("/ml/reward/status", reward_status, methods=["GET"]),
]
