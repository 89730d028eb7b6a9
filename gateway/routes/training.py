"""Training routes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.adapters.ml_client import HttpMLClient
from gateway.auth import current_user
from gateway.flows.status import training_status
from gateway.state import gateway_state


async def status(request: Request) -> Response:
    current_user(request)
    state = gateway_state(request)
    body = await training_status(
        state.pool,
        HttpMLClient(state.upstreams.ml),
        phase_1_target=state.settings.phase_1_target,
    )
    return JSONResponse(body)
