"""The ML service's routes (``../shared/API.md``, "ML service"): parse, call one flow, answer."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ml_service.api.auth import require_service_token
from ml_service.api.requests import (
    caller_deadline,
    flag,
    json_body,
    study_name,
    unless_disconnected,
)
from ml_service.errors import InvalidInput
from ml_service.optimizer import best as best_flow
from ml_service.optimizer import observations, studies, suggestions
from ml_service.optimizer.health import service_health
from ml_service.resources import Resources
from ml_service.reward import flows as reward
from shared.wire.ml import SearchSpaceResponse, SuggestRequest, UpdateRequest

CLIENT_GONE = 499  # never seen by anyone: the client has disconnected


def _json(body: BaseModel, status_code: int = 200) -> JSONResponse:
    """A wire model as the JSON body: every field, nulls included, in the model's order."""
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code)


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


def _authorized(request: Request) -> Resources:
    resources = _resources(request)
    require_service_token(request, resources.settings.ml_service_token)
    return resources


async def health(request: Request) -> Response:
    resources = _resources(request)
    result = await service_health(resources.pool, resources.work)
    return _json(result, status_code=200 if result.status == "ok" else 503)


async def search_space(request: Request) -> Response:
    resources = _authorized(request)
    space = resources.search_space.to_json()
    return _json(SearchSpaceResponse.model_validate({"search_space": space}))


async def suggest_parameters(request: Request) -> Response:
    resources = _authorized(request)
    if request.method == "POST":
        body = await json_body(request)
        body.setdefault("apis", resources.search_space.apis)
        parsed = SuggestRequest.model_validate(body)
    else:
        apis = request.query_params.get("apis")
        parsed = SuggestRequest.model_validate(
            {
                "apis": [a.strip() for a in apis.split(",") if a.strip()]
                if apis
                else resources.search_space.apis,
                "study": study_name(request.query_params.get("study")),
                "count": request.query_params.get("count", 1),
            }
        )
    deadline = caller_deadline(request)
    pool = await resources.pool()
    result = await unless_disconnected(
        request,
        suggestions.suggest_parameters(
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
    return _json(result)


async def update_model(request: Request) -> Response:
    resources = _authorized(request)
    parsed = UpdateRequest.model_validate(await json_body(request))
    result = await observations.update_model(
        await resources.pool(), resources.work, resources.images, parsed.study, parsed.observations
    )
    return _json(result)


async def best(request: Request) -> Response:
    resources = _authorized(request)
    study = study_name(request.query_params.get("study"))
    fresh = flag(request, "fresh")
    result = await best_flow.best_parameters(
        await resources.pool(), resources.work, study, fresh=fresh
    )
    return _json(result)


async def delete_study(request: Request) -> Response:
    resources = _authorized(request)
    study = study_name(request.path_params["study"])
    force = flag(request, "force")
    result = await studies.delete_study(await resources.pool(), resources.work, study, force=force)
    return _json(result)


async def reward_train(request: Request) -> Response:
    resources = _authorized(request)
    body = await json_body(request)
    study = study_name(body.get("study") or request.query_params.get("study"))
    return _json(await reward.train(await resources.pool(), resources.reward, study))


async def reward_score(request: Request) -> Response:
    resources = _authorized(request)
    body = await json_body(request)
    study = study_name(body.get("study") or request.query_params.get("study"))
    candidates = body.get("candidates")
    if not isinstance(candidates, list):
        raise InvalidInput("'candidates' must be a list", code="invalid_candidates")
    result = await reward.score(
        await resources.pool(), resources.reward, resources.images, study, candidates
    )
    return _json(result)


async def reward_status(request: Request) -> Response:
    resources = _authorized(request)
    study = study_name(request.query_params.get("study"))
    return _json(await reward.status(await resources.pool(), study))


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
