"""Prompt versions and A/B tests (``API.md``, "Prompt versions")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.auth import current_user
from gateway.flows import prompts as flow
from gateway.state import gateway_state
from shared.wire.gateway import response_json


async def list_versions(request: Request) -> Response:
    current_user(request)
    return JSONResponse(response_json(await flow.list_versions(gateway_state(request).uows)))


async def show_version(request: Request) -> Response:
    current_user(request)
    version = request.path_params["version"]
    return JSONResponse(
        response_json(await flow.show_version(gateway_state(request).uows, version))
    )


async def promote(request: Request) -> Response:
    user = current_user(request, "admin")
    state = gateway_state(request)
    body = await flow.promote(state.uows, state.exporter, request.path_params["version"], user)
    return JSONResponse(response_json(body))


async def list_ab_tests(request: Request) -> Response:
    current_user(request)
    return JSONResponse(response_json(await flow.list_ab_tests(gateway_state(request).uows)))
